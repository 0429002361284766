"""
AMF versus baselines in simulation: strategies x seeds x budget, skewed or balanced pretraining.

Each run (strategy, seed) pretrains (cached per seed), then loops select -> demonstrate ->
fine-tune -> evaluate until the budget is spent.  Every run's results are written atomically after
every round to ``<out>/runs/<strategy>_seed<k>.json``; a restarted experiment skips finished runs
(resumable after a crash).  Finally it writes ``summary.json`` (mean and 90% bootstrap CI per
strategy and number of demos, area under the curve; paired per-seed differences against uniform
and privileged rebalancing with a sign-flip test; the tasks picked per round) and
``success_vs_demos.png``.
"""

import argparse
import hashlib
import json
import logging
import math
import multiprocessing
from pathlib import Path
import queue
import time

from active_finetune.amf.active_loop import ActiveFinetuningLoop, LoopConfig
from active_finetune.amf.targets import TargetConfig
from active_finetune.atomic_io import atomic_write_bytes
from active_finetune.commands.common import load_mix, parse_tasks, setup_cli
from active_finetune.policy.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from active_finetune.sim.metaworld_env import SimConfig
from active_finetune.sim.rollouts import collect_demos, default_workers
from active_finetune.training.bc import TrainConfig
import numpy as np
from tqdm import tqdm

_LOG = logging.getLogger('active_finetune.experiment')

STRATEGIES = ('amf', 'uniform', 'round_robin', 'least_demonstrated', 'privileged_rebalancing')


def _write_json(path, data):
    atomic_write_bytes(path, json.dumps(data, indent=1, default=float).encode())


def _pretraining_demos(spec, seed):
    """
    Re-collect the pretraining demos of this experiment for ``seed``.

    They are collected exactly as :func:`pretrain` collected them (same scenes from
    ``base_seed=seed``, same operator noise ``spec['noise_std']``, the same simulator settings),
    capped at ``spec['pretraining_demos_per_task']`` per task: a prefix of each task's pretraining
    demos.

    :param spec: experiment spec dict
    :param seed: experiment seed
    :return: list of pretraining demo episodes
    """
    mix = spec['mix']
    # pretrain() collects with the simulator defaults apart from the camera size (its episodes run
    # to SimConfig's max_steps, not the experiment's): re-collect the same way.
    pretrain_sim = SimConfig(
        image_size=spec['image_size'] if spec['observation'] == 'image' else 0)
    cap = spec.get('pretraining_demos_per_task') or max(mix.values(), default=0)
    return collect_demos({t: min(n, cap) for t, n in mix.items() if n > 0}, pretrain_sim,
                         base_seed=seed, noise_std=spec['noise_std'], workers=1, progress=False)


def _pretrained_policy(out, spec, seed):
    """
    Pretrain (or load the cached) policy of this experiment for ``seed``.

    :param out: experiment directory (the cache is ``<out>/pretrained/seed<k>``)
    :param spec: experiment spec dict
    :param seed: experiment seed
    :return: policy
    """
    from active_finetune.commands.pretrain import pretrain
    path = out / 'pretrained' / f'seed{seed}'
    noise_std = spec['noise_std']
    if spec.get('pretrained'):
        policy, _ = load_checkpoint(spec['pretrained'])
        if list(policy.config.tasks) != list(spec['tasks']) or \
                policy.config.observation != spec['observation']:
            raise ValueError(f'{spec["pretrained"]} is a {policy.config.observation} policy for '
                             f'{policy.config.tasks}, not {spec["observation"]} '
                             f'for {spec["tasks"]}')
        return policy
    if path.exists():
        try:
            policy, config = load_checkpoint(path)
        except CheckpointError as exc:
            _LOG.warning('cached pretrained policy unusable (%s); retraining', exc)
        else:
            cached_noise = config.get('provenance', {}).get('noise_std', 0.0)
            if cached_noise == noise_std:
                return policy
            _LOG.warning('cached pretrained policy %s was trained with operator noise %s, not %s; '
                         'retraining', path, cached_noise, noise_std)
        import shutil
        shutil.rmtree(path)
    policy, _, provenance = pretrain(
        spec['mix'], tuple(spec['tasks']), spec['observation'], spec['image_size'],
        TrainConfig(steps=spec['pretrain_steps'], seed=seed, forgetting_control='none'),
        seed, workers=1, noise_std=noise_std, progress=False)
    try:
        save_checkpoint(policy, path, provenance)
    except FileExistsError:
        pass
    return policy


