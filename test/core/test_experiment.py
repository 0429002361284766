"""The AMF-versus-baselines experiment command: a tiny real run, resumption, summary and report."""

import json

from active_finetune.commands.experiment import (
    bootstrap_ci, main, markdown_report, parse_variants, summarise)
import numpy as np
import pytest

TINY = ['--observation', 'state', '--tasks', 'reach-v3,window-open-v3', '--mix', 'reach-v3=2',
        '--budget', '2', '--demos-per-round', '1', '--pretrain-steps', '20',
        '--finetune-steps', '5', '--batch-size', '16', '--eval-episodes', '1',
        '--target-rollouts', '1', '--max-steps', '30', '--seeds', '1', '--workers', '1']


def fake_run(out, name, seed, curve, finished=True):
    rounds = [{'round': i, 'demos_used': 2 * i, 'mean_success': v,
               'success': {'reach-v3': v, 'window-open-v3': v}} for i, v in enumerate(curve)]
    (out / 'runs').mkdir(parents=True, exist_ok=True)
    (out / 'runs' / f'{name}_seed{seed}.json').write_text(json.dumps(
        {'strategy': name.split('-')[0], 'variant': {'name': name, 'strategy': name},
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
        {'name': 'amf-features+no_prior', 'strategy': 'amf', 'embedding': 'features',
         'forgetting_control': 'l2_init'}]
    with pytest.raises(ValueError, match='unknown strategy'):
        parse_variants('greedy')
    with pytest.raises(ValueError, match='unknown variant flag'):
        parse_variants('amf:fast')


def test_tiny_experiment_runs_resumes_and_refuses_a_changed_spec(tmp_path, capsys):
    out = tmp_path / 'exp'
    assert main(['--out', str(out), '--strategies', 'amf,uniform'] + TINY) == 0
    runs = {p.name: json.loads(p.read_text()) for p in (out / 'runs').glob('*.json')}
    assert sorted(runs) == ['amf_seed0.json', 'uniform_seed0.json']
    for run in runs.values():
        assert run['finished'] and [r['demos_used'] for r in run['rounds']] == [0, 1, 2]
        assert all(0.0 <= r['mean_success'] <= 1.0 for r in run['rounds'])
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
