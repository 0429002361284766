"""The AMF-versus-baselines experiment command: a tiny real run, resumption, summary and report."""

import json

from active_finetune.commands import experiment
from active_finetune.commands.experiment import (
    bootstrap_ci, main, markdown_report, paired_differences, parse_variants, picks_table,
    plot_summary, sign_flip_p_value, summarise)
import numpy as np
import pytest

TINY = ['--observation', 'state', '--tasks', 'reach-v3,window-open-v3', '--mix', 'reach-v3=2',
        '--budget', '2', '--demos-per-round', '1', '--pretrain-steps', '20',
        '--finetune-steps', '5', '--batch-size', '16', '--eval-episodes', '1',
        '--target-rollouts', '1', '--max-steps', '30', '--seeds', '1', '--workers', '1']


def fake_run(out, name, seed, curve, finished=True, chosen=None):
    rounds = [{'round': i, 'demos_used': 2 * i, 'mean_success': v,
               'success': {'reach-v3': v, 'window-open-v3': v}} for i, v in enumerate(curve)]
    for rd, tasks in zip(rounds[1:], chosen or []):
        rd['chosen'] = tasks
    (out / 'runs').mkdir(parents=True, exist_ok=True)
    strategy = name.split('-')[0]
    (out / 'runs' / f'{name}_seed{seed}.json').write_text(json.dumps(
        {'strategy': strategy, 'variant': {'name': name, 'strategy': strategy},
         'seed': seed, 'rounds': rounds, 'finished': finished}))


def test_bootstrap_interval_holds_the_mean_and_collapses_for_equal_values():
    mean, low, high = bootstrap_ci([0.2, 0.4, 0.9, 0.5])
    assert low <= mean <= high and mean == pytest.approx(0.5)
    assert low > 0.2 and high < 0.9
    assert bootstrap_ci([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3, 0.3))


def test_summary_ignores_unfinished_runs_and_computes_the_normalised_area(tmp_path):
    fake_run(tmp_path, 'amf', 0, [0.0, 0.5, 1.0])
    fake_run(tmp_path, 'amf', 1, [0.0, 1.0, 1.0])
    fake_run(tmp_path, 'uniform', 0, [0.0, 0.0, 0.5])
    fake_run(tmp_path, 'uniform', 1, [1.0, 1.0, 1.0], finished=False)
    summary = summarise(tmp_path)
    assert summary['amf']['seeds'] == 2 and summary['uniform']['seeds'] == 1
    assert summary['amf']['demos'] == [0, 2, 4]
    np.testing.assert_allclose(summary['amf']['mean'], [0.0, 0.75, 1.0])
    # Trapezoid over 0..4 demos divided by 4: (0 + 2*0.5 + 1)/4 = 0.5 and (0 + 2 + 1)/4 = 0.75.
    assert summary['amf']['auc_mean'] == pytest.approx(0.625)
    assert summary['uniform']['auc_mean'] == pytest.approx(0.125)
    assert (tmp_path / 'success_vs_demos.png').stat().st_size > 0
    assert json.loads((tmp_path / 'summary.json').read_text())['amf']['seeds'] == 2
    table = markdown_report(summary).splitlines()
    assert table[0].startswith('| strategy | seeds | 0 demos | 2 demos | 4 demos |')
    assert table[2].startswith('| amf | 2 | 0.00 | 0.75 | 1.00 | 0.625')
    assert table[3].startswith('| uniform | 1 |')


def test_variants_and_their_errors():
    assert parse_variants('amf,amf:features+no_prior') == [
        {'name': 'amf', 'strategy': 'amf'},
        {'name': 'amf-features+l2', 'strategy': 'amf', 'embedding': 'features',
         'forgetting_control': 'l2_init'}]
    with pytest.raises(ValueError, match='unknown strategy'):
        parse_variants('greedy')
    with pytest.raises(ValueError, match='unknown variant flag'):
        parse_variants('amf:fast')
    # no_prior is an alias of l2: both name the same variant, which may be given only once.
    with pytest.raises(ValueError, match='given twice'):
        parse_variants('amf:l2,amf:no_prior')


