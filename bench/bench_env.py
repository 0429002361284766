"""
Simulator throughput: environment steps per second with and without rendering.

Steps the Meta-World wrapper with the scripted operator's actions for a few tasks, once state-only
(no camera) and once per image size, all in one process, side by side, and writes the numbers to
``results/bench_env.json``.

    .venv/bin/python bench/bench_env.py --steps 600
"""

import argparse
import json
import os
from pathlib import Path
import platform
import sys
import time

os.environ.setdefault('MUJOCO_GL', 'egl')

from active_finetune.atomic_io import atomic_write_bytes  # noqa: E402
from active_finetune.sim.metaworld_env import MetaWorldEnv, SimConfig  # noqa: E402
from active_finetune.sim.operators import ScriptedOperator  # noqa: E402

TASKS = ('reach-v3', 'pick-place-v3', 'door-open-v3')


def steps_per_second(image_size, steps, max_steps):
    """
    Time ``steps`` environment steps (resets excluded) spread over :data:`TASKS`.

    :param image_size: camera image side in pixels; 0 = state only
    :param steps: steps in all
    :param max_steps: episode length before a reset
    :return: steps per second
    """
    elapsed = 0.0
    done_steps = 0
    with MetaWorldEnv(SimConfig(image_size=image_size, max_steps=max_steps)) as env:
        seed = 0
        while done_steps < steps:
            task = TASKS[seed % len(TASKS)]
            obs = env.reset(task, seed)
            operator = ScriptedOperator(task, seed=seed)
            done = False
            while not done and done_steps < steps:
                action = operator.act(obs.state)
                t0 = time.perf_counter()
                obs, _, done = env.step(action)
                elapsed += time.perf_counter() - t0
                done_steps += 1
            seed += 1
    return done_steps / elapsed


def main(argv=None):
    """Run the benchmark and write results/bench_env.json."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--steps', type=int, default=600)
    parser.add_argument('--image-sizes', default='0,64,96,224',
                        help='0 = state only (no rendering)')
    parser.add_argument('--out', default=str(Path(__file__).resolve().parents[1] / 'results' /
                                             'bench_env.json'))
    args = parser.parse_args(argv)
    rows = []
    for size in (int(s) for s in args.image_sizes.split(',')):
        rate = steps_per_second(size, args.steps, max_steps=200)
        rows.append({'image_size': size, 'rendering': size > 0, 'steps_per_s': round(rate, 1)})
        label = f'{size}x{size} image' if size else 'state only'
        print(f'{label:>14s}: {rate:8.1f} steps/s')
    result = {'command': 'bench/bench_env.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
              'steps': args.steps,
              'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                          'mujoco_gl': os.environ.get('MUJOCO_GL')},
              'rows': rows}
    atomic_write_bytes(Path(args.out), json.dumps(result, indent=1).encode())
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
