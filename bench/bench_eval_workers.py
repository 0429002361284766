"""
Evaluation in worker processes: a simulator per episode (before) against one per worker (now).

Runs :func:`active_finetune.sim.rollouts.evaluate_policy` on the shipped image checkpoint with
``--workers`` processes, once with ``chunk_size=1`` (every episode handed to a worker alone, so
each builds a new MuJoCo simulator and renderer: how evaluation ran before) and once with the
default split (one share of the episodes and one simulator per worker), alternating for
``--rounds`` rounds in one run so the machine's load falls on both alike.  Both must give the
same success rates (every episode starts with a seeded reset).  Records wall time per run, the
speed-up of the medians, the load average before and after, and writes
``results/bench_eval_workers.json``.

    .venv/bin/python bench/bench_eval_workers.py --rounds 2
"""

import argparse
import json
import os
from pathlib import Path
import platform
import shlex
import sys
import time

os.environ.setdefault('MUJOCO_GL', 'egl')

from active_finetune.atomic_io import atomic_write_bytes  # noqa: E402
from active_finetune.policy.checkpoint import load_checkpoint  # noqa: E402
from active_finetune.sim.metaworld_env import SimConfig  # noqa: E402
from active_finetune.sim.rollouts import evaluate_policy  # noqa: E402
import numpy as np  # noqa: E402

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
MODES = {'simulator_per_episode': 1, 'simulator_per_worker': None}
"""Name -> evaluate_policy chunk_size."""


def write_record(args, argv, sim_config, tasks, load_before, runs, rates):
    """
    Write the results so far (after every run, so a run stopped early leaves its numbers).

    :return: the record written
    """
    medians = {name: float(np.median(values)) for name, values in runs.items() if values}
    complete = len(medians) == len(MODES)
    record = {
        'benchmark': 'bench/bench_eval_workers.py',
        'command': ' '.join(shlex.quote(a) for a in [
            '.venv/bin/python', 'bench/bench_eval_workers.py',
            *(sys.argv[1:] if argv is None else argv)]),
        'checkpoint': Path(args.checkpoint).name, 'tasks': tasks,
        'episodes_per_task': args.episodes, 'max_steps': args.max_steps,
        'image_size': sim_config.image_size, 'workers': args.workers, 'rounds': args.rounds,
        'rounds_completed': min(len(values) for values in runs.values()),
        'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                    'mujoco_gl': os.environ.get('MUJOCO_GL')},
        'load_average_before': load_before, 'load_average_after': os.getloadavg(),
        'seconds': runs, 'median_s': medians,
        'speedup': round(medians['simulator_per_episode'] / medians['simulator_per_worker'], 2)
        if complete else None,
        'success_rates': rates,
        'same_success_rates': complete and (rates['simulator_per_episode']
                                            == rates['simulator_per_worker']),
    }
    atomic_write_bytes(Path(args.out), (json.dumps(record, indent=1) + '\n').encode())
    return record


def main(argv=None):
    """
    Run the benchmark and write the JSON results.

    :param argv: command-line arguments
    :return: exit status
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('--checkpoint', default=str(REPOSITORY_ROOT / 'checkpoints' /
                                                    'pretrained_mt10_skewed'))
    parser.add_argument('--tasks', default='reach-v3,push-v3,pick-place-v3')
    parser.add_argument('--episodes', type=int, default=4, help='episodes per task')
    parser.add_argument('--max-steps', type=int, default=60, help='episode horizon (steps)')
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--out', default=str(REPOSITORY_ROOT / 'results' /
                                             'bench_eval_workers.json'))
    args = parser.parse_args(argv)
    policy, _ = load_checkpoint(args.checkpoint)
    tasks = [t for t in args.tasks.split(',') if t]
    sim_config = SimConfig(image_size=policy.config.image_size, max_steps=args.max_steps)
    load_before = os.getloadavg()
    runs = {name: [] for name in MODES}
    rates = {}
    for round_index in range(args.rounds):
        order = list(MODES) if round_index % 2 == 0 else list(MODES)[::-1]
        for name in order:
            started = time.perf_counter()
            result = evaluate_policy(policy, tasks, args.episodes, sim_config=sim_config,
                                     base_seed=0, workers=args.workers, progress=False,
                                     chunk_size=MODES[name])
            seconds = time.perf_counter() - started
            runs[name].append(round(seconds, 2))
            rates.setdefault(name, result)
            if result != rates[name]:
                raise RuntimeError(f'{name}: success rates changed between rounds: {result} '
                                   f'against {rates[name]}')
            print(f'round {round_index + 1} {name}: {seconds:.1f} s {result}', flush=True)
            write_record(args, argv, sim_config, tasks, load_before, runs, rates)
    record = write_record(args, argv, sim_config, tasks, load_before, runs, rates)
    print(f"speed-up {record['speedup']}x, same success rates: {record['same_success_rates']}; "
          f'wrote {args.out}')
    same = record['same_success_rates']
    return 0 if same else 1


if __name__ == '__main__':
    raise SystemExit(main())
