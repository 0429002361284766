"""
Adaptive-prior mixture weights alpha(c) after one fine-tuning round of 300, 1500 and 3000 steps.

Pretrains a state policy on scripted demos of the skewed MT10 mix (reach, push, pick-place,
door-open, drawer-open), then fine-tunes one round on demos of two held-out tasks and reports,
per step count and ``alpha_penalty``:

- alpha of the demonstrated tasks (they must be able to reach close to 1 within one round),
- alpha of every task without demos (gated to 0) and the largest difference between the
  fine-tuned policy's action distribution and the pretrained one on those tasks' states (0 means
  they act exactly like pi_0).

Writes results/alpha_dynamics.json.

    .venv/bin/python bench/alpha_dynamics.py
"""

import argparse
import json
from pathlib import Path
import shlex
import sys
import time

from active_finetune.commands.common import load_mix, parse_tasks, setup_cli
from active_finetune.policy.model import PolicyConfig, TaskPolicy
from active_finetune.sim.metaworld_env import SimConfig
from active_finetune.sim.rollouts import collect_demos
from active_finetune.training.bc import DemoDataset, fit_normalisation, train_bc, TrainConfig
import numpy as np
import torch

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def max_action_difference(policy, reference, episodes):
    """
    Largest absolute difference of mean and log-std between two policies on episodes' rows.

    :param policy: a :class:`TaskPolicy`
    :param reference: another one
    :param episodes: episodes whose states and tasks are fed to both
    :return: float
    """
    data = DemoDataset(episodes, policy.config)
    batch, _ = data.batch(np.arange(len(data)), 'cpu')
    with torch.no_grad():
        mean, log_std, _ = policy(batch)
        mean0, log_std0, _ = reference(batch)
    return float(max((mean - mean0).abs().max(), (log_std - log_std0).abs().max()))


def main(argv=None):
    """Run the measurement and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--steps', default='300,1500,3000')
    parser.add_argument('--penalties', default='0.01,0.1,1,10')
    parser.add_argument('--held-out', default='window-open-v3,button-press-topdown-v3')
    parser.add_argument('--demos', type=int, default=4, help='demos per held-out task')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=str(REPOSITORY_ROOT / 'results' / 'alpha_dynamics.json'))
    args = parser.parse_args(argv)
    setup_cli()
    tasks = parse_tasks('mt10')
    mix = load_mix('skewed')
    held_out = args.held_out.split(',')
    sim = SimConfig(image_size=0, max_steps=200)
    t0 = time.perf_counter()
    pre = collect_demos({t: n for t, n in mix.items() if n > 0}, sim, base_seed=args.seed,
                        noise_std=0.1, progress=False)
    policy = TaskPolicy(PolicyConfig(tasks=tasks, observation='state'))
    data = DemoDataset(pre, policy.config)
    fit_normalisation(policy, data)
    policy, _ = train_bc(policy, data, TrainConfig(steps=3000, seed=args.seed,
                                                   forgetting_control='none'))
    demos = collect_demos({t: args.demos for t in held_out}, sim, base_seed=args.seed + 1,
                          noise_std=0.1, progress=False)
    probes = collect_demos({t: 1 for t in tasks if t not in held_out}, sim,
                           base_seed=args.seed + 2, progress=False)
    rows = []
    for penalty in map(float, args.penalties.split(',')):
        for steps in map(int, args.steps.split(',')):
            tuned, metrics = train_bc(policy, DemoDataset(demos, policy.config),
                                      TrainConfig(steps=steps, seed=args.seed,
                                                  alpha_penalty=penalty))
            alpha = metrics['alpha']
            rows.append({
                'alpha_penalty': penalty, 'steps': steps,
                'alpha_demonstrated': {t: round(alpha[t], 4) for t in held_out},
                'alpha_without_demos_max': max(alpha[t] for t in tasks if t not in held_out),
                'max_output_difference_without_demos': max_action_difference(
                    tuned, policy, probes)})
            print(json.dumps(rows[-1]), flush=True)
    result = {'command': ' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
              'pretraining_mix': mix, 'held_out_demonstrated': held_out,
              'demos_per_task': args.demos, 'rows': rows,
              'wall_s': round(time.perf_counter() - t0, 1)}
    Path(args.out).write_text(json.dumps(result, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