def test_l2_variants_of_any_strategy_get_normalised_names():
    assert parse_variants('uniform:l2,amf:no_prior,amf:features') == [
        {'name': 'uniform-l2', 'strategy': 'uniform', 'forgetting_control': 'l2_init'},
        {'name': 'amf-l2', 'strategy': 'amf', 'forgetting_control': 'l2_init'},
        {'name': 'amf-features', 'strategy': 'amf', 'embedding': 'features'}]
    assert parse_variants('amf:l2') == parse_variants('amf:no_prior')
    assert parse_variants('amf:l2+features')[0]['name'] == 'amf-features+l2'


def test_uncapped_variants_turn_off_the_alpha_cap_and_pair_with_uncapped_references():
    assert parse_variants('amf:uncapped,amf:features+uncapped') == [
        {'name': 'amf-uncapped', 'strategy': 'amf', 'cap_alpha_by_pretraining': False},
        {'name': 'amf-features+uncapped', 'strategy': 'amf', 'embedding': 'features',
         'cap_alpha_by_pretraining': False}]
    assert 'cap_alpha_by_pretraining' not in parse_variants('amf')[0]


def test_paired_differences_use_only_the_common_seeds():
    seeds, diffs = paired_differences({0: 0.5, 1: 0.75, 3: 0.25}, {1: 0.5, 0: 0.75, 2: 0.0})
    assert seeds == [0, 1]
    assert diffs == pytest.approx([-0.25, 0.25])
    assert paired_differences({0: 1.0}, {1: 1.0}) == ([], [])


def test_sign_flip_p_value_is_exact_for_few_seeds():
    # Of the 8 sign patterns of [1, 1, 1] only all-plus and all-minus reach |mean| = 1.
    assert sign_flip_p_value([1, 1, 1]) == pytest.approx(0.25)
    assert sign_flip_p_value([0.0, 0.0, 0.0]) == 1.0
    assert sign_flip_p_value([]) == 1.0
    # [3, -1]: |mean| over the 4 patterns is 1, 2, 2, 1; observed 1, so every pattern counts.
    assert sign_flip_p_value([3, -1]) == pytest.approx(1.0)
    # [3, 1, -1]: observed |sum| 3; the sums +-3 +-1 +-1 are 5, 3, 3, 1 and mirrored -> 6 of 8.
    assert sign_flip_p_value([3, 1, -1]) == pytest.approx(0.75)
    # [4, 1, 1]: |sum| over the patterns: 6, 4, 4, 2 and mirrors; observed 6 -> 2 of 8.
    assert sign_flip_p_value([4, 1, 1]) == pytest.approx(0.25)
    # [2, 2, -1, 1]: observed sum 4; |sum| of the 16 patterns >= 4 when both 2s share a sign and
    # the +-1s do not cancel against them: sums 2+2+s3+s4 for s3, s4 in +-1 are 6, 4, 4, 2,
    # mirrored; with the 2s opposite the sums are in {-2, 0, 2} -> 6 of 16.
    assert sign_flip_p_value([2, 2, -1, 1]) == pytest.approx(6 / 16)
    # Beyond 16 seeds random sign patterns: reproducible and near the exact answer's magnitude.
    many = [1.0] * 20
    assert sign_flip_p_value(many) == sign_flip_p_value(many)
    assert 0 < sign_flip_p_value(many) < 1e-3
    assert sign_flip_p_value([1.0, -1.0] * 10) == pytest.approx(1.0)


def test_tiny_experiment_runs_resumes_and_refuses_a_changed_spec(tmp_path, capsys):
    out = tmp_path / 'exp'
    assert main(['--out', str(out), '--strategies', 'amf,uniform'] + TINY) == 0
    runs = {p.name: json.loads(p.read_text()) for p in (out / 'runs').glob('*.json')}
    assert sorted(runs) == ['amf_seed0.json', 'uniform_seed0.json']
    for run in runs.values():
        assert run['finished'] and [r['demos_used'] for r in run['rounds']] == [0, 1, 2]
        assert all(0.0 <= r['mean_success'] <= 1.0 for r in run['rounds'])
    shas = {run['pretrained_sha256'] for run in runs.values()}
    assert len(shas) == 1 and len(shas.pop()) == 64, 'both runs start from one pretrained policy'
    amf_rounds = runs['amf_seed0.json']['rounds'][1:]
    assert all(set(r['selection']['scores'][0]) == {'reach-v3', 'window-open-v3'}
               for r in amf_rounds)
    before = {p.name: p.stat().st_mtime_ns for p in (out / 'runs').glob('*.json')}
    # A rerun skips the finished runs: nothing is rewritten.
    assert main(['--out', str(out), '--strategies', 'amf,uniform'] + TINY) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / 'runs').glob('*.json')} == before
    capsys.readouterr()
    assert main(['--out', str(out), '--report']) == 0
    report = capsys.readouterr().out
    assert '| amf | 1 |' in report and '| uniform | 1 |' in report
    with pytest.raises(SystemExit):
        main(['--out', str(out), '--strategies', 'amf'] + TINY[:-6] + ['--seeds', '1',
                                                                       '--workers', '1',
                                                                       '--max-steps', '31'])