def rounds_per_run(spec):
    """
    Count the rounds of one run: the evaluation before fine-tuning and one per demos_per_round.

    :param spec: experiment spec dict (budget, demos_per_round)
    :return: int
    """
    return 1 + math.ceil(spec['budget'] / spec['demos_per_round'])


def report_round(progress, variant, seed, round_index, spec, demos_used, mean_success=None):
    """
    Tell the main process that a run finished a round (no-op without a progress queue).

    :param progress: queue shared with the main process, or None
    :param variant: variant name
    :param seed: run seed
    :param round_index: 0 for the evaluation before fine-tuning, then 1, 2, ...
    :param spec: experiment spec dict
    :param demos_used: demos used so far
    :param mean_success: mean success after the round (None for a skipped, finished run)
    """
    if progress is not None:
        progress.put({'variant': variant, 'seed': seed, 'round': round_index,
                      'rounds': rounds_per_run(spec) - 1, 'demos_used': demos_used,
                      'budget': spec['budget'], 'mean_success': mean_success})


def follow_progress(result, progress, bar, poll_s=0.5):
    """
    Move the bar by one per round any run finishes, until the pool's result is ready.

    A run that finished in an earlier invocation reports all its rounds at once.

    :param result: AsyncResult of the pool's map
    :param progress: the queue the runs report to (:func:`report_round`)
    :param bar: tqdm bar over rounds (jobs x :func:`rounds_per_run`)
    :param poll_s: queue poll period (s)
    :return: the runs' results (re-raises a run's exception)
    """
    while True:
        try:
            item = progress.get(timeout=poll_s)
        except queue.Empty:
            if result.ready():
                break
            continue
        label = (f"{item['variant']} seed {item['seed']}: round {item['round']}/"
                 f"{item['rounds']}, demos used {item['demos_used']}/{item['budget']}")
        if item['mean_success'] is None:
            bar.update(item['rounds'] + 1)
            bar.write(f'{label} (finished earlier)')
        else:
            bar.update(1)
            bar.write(f"{label}, mean success {item['mean_success']:.2f}")
        bar.set_postfix_str(label, refresh=True)
    return result.get()


def run_one(args):
    """
    One (strategy, seed) run; writes its JSON after every round.

    :param args: (out dir, experiment spec dict, strategy variant dict, seed[, progress queue])
    :return: path of the run's JSON
    """
    out, spec, variant, seed, *rest = args
    progress = rest[0] if rest else None
    import torch
    torch.set_num_threads(1)
    path = out / 'runs' / f'{variant["name"]}_seed{seed}.json'
    if path.exists() and json.loads(path.read_text()).get('finished'):
        report_round(progress, variant['name'], seed, rounds_per_run(spec) - 1, spec,
                     spec['budget'])
        return str(path)
    policy = _pretrained_policy(out, spec, seed)
    pretrained_sha256 = weights_sha256(policy)
    pre_demos = _pretraining_demos(spec, seed)
    sim_config = SimConfig(image_size=spec['image_size'] if spec['observation'] == 'image' else 0,
                           max_steps=spec['max_steps'])
    config = LoopConfig(
        strategy=variant['strategy'], budget=spec['budget'],
        demos_per_round=spec['demos_per_round'], rho2=spec['rho2'],
        operator_noise_std=spec['noise_std'], eval_episodes=spec['eval_episodes'],
        target_rollouts_per_task=spec['target_rollouts'],
        targets=TargetConfig(embedding=variant.get('embedding', 'loss_gradient')),
        finetune=TrainConfig(steps=spec['finetune_steps'], batch_size=spec['batch_size'],
                             forgetting_control=variant.get('forgetting_control',
                                                            'adaptive_prior')),
        cap_alpha_by_pretraining=variant.get('cap_alpha_by_pretraining', True),
        seed=seed)
    loop = ActiveFinetuningLoop(policy, sim_config, config, pretraining=pre_demos,
                                pretraining_counts=spec['mix'])
    record = {'strategy': variant['strategy'], 'variant': variant, 'seed': seed, 'spec': spec,
              'pretrained_sha256': pretrained_sha256, 'rounds': [], 'finished': False}
    t0 = time.perf_counter()
    rates = loop.evaluate()
    record['rounds'].append({'round': 0, 'demos_used': 0, 'success': rates,
                             'mean_success': float(np.mean(list(rates.values())))})
    _write_json(path, record)
    report_round(progress, variant['name'], seed, 0, spec, 0, record['rounds'][0]['mean_success'])
    while not loop.done:
        info = loop.step()
        rates = loop.evaluate()
        info.update(success=rates, mean_success=float(np.mean(list(rates.values()))),
                    evaluation_reused=list(loop.reused))
        record['rounds'].append(info)
        _write_json(path, record)
        report_round(progress, variant['name'], seed, len(record['rounds']) - 1, spec,
                     info['demos_used'], info['mean_success'])
    record['finished'] = True
    record['wall_s'] = round(time.perf_counter() - t0, 1)
    _write_json(path, record)
    return str(path)


