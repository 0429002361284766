"""
Round schedule of the main job: warm-started rounds versus one round from the pretrained weights.

Input: a main-job run directory (``bash scripts/main_job.sh``); its ROS-recorded episodes are
loaded in recording order and split into rounds of ``--demos-per-round``, as the trainer node
does.  Each schedule ``mode:steps:per_demo`` trains on them with the trainer's defaults (adaptive
prior capped by the checkpoint's pretraining mix, batch 64, MSE) and
``max(steps, per_demo x demos so far)`` gradient steps per round:

- ``warm``: every round starts from the previous round's weights (what the trainer node does);
- ``fresh``: only the last round, from the pretrained checkpoint, on all the demos.

The final policy of every schedule is evaluated on the demonstrated tasks with the same scenes
(base seed 10000, ``--episodes`` per task), side by side in one run.  Writes
results/finetune_schedule.json.

    MUJOCO_GL=egl .venv/bin/python bench/finetune_schedule.py --run runs/main_job_<time>
"""

import argparse
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


def train_schedule(policy, episodes, mode, steps, per_demo, demos_per_round, counts, seed=0):
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
    :return: (policy, dict of rounds' steps and the training seconds)
    """
    ends = list(range(demos_per_round, len(episodes), demos_per_round)) + [len(episodes)]
    if mode == 'fresh':
        ends = ends[-1:]
    round_steps, t0 = [], time.perf_counter()
    for number, end in enumerate(ends):
        n = max(steps, per_demo * end)
        config = TrainConfig(steps=n, batch_size=64, loss='mse',
                             seed=seed + (number if mode == 'warm' else len(ends) - 1))
        policy, _ = train_bc(policy, DemoDataset(episodes[:end], policy.config), config,
                             pretraining_counts=counts)
        round_steps.append(n)
    return policy, {'round_steps': round_steps, 'train_s': round(time.perf_counter() - t0, 1)}


def main(argv=None):
    """Run the benchmark and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--run', required=True, help='main-job run directory')
    parser.add_argument('--checkpoint', default=str(REPOSITORY_ROOT / 'checkpoints'
                                                    / 'pretrained_mt10_skewed'))
    parser.add_argument('--schedules', default='warm:600:300,warm:300:100,fresh:1200:0',
                        help='comma list of mode:steps:per_demo')
    parser.add_argument('--demos-per-round', type=int, default=2)
    parser.add_argument('--episodes', type=int, default=10)
    parser.add_argument('--max-steps', type=int, default=150)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--out', default=str(REPOSITORY_ROOT / 'results'
                                             / 'finetune_schedule.json'))
    args = parser.parse_args(argv)
    setup_cli()
    torch.set_num_threads(args.threads)
    pretrained, checkpoint_config = load_checkpoint(args.checkpoint)
    counts = pretraining_counts(checkpoint_config)
    size = pretrained.config.image_size
    paths = run_episodes(args.run)
    episodes = [load_episode(p, image_size=(size, size)) for p in paths]
    tasks = sorted({e.task for e in episodes}, key=pretrained.config.tasks.index)
    sim = SimConfig(image_size=size, max_steps=args.max_steps)
    t_start = time.perf_counter()
    rows = []
    for spec in args.schedules.split(','):
        mode, steps, per_demo = spec.split(':')
        if mode not in ('warm', 'fresh'):
            raise SystemExit(f'unknown schedule mode {mode!r} (warm or fresh)')
        policy, info = train_schedule(pretrained, episodes, mode, int(steps), int(per_demo),
                                      args.demos_per_round, counts)
        success = evaluate_policy(policy, tasks, args.episodes, sim,
                                  base_seed=EVALUATION_SEED, workers=args.workers,
                                  progress=False)
        rows.append({'schedule': spec, **info, 'success': success,
                     'mean': round(sum(success.values()) / len(success), 3)})
        print(json.dumps(rows[-1]), flush=True)
    result = {'command': ' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
              'run': str(args.run), 'checkpoint': args.checkpoint,
              'episodes_used': [f'{e.task} ({len(e)} rows)' for e in episodes],
              'evaluation': {'tasks': tasks, 'episodes_per_task': args.episodes,
                             'max_steps': args.max_steps, 'base_seed': EVALUATION_SEED},
              'rows': rows, 'wall_s': round(time.perf_counter() - t_start, 1)}
    Path(args.out).write_text(json.dumps(result, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
