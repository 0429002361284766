"""
Fine-tuning teaches a held-out task from a few demos: success vs number of demos k and vs steps.

Starting from a pretrained image checkpoint, for every held-out task and every k it collects k
scripted demos of that task (operator noise ``--noise-std``), fine-tunes one round with the
adaptive prior (the trainer's defaults) and evaluates the task on ``--episodes`` seeded episodes.
Then one joint round on k_max demos of every held-out task is evaluated on every task, to check
that the pretraining tasks keep their success (they have no demos, so the adaptive prior serves
them with the pretrained weights; the largest output difference on their frames is reported too).
Fine-tuning uses ``--threads`` CPU threads; wall times are reported per round.

Writes results/finetune_heldout.json.

    .venv/bin/python bench/finetune_heldout.py --checkpoint checkpoints/pretrained_mt10_skewed
"""

import argparse
import json
from pathlib import Path
import shlex
import sys
import time

from active_finetune.commands.common import setup_cli
from active_finetune.policy.checkpoint import load_checkpoint
from active_finetune.sim.metaworld_env import SimConfig
from active_finetune.sim.rollouts import collect_demos, evaluate_policy
from active_finetune.training.bc import DemoDataset, train_bc, TrainConfig
import numpy as np
import torch

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = ('drawer-close-v3', 'window-open-v3', 'window-close-v3', 'button-press-topdown-v3')


def finetune(policy, demos, steps, batch_size, seed, loss='mse', trunk_shift_copies=0):
    """
    One fine-tuning round with the adaptive prior (the trainer node's defaults).

    :param policy: pretrained policy
    :param demos: episodes
    :param steps: gradient steps
    :param batch_size: rows per step
    :param seed: training seed
    :param loss: 'mse' or 'nll' (:class:`TrainConfig`)
    :param trunk_shift_copies: shifted copies of the trunk features (:class:`TrainConfig`)
    :return: (policy, seconds)
    """
    t0 = time.perf_counter()
    tuned, _ = train_bc(policy, DemoDataset(demos, policy.config),
                        TrainConfig(steps=steps, batch_size=batch_size, seed=seed, loss=loss,
                                    trunk_shift_copies=trunk_shift_copies))
    return tuned, time.perf_counter() - t0


def output_difference(policy, reference, episodes):
    """
    Largest absolute difference of the action mean between two policies on episodes' frames.

    :param policy: a policy
    :param reference: another
    :param episodes: episodes (their tasks and frames are fed to both)
    :return: float
    """
    data = DemoDataset(episodes, policy.config)
    batch, _ = data.batch(np.arange(len(data)), 'cpu')
    with torch.no_grad():
        return float((policy(batch)[0] - reference(batch)[0]).abs().max())


def main(argv=None):
    """Run the benchmark and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--checkpoint', default=str(REPOSITORY_ROOT / 'checkpoints'
                                                    / 'pretrained_mt10_skewed'))
    parser.add_argument('--camera', default=None,
                        help='simulator camera (default: the one the checkpoint was trained on)')
    parser.add_argument('--tasks', default=','.join(HELD_OUT))
    parser.add_argument('--k', default='1,2,4')
    parser.add_argument('--steps', default='300,600')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--episodes', type=int, default=10)
    parser.add_argument('--max-steps', type=int, default=150)
    parser.add_argument('--noise-std', type=float, default=0.1)
    parser.add_argument('--loss', choices=('mse', 'nll'), default='mse',
                        help="behaviour-cloning loss (the trainer node's default is mse)")
    parser.add_argument('--trunk-shift-copies', type=int, default=2,
                        help="shifted copies of the trunk features (the trainer's default 2; "
                             'results made before this option existed used 0)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--skip-joint', action='store_true')
    parser.add_argument('--out', default=str(REPOSITORY_ROOT / 'results'
                                             / 'finetune_heldout.json'))
    args = parser.parse_args(argv)
    setup_cli(args.threads)
    policy, config = load_checkpoint(args.checkpoint)
    camera = args.camera or config.get('provenance', {}).get('camera') or 'workspace'
    sim = SimConfig(image_size=policy.config.image_size, camera=camera,
                    max_steps=args.max_steps)
    tasks = args.tasks.split(',')
    ks = sorted(map(int, args.k.split(',')))
    step_counts = list(map(int, args.steps.split(',')))
    t_start = time.perf_counter()
    # Without the joint round only the held-out tasks' success before fine-tuning is needed.
    before = evaluate_policy(policy, tasks if args.skip_joint else policy.config.tasks,
                             args.episodes, sim, base_seed=10_000, workers=args.workers,
                             progress=False)
    print(json.dumps({'before': before}), flush=True)
    demos = {t: collect_demos({t: ks[-1]}, SimConfig(image_size=sim.image_size, camera=camera),
                              base_seed=args.seed + 500, noise_std=args.noise_std,
                              progress=False) for t in tasks}
    rows = []
    for task in tasks:
        for k in ks:
            for steps in step_counts:
                tuned, train_s = finetune(policy, demos[task][:k], steps, args.batch_size,
                                          args.seed, args.loss, args.trunk_shift_copies)
                rate = evaluate_policy(tuned, [task], args.episodes, sim, base_seed=10_000,
                                       workers=args.workers, progress=False)[task]
                rows.append({'task': task, 'k': k, 'steps': steps, 'before': before[task],
                             'after': rate, 'train_s': round(train_s, 1),
                             'demo_success': [bool(e.success) for e in demos[task][:k]]})
                print(json.dumps(rows[-1]), flush=True)
    joint = None
    if not args.skip_joint:
        all_demos = [e for t in tasks for e in demos[t]]
        tuned, train_s = finetune(policy, all_demos, step_counts[-1], args.batch_size, args.seed,
                                  args.loss, args.trunk_shift_copies)
        after = evaluate_policy(tuned, policy.config.tasks, args.episodes, sim,
                                base_seed=10_000, workers=args.workers, progress=False)
        others = [t for t in policy.config.tasks if t not in tasks]
        probes = collect_demos(dict.fromkeys(others, 1),
                               SimConfig(image_size=sim.image_size, camera=camera),
                               base_seed=args.seed + 900, progress=False)
        joint = {'demos_per_task': ks[-1], 'steps': step_counts[-1], 'train_s': round(train_s, 1),
                 'before': before, 'after': after,
                 'largest_loss_on_other_tasks': max(before[t] - after[t] for t in others),
                 'max_output_difference_other_tasks': output_difference(tuned, policy, probes)}
        print(json.dumps(joint), flush=True)
    result = {'command': ' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
              'checkpoint': args.checkpoint, 'camera': camera, 'threads': args.threads,
              'episodes': args.episodes, 'max_steps': args.max_steps,
              'noise_std': args.noise_std, 'batch_size': args.batch_size, 'loss': args.loss,
              'trunk_shift_copies': args.trunk_shift_copies,
              'before': before, 'rows': rows, 'joint': joint,
              'wall_s': round(time.perf_counter() - t_start, 1)}
    Path(args.out).write_text(json.dumps(result, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