def bootstrap_ci(values, level=0.9, samples=2000, seed=0):
    """
    Bootstrap confidence interval of the mean.

    :param values: 1-d samples (one per seed)
    :param level: coverage
    :param samples: bootstrap resamples
    :param seed: RNG seed
    :return: (mean, low, high)
    """
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(samples, len(values)), replace=True).mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(values.mean()), float(lo), float(hi)


def paired_differences(values_a, values_b):
    """
    Per-seed differences A minus B over the seeds both have.

    :param values_a: dict seed -> value of A
    :param values_b: dict seed -> value of B
    :return: (sorted list of the common seeds, list of float differences in that order)
    """
    seeds = sorted(set(values_a) & set(values_b))
    return seeds, [float(values_a[s]) - float(values_b[s]) for s in seeds]


def sign_flip_p_value(diffs, max_exact=16, samples=20000, seed=0):
    """
    Two-sided paired permutation (sign-flip) test of a zero mean difference.

    Under the null hypothesis each per-seed difference is as likely to have either sign.  The
    p-value is the fraction of sign assignments whose mean is at least as far from zero as the
    observed one: all ``2 ** n`` of them for ``n <= max_exact``, else ``samples`` random ones
    (then ``(hits + 1) / (samples + 1)``, which counts the observed assignment and never gives 0).

    :param diffs: per-seed differences
    :param max_exact: largest number of differences to enumerate exactly
    :param samples: random sign assignments beyond ``max_exact``
    :param seed: RNG seed of the random assignments
    :return: p-value in (0, 1]; 1.0 for no differences
    """
    diffs = np.asarray(diffs, dtype=np.float64)
    n = len(diffs)
    if n == 0:
        return 1.0
    observed = abs(diffs.mean())
    if n <= max_exact:
        bits = (np.arange(2 ** n)[:, None] >> np.arange(n)) & 1
        means = np.abs(((1 - 2 * bits) * diffs).mean(1))
        return float(np.mean(means >= observed - 1e-12))
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(samples, n))
    hits = int(np.sum(np.abs((signs * diffs).mean(1)) >= observed - 1e-12))
    return (hits + 1) / (samples + 1)


