"""
Round schedule of the main job: warm-started rounds versus one round from the pretrained weights.

Input: a main-job run directory (``bash scripts/main_job.sh``); its ROS-recorded episodes are
loaded in recording order and split into rounds of ``--demos-per-round``, as the trainer node
does.  Each schedule ``mode:steps:per_demo`` trains on them with the trainer's defaults (adaptive
prior capped by the checkpoint's pretraining mix, batch 64, MSE) and
``max(steps, per_demo x demos so far)`` gradient steps per round:

- ``warm``: every round starts from the previous round's weights (what the trainer node does);
- ``fresh``: only the last round, from the pretrained checkpoint, on all the demos.

The final policy of every schedule is evaluated on the demonstrated tasks (or ``--tasks``) with
the same scenes (base seed 10000, ``--episodes`` per task), side by side in one run.

``--variants`` trains each schedule also with other :class:`TrainConfig` settings (e.g. a weight
average, ``ema=ema_decay:0.995``, or shifted trunk features, ``shift2=trunk_shift_copies:2``),
for each of ``--seeds``; every variant's mean success is paired with the first variant's of the
same run, schedule and seed (difference, 90% bootstrap interval, sign-flip p-value, as the
experiments report them).  ``--combine A.json B.json --out C.json`` pools the pairs of several
runs.  Writes results/finetune_schedule.json (or ``--out``).

    MUJOCO_GL=egl .venv/bin/python bench/finetune_schedule.py --run runs/main_job_<time>
"""

import argparse
from dataclasses import fields
import json
from pathlib import Path
import shlex
import sys
import time

from active_finetune.commands.common import setup_cli
from active_finetune.data.mcap_episode import load_episode
from active_finetune.policy.checkpoint import load_checkpoint, pretraining_counts
from active_finetune.sim.metaworld_env import SimConfig
from active_finetune.sim.rollouts import evaluate_policy
from active_finetune.training.bc import DemoDataset, train_bc, TrainConfig
from active_finetune.training.round_job import EVALUATION_SEED
import torch

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def run_episodes(run_dir):
    """
    Successful recorded episodes of a main-job run, in recording order.

    :param run_dir: main-job run directory
    :return: list of episode bag directories
    """
    index = Path(run_dir) / 'episodes' / 'episodes.jsonl'
    records = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    paths = []
    for record in records:
        if record.get('success', True):
            paths.append(Path(run_dir) / 'episodes' / record['file'])
    return paths


def train_schedule(policy, episodes, mode, steps, per_demo, demos_per_round, counts, seed=0,
                   overrides=None):
    """
    Train one schedule.

    :param policy: pretrained policy
    :param episodes: demos in recording order
    :param mode: 'warm' or 'fresh'
    :param steps: least gradient steps of a round
    :param per_demo: steps per demo so far (0: always ``steps``)
    :param demos_per_round: demos per round
    :param counts: pretraining mix (caps the adaptive prior), or None
    :param seed: training seed of round 0 (round r uses seed + r, as the trainer)
    :param overrides: dict of further :class:`TrainConfig` fields (a variant), or None
    :return: (policy, dict of rounds' steps and the training seconds)
    """
    ends = list(range(demos_per_round, len(episodes), demos_per_round)) + [len(episodes)]
    if mode == 'fresh':
        ends = ends[-1:]
    round_steps, t0 = [], time.perf_counter()
    for number, end in enumerate(ends):
        n = max(steps, per_demo * end)
        kwargs = {'steps': n, 'batch_size': 64, 'loss': 'mse',
                  'seed': seed + (number if mode == 'warm' else len(ends) - 1)}
        config = TrainConfig(**{**kwargs, **(overrides or {})})
        policy, _ = train_bc(policy, DemoDataset(episodes[:end], policy.config), config,
                             pretraining_counts=counts)
        round_steps.append(n)
    return policy, {'round_steps': round_steps, 'train_s': round(time.perf_counter() - t0, 1)}


def parse_variants(text):
    """
    Training variants from ``name=field:value;field:value,name2=...`` (``base`` = no override).

    :param text: the ``--variants`` argument
    :return: list of (name, dict of :class:`TrainConfig` overrides)
    :raises SystemExit: on a field :class:`TrainConfig` does not have
    """
    known = {f.name: f.type for f in fields(TrainConfig)}
    variants = []
    for item in text.split(','):
        name, _, spec = item.partition('=')
        overrides = {}
        for pair in filter(None, spec.split(';')):
            key, _, value = pair.partition(':')
            if key not in known:
                raise SystemExit(f'unknown TrainConfig field {key!r} in variant {name!r}')
            kind = known[key] if known[key] in (int, float) else str
            overrides[key] = kind(value)
        variants.append((name.strip(), overrides))
    return variants