def write_paired_experiment(out):
    """AMF and uniform on seeds 0-2 (plus an AMF-only seed 3), demos 0, 2, 4."""
    amf = {0: [0.0, 0.5, 1.0], 1: [0.0, 1.0, 1.0], 2: [0.5, 0.5, 1.0], 3: [1.0, 1.0, 1.0]}
    uniform = {0: [0.0, 0.0, 0.5], 1: [0.0, 0.5, 0.5], 2: [0.5, 0.5, 0.5]}
    amf_picks = {0: [['reach-v3', 'push-v3'], ['reach-v3']],
                 1: [['reach-v3'], ['window-open-v3']],
                 2: [['push-v3'], ['push-v3']],
                 3: [['push-v3'], ['reach-v3']]}
    for seed, curve in amf.items():
        fake_run(out, 'amf', seed, curve, chosen=amf_picks[seed])
    for seed, curve in uniform.items():
        fake_run(out, 'uniform', seed, curve, chosen=[['door-open-v3'], ['push-v3']])
    # Unfinished: neither summarised nor paired.
    fake_run(out, 'uniform', 3, [1.0, 1.0, 1.0], finished=False)


def test_summary_pairs_seeds_against_uniform_and_records_the_picks(tmp_path):
    write_paired_experiment(tmp_path)
    summary = summarise(tmp_path)
    assert set(summary) == {'amf', 'uniform', 'paired', 'picks'}
    assert summary['amf']['seeds'] == 4 and summary['uniform']['seeds'] == 3
    # Uniform against itself is skipped; only AMF - uniform remains.
    assert list(summary['paired']) == ['amf - uniform']
    pair = summary['paired']['amf - uniform']
    assert pair['a'] == 'amf' and pair['b'] == 'uniform'
    assert pair['n'] == 3 and pair['seed_ids'] == [0, 1, 2]
    # Normalised AUCs: AMF 0.5, 0.75, 0.625; uniform 0.125, 0.375, 0.5.
    auc = pair['auc']
    assert auc['diffs'] == pytest.approx([0.375, 0.375, 0.125])
    assert auc['mean_diff'] == pytest.approx(0.875 / 3)
    assert 0.125 <= auc['ci90'][0] <= auc['mean_diff'] <= auc['ci90'][1] <= 0.375
    assert auc['p_sign_flip'] == pytest.approx(0.25)  # all 3 positive: 2 of 8 sign patterns
    assert pair['verdict'] == auc['verdict'] == 'amf above uniform'
    per = {p['demos']: p for p in pair['per_demos']}
    assert sorted(per) == [0, 2, 4]
    assert per[0]['diffs'] == [0.0, 0.0, 0.0] and per[0]['p_sign_flip'] == 1.0
    assert per[0]['ci90'] == [0.0, 0.0] and per[0]['verdict'] == 'no measurable difference'
    assert per[2]['diffs'] == pytest.approx([0.5, 0.5, 0.0])
    assert per[2]['mean_diff'] == pytest.approx(1 / 3)
    assert per[2]['p_sign_flip'] == pytest.approx(0.5)
    assert per[4]['mean_diff'] == pytest.approx(0.5) and per[4]['ci90'] == pytest.approx([.5, .5])
    assert per[4]['verdict'] == 'amf above uniform'
    # Picks per round per seed; AMF seeds 1 and 3 later picked a task round 1 did not.
    picks = summary['picks']
    assert picks['amf']['runs'][1] == {'seed': 1, 'chosen': [['reach-v3'], ['window-open-v3']],
                                       'new_task_after_round1': True}
    assert [r['new_task_after_round1'] for r in picks['amf']['runs']] == [False, True, False,
                                                                          True]
    assert picks['amf']['new_task_after_round1_runs'] == 2
    assert 'new_task_after_round1_runs' not in picks['uniform']
    assert [r['seed'] for r in picks['uniform']['runs']] == [0, 1, 2]
    # summary.json holds the same (seed ids stay integers in lists).
    assert json.loads((tmp_path / 'summary.json').read_text()) == json.loads(
        json.dumps(summary))
    assert (tmp_path / 'success_vs_demos.png').stat().st_size > 0