def paired_stats(name_a, name_b, values_a, values_b):
    """
    Mean difference, its 90% bootstrap CI, sign-flip p-value and verdict over the common seeds.

    :param name_a: name of A (for the verdict)
    :param name_b: name of B
    :param values_a: dict seed -> value of A
    :param values_b: dict seed -> value of B
    :return: dict, or None without a common seed
    """
    seeds, diffs = paired_differences(values_a, values_b)
    if not seeds:
        return None
    mean, low, high = bootstrap_ci(diffs)
    if len(seeds) < 2:
        verdict = 'too few seeds'
    elif low > 0:
        verdict = f'{name_a} above {name_b}'
    elif high < 0:
        verdict = f'{name_a} below {name_b}'
    else:
        verdict = 'no measurable difference'
    return {'n': len(seeds), 'seed_ids': seeds, 'diffs': diffs, 'mean_diff': mean,
            'ci90': [low, high], 'p_sign_flip': sign_flip_p_value(diffs), 'verdict': verdict}


def _auc(demos, curve):
    """Area under a success-versus-demos curve divided by its demo range (its mean height)."""
    if len(demos) < 2 or demos[-1] == demos[0]:
        return float(np.mean(curve))
    # np.trapezoid is numpy 2; ROS machines run numpy 1.26 (np.trapz).
    trapezoid = getattr(np, 'trapezoid', None) or np.trapz
    return float(trapezoid(curve, demos) / (demos[-1] - demos[0]))


#: Keys of summary.json that are not variants.
SUMMARY_META_KEYS = ('paired', 'picks')
#: Every variant is compared with these (when they ran).
PAIRED_REFERENCES = ('uniform', 'privileged_rebalancing')
ABLATION_PAIRS = (('amf-l2', 'uniform-l2'), ('amf', 'amf-l2'), ('uniform', 'uniform-l2'),
                  ('amf', 'amf-features'), ('amf', 'amf-uncapped'),
                  ('uniform', 'uniform-uncapped'))
"""
Pairs that change one factor: the strategy under L2-to-init, the forgetting control within AMF and
within uniform, the embedding within AMF, the alpha cap within AMF and within uniform.
"""


def summary_variants(summary):
    """
    Select the per-variant entries of a summary.

    :param summary: dict returned by :func:`summarise`
    :return: dict variant name -> its entry (without the 'paired' and 'picks' keys)
    """
    return {k: v for k, v in summary.items() if k not in SUMMARY_META_KEYS}


def weights_sha256(policy):
    """
    Fingerprint a policy's weights (sha256 over its state dict, names and bytes in order).

    This, not the checkpoint file's sha256, is what the runs in results/ record.

    :param policy: torch module
    :return: hex digest
    """
    digest = hashlib.sha256()
    for name, tensor in policy.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def same_start(run_a, run_b):
    """
    Tell whether two runs of one seed started from the same pretrained policy.

    By the recorded weights' sha256 when both runs have it; runs recorded before it was kept are
    compared by their round-0 evaluation (same policy and scenes give the same per-task success).

    :param run_a: run record
    :param run_b: run record
    :return: bool
    """
    sha_a, sha_b = run_a.get('pretrained_sha256'), run_b.get('pretrained_sha256')
    if sha_a and sha_b:
        return sha_a == sha_b
    return run_a['rounds'][0]['success'] == run_b['rounds'][0]['success']


