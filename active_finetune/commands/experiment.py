"""
AMF versus baselines in simulation: strategies x seeds x budget, skewed or balanced pretraining.

Each run (strategy, seed) pretrains (cached per seed), then loops select -> demonstrate ->
fine-tune -> evaluate until the budget is spent.  Every run's results are written atomically after
every round to ``<out>/runs/<strategy>_seed<k>.json``; a restarted experiment skips finished runs
(resumable after a crash).  Finally it writes ``summary.json`` (mean and 90% bootstrap CI per
strategy and number of demos, area under the curve) and ``success_vs_demos.png``.
"""

import argparse
import json
import logging
import multiprocessing
from pathlib import Path
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


def _pretrained(out, spec, seed):
    """Pretrain (or load the cached) policy of this experiment for ``seed``."""
    from active_finetune.commands.pretrain import pretrain
    path = out / 'pretrained' / f'seed{seed}'
    mix = spec['mix']
    sim_config = SimConfig(image_size=spec['image_size'] if spec['observation'] == 'image' else 0,
                           max_steps=spec['max_steps'])
    cap = spec.get('pretraining_demos_per_task') or max(mix.values(), default=0)
    demos = collect_demos({t: min(n, cap) for t, n in mix.items() if n > 0}, sim_config,
                          base_seed=seed, workers=1, progress=False)
    if spec.get('pretrained'):
        policy, _ = load_checkpoint(spec['pretrained'])
        if list(policy.config.tasks) != list(spec['tasks']) or \
                policy.config.observation != spec['observation']:
            raise ValueError(f'{spec["pretrained"]} is a {policy.config.observation} policy for '
                             f'{policy.config.tasks}, not {spec["observation"]} '
                             f'for {spec["tasks"]}')
        return policy, demos
    if path.exists():
        try:
            return load_checkpoint(path)[0], demos
        except CheckpointError as exc:
            _LOG.warning('cached pretrained policy unusable (%s); retraining', exc)
            import shutil
            shutil.rmtree(path)
    policy, _, provenance = pretrain(
        mix, tuple(spec['tasks']), spec['observation'], spec['image_size'],
        TrainConfig(steps=spec['pretrain_steps'], seed=seed, forgetting_control='none'),
        seed, workers=1, progress=False)
    try:
        save_checkpoint(policy, path, provenance)
    except FileExistsError:
        pass
    return policy, demos


def run_one(args):
    """
    One (strategy, seed) run; writes its JSON after every round.

    :param args: (out dir, experiment spec dict, strategy variant dict, seed)
    :return: path of the run's JSON
    """
    out, spec, variant, seed = args
    import torch
    torch.set_num_threads(1)
    path = out / 'runs' / f'{variant["name"]}_seed{seed}.json'
    if path.exists() and json.loads(path.read_text()).get('finished'):
        return str(path)
    policy, pre_demos = _pretrained(out, spec, seed)
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
        seed=seed)
    loop = ActiveFinetuningLoop(policy, sim_config, config, pretraining=pre_demos,
                                pretraining_counts=spec['mix'])
    record = {'strategy': variant['strategy'], 'variant': variant, 'seed': seed, 'spec': spec,
              'rounds': [], 'finished': False}
    t0 = time.perf_counter()
    rates = loop.evaluate()
    record['rounds'].append({'round': 0, 'demos_used': 0, 'success': rates,
                             'mean_success': float(np.mean(list(rates.values())))})
    _write_json(path, record)
    while not loop.done:
        info = loop.step()
        rates = loop.evaluate()
        info.update(success=rates, mean_success=float(np.mean(list(rates.values()))))
        record['rounds'].append(info)
        _write_json(path, record)
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