def test_seeds_that_started_from_different_pretrained_policies_are_not_paired(tmp_path):
    write_paired_experiment(tmp_path)
    # Seed 0 of uniform was re-run on a differently pretrained policy: its round 0 differs.
    fake_run(tmp_path, 'uniform', 0, [0.5, 0.5, 0.5])
    # Seed 1: both runs record the pretrained weights' sha256, and they differ.
    for name, sha in (('amf', 'a' * 64), ('uniform', 'b' * 64)):
        path = tmp_path / 'runs' / f'{name}_seed1.json'
        run = json.loads(path.read_text())
        path.write_text(json.dumps(dict(run, pretrained_sha256=sha)))
    pair = summarise(tmp_path)['paired']['amf - uniform']
    assert pair['excluded_seeds'] == [0, 1]
    assert pair['n'] == 1 and pair['seed_ids'] == [2]
    assert [p['seed_ids'] for p in pair['per_demos']] == [[2], [2], [2]]
    # The same sha256 on both sides pairs the seed, whatever round 0 says.
    path = tmp_path / 'runs' / 'uniform_seed1.json'
    path.write_text(json.dumps(dict(json.loads(path.read_text()), pretrained_sha256='a' * 64)))
    assert summarise(tmp_path)['paired']['amf - uniform']['seed_ids'] == [1, 2]
    assert experiment.same_start({'pretrained_sha256': 'c' * 64, 'rounds': [{'success': {}}]},
                                 {'rounds': [{'success': {}}]})


def test_picks_table_has_a_row_per_seed_and_short_task_names(tmp_path):
    write_paired_experiment(tmp_path)
    summary = summarise(tmp_path)
    assert picks_table(summary, 'amf').splitlines() == [
        '| seed | round 1 | round 2 |',
        '|---|---|---|',
        '| 0 | reach, push | reach |',
        '| 1 | reach | window-open |',
        '| 2 | push | push |',
        '| 3 | push | reach |']
    assert picks_table(summary, 'round_robin') == ''


def test_report_has_the_paired_table_and_ignores_non_variant_keys(tmp_path):
    write_paired_experiment(tmp_path)
    lines = markdown_report(summarise(tmp_path)).splitlines()
    assert lines[0].startswith('| strategy | seeds | 0 demos | 2 demos | 4 demos |')
    assert [line.split(' | ')[0] for line in lines[2:4]] == ['| amf', '| uniform']
    assert lines[4] == ''
    assert lines[5] == ('| comparison | seeds | AUC diff [90% CI] | sign-flip p | verdict | '
                        '0 demos | 2 demos | 4 demos |')
    cells = [c.strip() for c in lines[7].strip('|').split('|')]
    assert cells[:2] == ['amf - uniform', '3'] and cells[2].startswith('+0.292 [')
    assert cells[3:5] == ['0.250', 'amf above uniform']
    assert cells[5] == '+0.00 [+0.00, +0.00]' and cells[6].startswith('+0.33 [')
    assert cells[7] == '+0.50 [+0.50, +0.50]'
    assert len(lines) == 8