def _paired(by_variant):
    """Paired per-seed comparisons of every variant with each reference variant."""
    per_run, runs_by_seed = {}, {}
    for name, rs in by_variant.items():
        runs_by_seed[name] = {r['seed']: r for r in rs}
        curves = {r['seed']: {rd['demos_used']: rd['mean_success'] for rd in r['rounds']}
                  for r in rs}
        aucs = {r['seed']: _auc([rd['demos_used'] for rd in r['rounds']],
                                [rd['mean_success'] for rd in r['rounds']]) for r in rs}
        per_run[name] = curves, aucs
    pairs = []
    for ref in PAIRED_REFERENCES:
        for name in sorted(by_variant):
            # An uncapped variant is compared with the uncapped reference (one factor at a time).
            matched = ref + '-uncapped' if name.endswith('uncapped') else ref
            if matched in by_variant and name != matched:
                pairs.append((name, matched))
    pairs += [pair for pair in ABLATION_PAIRS if pair[0] in by_variant and pair[1] in by_variant]
    paired = {}
    for name, ref in pairs:
        if f'{ref} - {name}' in paired or f'{name} - {ref}' in paired:
            continue
        (curves_a, auc_a), (curves_b, auc_b) = per_run[name], per_run[ref]
        excluded = sorted(seed for seed in set(auc_a) & set(auc_b)
                          if not same_start(runs_by_seed[name][seed], runs_by_seed[ref][seed]))
        if excluded:
            _LOG.warning('%s vs %s: seeds %s started from different pretrained policies; '
                         'left out of the pairing', name, ref, excluded)
            auc_a = {k: v for k, v in auc_a.items() if k not in excluded}
            curves_a = {k: v for k, v in curves_a.items() if k not in excluded}
        auc = paired_stats(name, ref, auc_a, auc_b)
        if auc is None:
            continue
        demos = sorted({d for c in curves_a.values() for d in c} &
                       {d for c in curves_b.values() for d in c})
        per_demos = []
        for d in demos:
            stats = paired_stats(name, ref,
                                 {s: c[d] for s, c in curves_a.items() if d in c},
                                 {s: c[d] for s, c in curves_b.items() if d in c})
            if stats is not None:
                per_demos.append(dict(demos=d, **stats))
        paired[f'{name} - {ref}'] = {
            'a': name, 'b': ref, 'n': auc['n'], 'seed_ids': auc['seed_ids'],
            'verdict': auc['verdict'], 'auc': auc, 'per_demos': per_demos,
            'excluded_seeds': excluded}
    return paired


def _picks(by_variant):
    """Tasks chosen per round per seed, and for AMF variants how often later rounds branch out."""
    picks = {}
    for name, rs in sorted(by_variant.items()):
        runs = []
        for r in sorted(rs, key=lambda r: r['seed']):
            chosen = [list(rd.get('chosen', [])) for rd in r['rounds'][1:]]
            run = {'seed': r['seed'], 'chosen': chosen}
            if r['variant']['strategy'] == 'amf':
                first = set(chosen[0]) if chosen else set()
                run['new_task_after_round1'] = any(t not in first for c in chosen[1:] for t in c)
            runs.append(run)
        entry = {'runs': runs}
        if any('new_task_after_round1' in run for run in runs):
            entry['new_task_after_round1_runs'] = sum(
                run.get('new_task_after_round1', False) for run in runs)
        picks[name] = entry
    return picks


def summarise(out):
    """
    Aggregate finished runs into summary.json and a plot.

    The summary holds one entry per variant (mean success and its 90% bootstrap CI per number of
    demos, normalised area under the curve, final per-task success), plus 'paired' (per-seed
    differences of each variant against uniform and privileged rebalancing, see
    :func:`paired_differences` and :func:`sign_flip_p_value`) and 'picks' (tasks chosen per round).

    :param out: experiment directory
    :return: summary dict
    """
    runs = [json.loads(p.read_text()) for p in sorted((out / 'runs').glob('*.json'))]
    runs = [r for r in runs if r.get('finished')]
    by_variant = {}
    for r in runs:
        by_variant.setdefault(r['variant']['name'], []).append(r)
    summary = {}
    for name, rs in sorted(by_variant.items()):
        demos = [rd['demos_used'] for rd in rs[0]['rounds']]
        curves = np.array([[rd['mean_success'] for rd in r['rounds']] for r in rs])
        stats = [bootstrap_ci(curves[:, i]) for i in range(curves.shape[1])]
        auc = [_auc(demos, c) for c in curves]
        summary[name] = {
            'seeds': len(rs), 'demos': demos,
            'mean': [s[0] for s in stats], 'ci90_low': [s[1] for s in stats],
            'ci90_high': [s[2] for s in stats],
            'auc_mean': float(np.mean(auc)), 'auc_ci90': list(bootstrap_ci(auc)[1:]),
            'final_per_task': {t: float(np.mean([r['rounds'][-1]['success'][t] for r in rs]))
                               for t in rs[0]['rounds'][-1]['success']},
        }
    if summary:
        summary['paired'] = _paired(by_variant)
        summary['picks'] = _picks(by_variant)
    _write_json(out / 'summary.json', summary)
    if summary:
        plot_summary(summary, out / 'success_vs_demos.png', out.name)
    return summary


