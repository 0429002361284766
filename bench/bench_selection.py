"""
AMF selection time: one full greedy selection (B picks) on random embeddings of paper-like size.

For every combination of task count (candidates = targets), total target states and embedding
dimension it builds random embeddings scaled to unit mean squared norm (as
:func:`active_finetune.amf.targets.build_embeddings` does), then times
:func:`active_finetune.amf.selection.amf_select` for each batch size, repeating and reporting the
median.  The paper asks for selection under 1 s per round.  Writes results/bench_selection.json.

    .venv/bin/python bench/bench_selection.py --repeats 3
"""

import argparse
import json
import os
from pathlib import Path
import platform
import shlex
import sys
import time

from active_finetune.amf.selection import amf_select, SelectionInputs
import numpy as np
import scipy

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def random_inputs(tasks, target_states, dim, candidate_states, demo_states, rho2, seed):
    """
    Random selection inputs: target states split evenly over the tasks.

    :param tasks: number of tasks (each a candidate and a target)
    :param target_states: total target rows over all tasks
    :param dim: embedding dimension p
    :param candidate_states: fantasised rows per candidate m
    :param demo_states: rows of the conditioning set D
    :param rho2: noise variance
    :param seed: random seed
    :return: (task names, :class:`SelectionInputs`)
    """
    rng = np.random.default_rng(seed)
    names = [f'task-{i:02d}' for i in range(tasks)]
    scale = 1.0 / np.sqrt(dim)
    per_task = np.full(tasks, target_states // tasks)
    per_task[:target_states % tasks] += 1
    targets = {t: (rng.normal(size=(n, dim)) * scale, rng.uniform(0.1, 1.0, n))
               for t, n in zip(names, per_task)}
    candidates = {t: rng.normal(size=(candidate_states, dim)) * scale for t in names}
    demos = rng.normal(size=(demo_states, dim)) * scale
    return names, SelectionInputs(targets, candidates, demos, None, rho2)


def measure(tasks, target_states, dim, batch_size, blas_threads, args):
    """
    Time one configuration.

    :param tasks: number of tasks
    :param target_states: total target rows
    :param dim: embedding dimension
    :param batch_size: greedy picks B
    :param blas_threads: BLAS threads during selection (None: BLAS default)
    :param args: parsed command line
    :return: dict of the configuration and its timings (s)
    """
    names, inputs = random_inputs(tasks, target_states, dim, args.candidate_states,
                                  args.demo_states, args.rho2, args.seed)
    seconds = []
    for _ in range(args.repeats):
        start_s = time.perf_counter()
        result = amf_select(names, {}, batch_size, inputs, blas_threads=blas_threads)
        seconds.append(time.perf_counter() - start_s)
    return {'tasks': tasks, 'target_states': target_states, 'dim': dim, 'batch_size': batch_size,
            'blas_threads': blas_threads or 'default',
            'candidate_rows': tasks * args.candidate_states, 'demo_rows': args.demo_states,
            'median_s': round(float(np.median(seconds)), 4),
            'min_s': round(float(np.min(seconds)), 4), 'max_s': round(float(np.max(seconds)), 4),
            'repeats': args.repeats, 'chosen': result.chosen}


def machine_info():
    """
    Describe the machine the numbers come from.

    :return: dict of host, CPU, load and library versions
    """
    cpu = ''
    try:
        with open('/proc/cpuinfo') as info:
            cpu = next((line.split(':', 1)[1].strip() for line in info
                        if line.startswith('model name')), '')
    except OSError:
        cpu = platform.processor()
    blas = np.show_config(mode='dicts').get('Build Dependencies', {}).get('blas', {})
    return {'host': platform.node(), 'cpu': cpu, 'cpus': os.cpu_count(),
            'python': platform.python_version(), 'numpy': np.__version__,
            'scipy': scipy.__version__,
            'blas': '{} {}'.format(blas.get('name', ''), blas.get('version', '')),
            'blas_threads_env': {k: os.environ[k] for k in (
                'OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS') if k in os.environ}}


def _ints(text):
    return [int(v) for v in text.split(',') if v]


def _threads(text):
    return [None if v == 'default' else int(v) for v in text.split(',') if v]


def main():
    """Run the benchmark, print a table and write results/bench_selection.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('--tasks', type=_ints, default=[10, 50],
                        help='task counts, comma-separated')
    parser.add_argument('--target-states', type=_ints, default=[1000, 10000],
                        help='total target states over all tasks, comma-separated')
    parser.add_argument('--dims', type=_ints, default=[129, 516],
                        help='embedding dimensions, comma-separated')
    parser.add_argument('--batch-sizes', type=_ints, default=[1, 4],
                        help='greedy picks per selection B, comma-separated')
    parser.add_argument('--candidate-states', type=int, default=30,
                        help='fantasised rows per candidate task m (TargetConfig default)')
    parser.add_argument('--demo-states', type=int, default=400,
                        help='rows of the conditioning set D (e.g. 40 demos x 10 states)')
    parser.add_argument('--blas-threads', type=_threads, default=[1],
                        help="BLAS threads while selecting, comma-separated; 'default' leaves "
                             'BLAS as it is (the library default is 1)')
    parser.add_argument('--rho2', type=float, default=1.0, help='GP noise variance rho^2')
    parser.add_argument('--repeats', type=int, default=3, help='timed runs per configuration')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--out', default=str(REPOSITORY_ROOT / 'results' / 'bench_selection.json'))
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f'--repeats must be >= 1, got {args.repeats}')
    load_before = os.getloadavg()
    runs = []
    print(f"{'tasks':>5} {'targets':>7} {'dim':>4} {'B':>2} {'blas':>7} {'median_s':>9} "
          f"{'min_s':>7} {'max_s':>7}")
    for tasks in args.tasks:
        for target_states in args.target_states:
            for dim in args.dims:
                for batch_size in args.batch_sizes:
                    for threads in args.blas_threads:
                        row = measure(tasks, target_states, dim, batch_size, threads, args)
                        runs.append(row)
                        print(f'{tasks:>5} {target_states:>7} {dim:>4} {batch_size:>2} '
                              f"{row['blas_threads']:>7} {row['median_s']:>9.3f} "
                              f"{row['min_s']:>7.3f} {row['max_s']:>7.3f}", flush=True)
    record = {'benchmark': 'bench/bench_selection.py',
              'command': ' '.join(shlex.quote(a) for a in [sys.executable] + sys.argv),
              'machine': machine_info(), 'load_average_before': load_before,
              'load_average_after': os.getloadavg(),
              'settings': {'candidate_states': args.candidate_states,
                           'demo_states': args.demo_states, 'rho2': args.rho2,
                           'repeats': args.repeats, 'seed': args.seed},
              'runs': runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + '\n')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