def main(argv=None):
    """Run the benchmark and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--run', required=True, help='main-job run directory')
    parser.add_argument('--checkpoint', default=str(REPOSITORY_ROOT / 'checkpoints'
                                                    / 'pretrained_mt10_skewed'))
    parser.add_argument('--schedules', default='warm:600:300,warm:300:100,fresh:1200:0',
                        help='comma list of mode:steps:per_demo')
    parser.add_argument('--variants', default='base',
                        help='comma list of name=field:value;field:value (TrainConfig fields '
                             'over the trainer defaults), e.g. base,ema=ema_decay:0.995')
    parser.add_argument('--seeds', default='0', help='comma list of training seeds')
    parser.add_argument('--tasks', default='',
                        help='comma list of tasks to evaluate (default: every demonstrated one)')
    parser.add_argument('--demos-per-round', type=int, default=2)
    parser.add_argument('--episodes', type=int, default=10)
    parser.add_argument('--max-steps', type=int, default=150)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--out', default=str(REPOSITORY_ROOT / 'results'
                                             / 'finetune_schedule.json'))
    parser.add_argument('--combine', nargs='+', default=None,
                        help='merge these results files (pairs over all their runs) into --out '
                             'instead of running; the reference is the first of --variants')
    args = parser.parse_args(argv)
    setup_cli()
    if args.combine:
        combine(args.combine, parse_variants(args.variants)[0][0], args.out)
        return 0
    torch.set_num_threads(args.threads)
    variants = parse_variants(args.variants)
    seeds = [int(s) for s in args.seeds.split(',')]
    pretrained, checkpoint_config = load_checkpoint(args.checkpoint)
    counts = pretraining_counts(checkpoint_config)
    size = pretrained.config.image_size
    paths = run_episodes(args.run)
    episodes = [load_episode(p, image_size=(size, size)) for p in paths]
    tasks = sorted({e.task for e in episodes}, key=pretrained.config.tasks.index)
    if args.tasks:
        tasks = [t for t in args.tasks.split(',') if t in tasks]
    sim = SimConfig(image_size=size, max_steps=args.max_steps)
    t_start = time.perf_counter()
    rows = []
    for spec in args.schedules.split(','):
        mode, steps, per_demo = spec.split(':')
        if mode not in ('warm', 'fresh'):
            raise SystemExit(f'unknown schedule mode {mode!r} (warm or fresh)')
        for seed in seeds:
            for name, overrides in variants:
                policy, info = train_schedule(pretrained, episodes, mode, int(steps),
                                              int(per_demo), args.demos_per_round, counts,
                                              seed=seed, overrides=overrides)
                success = evaluate_policy(policy, tasks, args.episodes, sim,
                                          base_seed=EVALUATION_SEED, workers=args.workers,
                                          progress=False)
                rows.append({'run': str(args.run), 'schedule': spec, 'variant': name,
                             'overrides': overrides, 'seed': seed, **info, 'success': success,
                             'mean': round(sum(success.values()) / len(success), 3)})
                print(json.dumps(rows[-1]), flush=True)
    result = {'command': ' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
              'run': str(args.run), 'checkpoint': args.checkpoint,
              'episodes_used': [f'{e.task} ({len(e)} rows)' for e in episodes],
              'evaluation': {'tasks': tasks, 'episodes_per_task': args.episodes,
                             'max_steps': args.max_steps, 'base_seed': EVALUATION_SEED},
              'rows': rows, 'paired': paired_summary(rows, variants[0][0]),
              'wall_s': round(time.perf_counter() - t_start, 1)}
    Path(args.out).write_text(json.dumps(result, indent=1) + '\n')
    return 0


def paired_summary(rows, reference):
    """
    Each variant's mean success minus the reference variant's, paired by run, schedule and seed.

    :param rows: result rows (run, schedule, variant, seed, mean)
    :param reference: name of the reference variant
    :return: list of dicts per (schedule, variant): the experiments' paired statistics
        (:func:`~active_finetune.commands.experiment.paired_stats`: differences per pair, their
        mean, 90% bootstrap interval, sign-flip p-value and verdict)
    """
    from active_finetune.commands.experiment import paired_stats

    def means(schedule, variant):
        return {f'{Path(r.get("run", "")).name} seed {r["seed"]}': r['mean'] for r in rows
                if r['schedule'] == schedule and r['variant'] == variant}
    out = []
    for schedule, variant in sorted({(r['schedule'], r['variant']) for r in rows}):
        if variant == reference:
            continue
        stats = paired_stats(variant, reference, means(schedule, variant),
                             means(schedule, reference))
        if stats is not None:
            out.append({'schedule': schedule, 'variant': variant, 'reference': reference,
                        **stats})
    return out


def combine(paths, reference, out):
    """
    Merge result files of several runs and pair the variants over all of them.

    :param paths: results files written by this script
    :param reference: reference variant
    :param out: path of the merged file
    """
    rows, sources = [], []
    for path in paths:
        data = json.loads(Path(path).read_text())
        sources.append({'file': str(path), 'command': data['command'], 'run': data['run'],
                        'evaluation': data['evaluation'], 'wall_s': data['wall_s']})
        rows.extend({**row, 'run': row.get('run', data['run'])} for row in data['rows'])
    unique = {(r['run'], r['schedule'], r['variant'], r['seed']): r for r in rows}
    result = {'command': ' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
              'sources': sources, 'rows': list(unique.values()),
              'paired': paired_summary(list(unique.values()), reference)}
    Path(out).write_text(json.dumps(result, indent=1) + '\n')
    for item in result['paired']:
        print(json.dumps(item))


if __name__ == '__main__':
    raise SystemExit(main())