def summarise(out):
    """
    Aggregate finished runs into summary.json and a plot.

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
        auc = [float(np.trapezoid(c, demos) / (demos[-1] - demos[0])) for c in curves]
        summary[name] = {
            'seeds': len(rs), 'demos': demos,
            'mean': [s[0] for s in stats], 'ci90_low': [s[1] for s in stats],
            'ci90_high': [s[2] for s in stats],
            'auc_mean': float(np.mean(auc)), 'auc_ci90': list(bootstrap_ci(auc)[1:]),
            'final_per_task': {t: float(np.mean([r['rounds'][-1]['success'][t] for r in rs]))
                               for t in rs[0]['rounds'][-1]['success']},
        }
    _write_json(out / 'summary.json', summary)
    if summary:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for name, s in summary.items():
            label = f'{name} (AUC {s["auc_mean"]:.2f}, {s["seeds"]} seeds)'
            ax.plot(s['demos'], s['mean'], marker='o', label=label)
            ax.fill_between(s['demos'], s['ci90_low'], s['ci90_high'], alpha=0.2)
        ax.set_xlabel('demonstrations collected')
        ax.set_ylabel('multi-task success rate')
        ax.set_title(out.name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / 'success_vs_demos.png', dpi=120)
        plt.close(fig)
    return summary


def markdown_report(summary):
    """
    Markdown table of a summary: mean success per number of demos, AUC with its 90% CI.

    :param summary: dict returned by :func:`summarise`
    :return: str (empty for an empty summary)
    """
    if not summary:
        return ''
    demos = max((s['demos'] for s in summary.values()), key=len)
    head = '| strategy | seeds | ' + ' | '.join(f'{d} demos' for d in demos) + \
        ' | AUC [90% CI] |'
    lines = [head, '|' + '---|' * (len(demos) + 3)]
    for name, s in sorted(summary.items(), key=lambda item: -item[1]['auc_mean']):
        cells = [f'{v:.2f}' for v in s['mean']] + [''] * (len(demos) - len(s['mean']))
        low, high = s['auc_ci90']
        lines.append(f'| {name} | {s["seeds"]} | ' + ' | '.join(cells) +
                     f' | {s["auc_mean"]:.3f} [{low:.3f}, {high:.3f}] |')
    return '\n'.join(lines)


def parse_variants(text):
    """
    Parse strategy variants.

    :param text: comma list of strategy names, optionally with ablation suffixes
        'amf:features' (last-layer features) and 'amf:no_prior' (L2-to-init instead of the prior)
    :return: list of variant dicts
    :raises ValueError: for an unknown strategy or suffix
    """
    variants = []
    for item in text.split(','):
        name = item.strip()
        strategy, _, suffix = name.partition(':')
        if strategy not in STRATEGIES:
            raise ValueError(f'unknown strategy {strategy!r}; choose from {STRATEGIES}')
        variant = {'name': name.replace(':', '-'), 'strategy': strategy}
        for flag in filter(None, suffix.split('+')):
            if flag == 'features':
                variant['embedding'] = 'features'
            elif flag == 'no_prior':
                variant['forgetting_control'] = 'l2_init'
            else:
                raise ValueError(f'unknown variant flag {flag!r} in {name!r}; '
                                 f'use features or no_prior')
        variants.append(variant)
    return variants


def main(argv=None):
    """Command-line entry point: ``af-experiment``."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--out', required=True, help='experiment directory (resumable)')
    parser.add_argument('--strategies', default=','.join(STRATEGIES),
                        help='comma list; ablations: amf:features, amf:no_prior')
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
        print(markdown_report(summarise(out)))
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
    # Pretrain every seed once before the runs share it.
    for seed in tqdm(range(args.seeds), desc='pretrain'):
        _pretrained(out, spec, seed)
    jobs = [(out, spec, v, s) for s in range(args.seeds) for v in variants]
    ctx = multiprocessing.get_context('spawn')
    with ctx.Pool(max(1, args.workers)) as pool:
        for _ in tqdm(pool.imap_unordered(run_one, jobs), total=len(jobs), desc='runs'):
            pass
    summary = summarise(out)
    for name, s in summary.items():
        print(f'{name:28s} AUC {s["auc_mean"]:.3f} '
              f'[{s["auc_ci90"][0]:.3f}, {s["auc_ci90"][1]:.3f}]  '
              f'final {s["mean"][-1]:.3f}  seeds {s["seeds"]}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