def plot_summary(summary, path, title):
    """
    Plot mean success versus demos with 90% bootstrap bands, one line per variant.

    :param summary: dict returned by :func:`summarise`
    :param path: PNG file to write
    :param title: plot title
    :return: list of the legend labels, in plotting order
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    drawn, labels = [], []
    colors = plt.get_cmap('tab20').colors  # more variants than the default cycle's 10 colours
    for index, (name, s) in enumerate(summary_variants(summary).items()):
        label = f'{name} (AUC {s["auc_mean"]:.2f}, {s["seeds"]} seeds)'
        twin = next((other for other, demos, mean in drawn
                     if demos == s['demos'] and np.allclose(mean, s['mean'])), None)
        if twin is not None:
            label += f' (identical to {twin})'
        line, = ax.plot(s['demos'], s['mean'], marker='o', label=label,
                        color=colors[(2 * index) % 20 + (2 * index) // 20 % 2],
                        linestyle='--' if twin is not None else '-')
        ax.fill_between(s['demos'], s['ci90_low'], s['ci90_high'], alpha=0.2,
                        color=line.get_color())
        drawn.append((name, s['demos'], s['mean']))
        labels.append(label)
    ax.set_xticks(sorted({d for _, demos, _ in drawn for d in demos}))
    ax.set_xlabel('demonstrations collected')
    ax.set_ylabel('multi-task success rate')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.text(0.01, 0.01, 'bands: 90% bootstrap CI over seeds', fontsize=8, ha='left',
             va='bottom')
    # Outside the axes, to the right, so that it hides no data; the saved image grows to fit it.
    ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc='upper left', borderaxespad=0)
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)
    return labels


def _short_task(task):
    """Task name without the Meta-World version suffix."""
    return task[:-len('-v3')] if task.endswith('-v3') else task


def picks_table(summary, variant):
    """
    Markdown table of the tasks a variant picked: one row per seed, one column per round.

    :param summary: dict returned by :func:`summarise`
    :param variant: variant name
    :return: str (empty when the summary holds no picks for ``variant``)
    """
    runs = summary.get('picks', {}).get(variant, {}).get('runs', [])
    if not runs:
        return ''
    rounds = max(len(run['chosen']) for run in runs)
    lines = ['| seed | ' + ' | '.join(f'round {i + 1}' for i in range(rounds)) + ' |',
             '|' + '---|' * (rounds + 1)]
    for run in runs:
        cells = [', '.join(_short_task(t) for t in c) for c in run['chosen']]
        cells += [''] * (rounds - len(cells))
        lines.append(f'| {run["seed"]} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _signed(value, digits):
    """Format a difference with an explicit sign."""
    return f'{value:+.{digits}f}'


def markdown_report(summary):
    """
    Markdown tables of a summary.

    The first table gives the mean success per number of demos and the AUC with its 90% CI; the
    second (when there are paired comparisons) the paired per-seed differences: AUC difference with
    its 90% CI, sign-flip p-value, verdict, and the difference of mean success at each number of
    demos.

    :param summary: dict returned by :func:`summarise`
    :return: str (empty for an empty summary)
    """
    variants = summary_variants(summary)
    if not variants:
        return ''
    demos = max((s['demos'] for s in variants.values()), key=len)
    head = '| strategy | seeds | ' + ' | '.join(f'{d} demos' for d in demos) + \
        ' | AUC [90% CI] |'
    lines = [head, '|' + '---|' * (len(demos) + 3)]
    for name, s in sorted(variants.items(), key=lambda item: -item[1]['auc_mean']):
        cells = [f'{v:.2f}' for v in s['mean']] + [''] * (len(demos) - len(s['mean']))
        low, high = s['auc_ci90']
        lines.append(f'| {name} | {s["seeds"]} | ' + ' | '.join(cells) +
                     f' | {s["auc_mean"]:.3f} [{low:.3f}, {high:.3f}] |')
    paired = summary.get('paired') or {}
    if paired:
        budgets = sorted({p['demos'] for c in paired.values() for p in c['per_demos']})
        lines += ['', '| comparison | seeds | AUC diff [90% CI] | sign-flip p | verdict | ' +
                  ' | '.join(f'{d} demos' for d in budgets) + ' |',
                  '|' + '---|' * (len(budgets) + 5)]
        for key, c in paired.items():
            auc = c['auc']
            per = {p['demos']: p for p in c['per_demos']}
            cells = [f'{_signed(per[d]["mean_diff"], 2)} [{_signed(per[d]["ci90"][0], 2)}, '
                     f'{_signed(per[d]["ci90"][1], 2)}]' if d in per else '' for d in budgets]
            lines.append(f'| {key} | {c["n"]} | {_signed(auc["mean_diff"], 3)} '
                         f'[{_signed(auc["ci90"][0], 3)}, {_signed(auc["ci90"][1], 3)}] | '
                         f'{auc["p_sign_flip"]:.3f} | {c["verdict"]} | ' + ' | '.join(cells) +
                         ' |')
    return '\n'.join(lines)


#: Variant flags, in the order they appear in a variant's name, and what each sets.
VARIANT_FLAGS = {'features': ('embedding', 'features'),
                 'l2': ('forgetting_control', 'l2_init'),
                 'uncapped': ('cap_alpha_by_pretraining', False)}
#: Older spellings of variant flags.
VARIANT_FLAG_ALIASES = {'no_prior': 'l2'}


def parse_variants(text):
    """
    Parse strategy variants.

    A variant is a strategy name optionally followed by ``:`` and ``+``-separated flags:
    ``features`` (AMF embeds with last-layer features instead of loss gradients), ``l2``
    (fine-tune with L2-to-init instead of the adaptive prior; any strategy; ``no_prior`` is an
    alias) and ``uncapped`` (the adaptive prior without the cap of each task's alpha at its share
    of the demos, ``n_new / (n_new + n_pretrain)``).  Names are normalised: ``amf:no_prior`` and
    ``amf:l2`` are both 'amf-l2', and flags appear in a fixed order (``amf:l2+features`` is
    'amf-features+l2').

    :param text: comma list of variants, e.g. 'amf,uniform,amf:features,uniform:l2'
    :return: list of variant dicts (name, strategy and the settings the flags change)
    :raises ValueError: for an unknown strategy or flag, or a variant given twice
    """
    variants = []
    for item in text.split(','):
        spec = item.strip()
        strategy, _, suffix = spec.partition(':')
        if strategy not in STRATEGIES:
            raise ValueError(f'unknown strategy {strategy!r}; choose from {STRATEGIES}')
        flags = set()
        for flag in filter(None, suffix.split('+')):
            flag = VARIANT_FLAG_ALIASES.get(flag, flag)
            if flag not in VARIANT_FLAGS:
                raise ValueError(f'unknown variant flag {flag!r} in {spec!r}; '
                                 f'use {" or ".join(VARIANT_FLAGS)}')
            flags.add(flag)
        ordered = [f for f in VARIANT_FLAGS if f in flags]
        variant = {'name': strategy + ('-' + '+'.join(ordered) if ordered else ''),
                   'strategy': strategy}
        variant.update(VARIANT_FLAGS[f] for f in ordered)
        if any(v['name'] == variant['name'] for v in variants):
            raise ValueError(f'variant {variant["name"]!r} given twice in {text!r}')
        variants.append(variant)
    return variants


def main(argv=None):
    """Command-line entry point: ``af-experiment``."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--out', required=True, help='experiment directory (resumable)')
    parser.add_argument('--strategies', default=','.join(STRATEGIES),
                        help='comma list; variants: amf:features (last-layer feature embedding), '
                             '<strategy>:l2 (L2-to-init fine-tuning; alias no_prior), '
                             '<strategy>:uncapped (alpha not capped by the pretraining demos)')
    parser.add_argument('--seeds', type=int, default=5)
    parser.add_argument('--mix', default='skewed')
    parser.add_argument('--tasks', default='mt10')
    parser.add_argument('--observation', choices=('image', 'state'), default='state')
    parser.add_argument('--image-size', type=int, default=64)
    parser.add_argument('--budget', type=int, default=20)
    parser.add_argument('--demos-per-round', type=int, default=4)
    parser.add_argument('--pretrain-steps', type=int, default=3000)
    parser.add_argument('--finetune-steps', type=int, default=1500)
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--eval-episodes', type=int, default=5)
    parser.add_argument('--target-rollouts', type=int, default=2)
    parser.add_argument('--max-steps', type=int, default=200)
    parser.add_argument('--rho2', type=float, default=1.0)
    parser.add_argument('--noise-std', type=float, default=0.1)
    parser.add_argument('--workers', type=int, default=default_workers())
    parser.add_argument('--pretrained', default=None,
                        help='use this checkpoint for every seed instead of pretraining per seed')
    parser.add_argument('--pretraining-demos-per-task', type=int, default=0,
                        help='cap on the pretraining demos re-collected as AMF target states and '
                             'conditioning set (0 = all of the mix)')
    parser.add_argument('--report', action='store_true',
                        help='only summarise the finished runs in --out (summary.json, plot) and '
                             'print a markdown table')
    args = parser.parse_args(argv)
    setup_cli()
    out = Path(args.out)
    if args.report:
        if not (out / 'runs').is_dir():
            parser.error(f'{out} holds no experiment (no runs/ directory)')
        summary = summarise(out)
        print(markdown_report(summary))
        for name in summary_variants(summary):
            table = picks_table(summary, name)
            if name.startswith('amf') and table:
                print(f'\nTasks picked per round, {name}:\n{table}')
        return 0
    (out / 'runs').mkdir(parents=True, exist_ok=True)
    spec = {
        'mix': load_mix(args.mix), 'mix_name': args.mix, 'tasks': list(parse_tasks(args.tasks)),
        'observation': args.observation, 'image_size': args.image_size, 'budget': args.budget,
        'demos_per_round': args.demos_per_round, 'pretrain_steps': args.pretrain_steps,
        'finetune_steps': args.finetune_steps, 'batch_size': args.batch_size,
        'eval_episodes': args.eval_episodes, 'target_rollouts': args.target_rollouts,
        'max_steps': args.max_steps, 'rho2': args.rho2, 'noise_std': args.noise_std,
        'pretrained': args.pretrained,
        'pretraining_demos_per_task': args.pretraining_demos_per_task,
    }
    spec_path = out / 'spec.json'
    if spec_path.exists() and json.loads(spec_path.read_text()) != spec:
        parser.error(f'{spec_path} holds a different experiment spec; '
                     f'use a new --out to change settings')
    _write_json(spec_path, spec)
    variants = parse_variants(args.strategies)
    # Pretrain every seed once before the runs share it.  Each run records the sha256 of the
    # pretrained weights it started from, and only runs that started from the same policy are
    # paired (see same_start).
    for seed in tqdm(range(args.seeds), desc='pretrain'):
        _pretrained_policy(out, spec, seed)
    ctx = multiprocessing.get_context('spawn')
    # The runs report each round on a queue, so the bar moves within a run, not only at its end.
    with ctx.Manager() as manager, ctx.Pool(max(1, args.workers)) as pool:
        progress = manager.Queue()
        jobs = [(out, spec, v, s, progress) for s in range(args.seeds) for v in variants]
        with tqdm(total=len(jobs) * rounds_per_run(spec), desc=f'{len(jobs)} runs',
                  unit='round') as bar:
            follow_progress(pool.map_async(run_one, jobs, chunksize=1), progress, bar)
    summary = summarise(out)
    for name, s in summary_variants(summary).items():
        print(f'{name:28s} AUC {s["auc_mean"]:.3f} '
              f'[{s["auc_ci90"][0]:.3f}, {s["auc_ci90"][1]:.3f}]  '
              f'final {s["mean"][-1]:.3f}  seeds {s["seeds"]}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