def test_pairs_against_both_references_and_a_worse_variant(tmp_path):
    for seed in range(3):
        fake_run(tmp_path, 'uniform', seed, [0.5, 0.5, 0.5])
        fake_run(tmp_path, 'privileged_rebalancing', seed, [0.5, 0.5, 0.5 + 0.1 * seed])
        fake_run(tmp_path, 'uniform-l2', seed, [0.5, 0.25, 0.0])
    paired = summarise(tmp_path)['paired']
    # Each variant against each reference, a reference against the other only once.
    assert sorted(paired) == ['privileged_rebalancing - uniform',
                              'uniform-l2 - privileged_rebalancing', 'uniform-l2 - uniform']
    assert paired['uniform-l2 - uniform']['verdict'] == 'uniform-l2 below uniform'
    # Differences 0, 0.1, 0.2 at 4 demos: the sums +-0.1 +-0.2 reach |0.3| in 2 of 4 patterns,
    # whatever the sign of the zero -> p = 4 / 8.
    last = paired['privileged_rebalancing - uniform']['per_demos'][-1]
    assert last['demos'] == 4 and last['diffs'] == pytest.approx([0.0, 0.1, 0.2])
    assert last['p_sign_flip'] == pytest.approx(0.5)
    # Normalised AUCs 0.5 + 0.025 * seed against 0.5.
    assert paired['privileged_rebalancing - uniform']['auc']['diffs'] == pytest.approx(
        [0.0, 0.025, 0.05])


def test_plot_marks_identical_curves_and_is_written(tmp_path):
    for seed in range(2):
        fake_run(tmp_path, 'uniform', seed, [0.0, 0.5, 0.5])
        fake_run(tmp_path, 'uniform-l2', seed, [0.0, 0.5, 0.5])
        fake_run(tmp_path, 'amf', seed, [0.0, 0.5, 1.0])
    summary = summarise(tmp_path)
    labels = plot_summary(summary, tmp_path / 'again.png', 'title')
    assert len(labels) == 3
    assert labels[0].startswith('amf (AUC') and 'identical' not in labels[0]
    assert 'identical' not in labels[1]
    assert labels[2].startswith('uniform-l2 (AUC') and labels[2].endswith('(identical to uniform)')
    assert (tmp_path / 'again.png').stat().st_size > 0
    assert (tmp_path / 'success_vs_demos.png').stat().st_size > 0


def test_pretraining_and_its_recollected_demos_use_the_operator_noise(tmp_path, monkeypatch):
    from active_finetune.commands import pretrain as pretrain_module
    calls = {}

    def fake_collect(counts, sim_config, base_seed=0, noise_std=0.0, **kwargs):
        calls['collect'] = counts, sim_config, base_seed, noise_std
        return ['demo']

    def fake_pretrain(mix, tasks, observation, image_size, train_config, seed, workers,
                      noise_std=0.0, **kwargs):
        calls['pretrain'] = mix, seed, noise_std
        return 'policy', {}, {'noise_std': noise_std}

    monkeypatch.setattr(experiment, 'collect_demos', fake_collect)
    monkeypatch.setattr(pretrain_module, 'pretrain', fake_pretrain)
    monkeypatch.setattr(experiment, 'save_checkpoint', lambda *args: None)
    spec = {'mix': {'reach-v3': 3, 'push-v3': 0}, 'tasks': ['reach-v3', 'push-v3'],
            'observation': 'state', 'image_size': 64, 'max_steps': 30, 'noise_std': 0.25,
            'pretrain_steps': 1, 'pretrained': None, 'pretraining_demos_per_task': 2}
    assert experiment._pretrained_policy(tmp_path, spec, 7) == 'policy'
    assert 'collect' not in calls, 'the policy alone needs no re-collected demos'
    assert experiment._pretraining_demos(spec, 7) == ['demo']
    counts, sim_config, base_seed, noise_std = calls['collect']
    assert counts == {'reach-v3': 2} and base_seed == 7 and noise_std == 0.25
    # The same simulator settings as pretrain() (its episodes are not cut at the loop's
    # max_steps), so the re-collected demos are a prefix of the pretraining demos.
    assert sim_config == experiment.SimConfig(image_size=0)
    assert calls['pretrain'] == ({'reach-v3': 3, 'push-v3': 0}, 7, 0.25)


def test_ablations_are_paired_within_one_factor(tmp_path):
    for seed in range(3):
        fake_run(tmp_path, 'amf-l2', seed, [0.5, 0.3 + 0.01 * seed, 0.4])
        fake_run(tmp_path, 'uniform-l2', seed, [0.5, 0.4, 0.5])
        fake_run(tmp_path, 'amf', seed, [0.5, 0.7, 0.8])
    paired = summarise(tmp_path)['paired']
    assert set(paired) == {'amf-l2 - uniform-l2', 'amf - amf-l2'}
    assert paired['amf-l2 - uniform-l2']['verdict'] == 'amf-l2 below uniform-l2'
    assert paired['amf - amf-l2']['auc']['mean_diff'] > 0
