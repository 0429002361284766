"""
AMF selection time: one full greedy selection (B picks) on random embeddings of paper-like size.

For every combination of task count (candidates = targets), total target states and embedding
dimension it builds random embeddings scaled to unit mean squared norm (as
:func:`active_finetune.amf.targets.build_embeddings` does), then times
:func:`active_finetune.amf.selection.amf_select` for each batch size, repeating and reporting the
median.  The paper asks for selection under 1 s per round.  Writes results/bench_selection.json.

With ``--reference DIR`` (another checkout of the package, e.g. ``git worktree add /tmp/before
<commit>``) every configuration is also timed with that checkout's code, in a subprocess that
keeps running: per repeat one run of each version back to back (order alternating), so both run
side by side under the same load; each row then gets ``reference_median_s``,
``speedup_paired_median`` (median over the repeats of reference / this), ``speedup_of_minima``
and whether both chose the same tasks.

    .venv/bin/python bench/bench_selection.py --repeats 3
    .venv/bin/python bench/bench_selection.py --repeats 3 --reference /tmp/before
"""

import argparse
import json
import os
from pathlib import Path
import platform
import shlex
import subprocess
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


class ReferenceServer:
    """
    Another checkout's code in a subprocess that times one selection per request.

    :param reference: directory of the other checkout (put first on PYTHONPATH)
    :param args: parsed command line (sizes, seed, rho2 of the inputs)
    """

    def __init__(self, reference, args):
        command = [sys.executable, str(Path(__file__).resolve()), '--serve',
                   '--seed', str(args.seed), '--candidate-states', str(args.candidate_states),
                   '--demo-states', str(args.demo_states), '--rho2', str(args.rho2)]
        self.process = subprocess.Popen(
            command, env=dict(os.environ, PYTHONPATH=str(reference)), cwd=str(reference),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def time_once(self, tasks, target_states, dim, batch_size, blas_threads):
        """
        Time one selection there.

        :return: (seconds, chosen)
        """
        self.process.stdin.write(f'{tasks},{target_states},{dim},{batch_size},'
                                 f'{blas_threads or "default"}\n')
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        return reply['seconds'], reply['chosen']

    def close(self):
        """End the subprocess."""
        self.process.stdin.close()
        self.process.wait(30)


def serve(args):
    """Answer ``tasks,targets,dim,B,threads`` lines with one timed selection each (JSON)."""
    cached = {}
    for line in sys.stdin:
        tasks, target_states, dim, batch_size, threads = line.strip().split(',')
        key = (int(tasks), int(target_states), int(dim))
        if key not in cached:
            cached.clear()
            cached[key] = random_inputs(*key, args.candidate_states, args.demo_states,
                                        args.rho2, args.seed)
        names, inputs = cached[key]
        start_s = time.perf_counter()
        result = amf_select(names, {}, int(batch_size), inputs,
                            blas_threads=_threads(threads)[0])
        seconds = time.perf_counter() - start_s
        print(json.dumps({'seconds': seconds, 'chosen': result.chosen}), flush=True)


def measure_paired(server, tasks, target_states, dim, batch_size, blas_threads, args):
    """
    Time one configuration here and in the reference, one run of each back to back per repeat.

    The order alternates between repeats; the speed-up is the median of the per-pair ratios, so
    a load that changes over the run falls on both versions alike.

    :return: dict of the configuration and both versions' timings (s)
    """
    names, inputs = random_inputs(tasks, target_states, dim, args.candidate_states,
                                  args.demo_states, args.rho2, args.seed)
    mine, theirs, chosen = [], [], {}

    def here():
        start_s = time.perf_counter()
        chosen['here'] = amf_select(names, {}, batch_size, inputs,
                                    blas_threads=blas_threads).chosen
        mine.append(time.perf_counter() - start_s)

    def there():
        seconds, chosen['reference'] = server.time_once(tasks, target_states, dim, batch_size,
                                                        blas_threads)
        theirs.append(seconds)

    for repeat in range(args.repeats):
        for run in ((here, there) if repeat % 2 == 0 else (there, here)):
            run()
    ratios = np.asarray(theirs) / np.asarray(mine)
    return {'tasks': tasks, 'target_states': target_states, 'dim': dim, 'batch_size': batch_size,
            'blas_threads': blas_threads or 'default',
            'candidate_rows': tasks * args.candidate_states, 'demo_rows': args.demo_states,
            'median_s': round(float(np.median(mine)), 4),
            'min_s': round(float(np.min(mine)), 4), 'max_s': round(float(np.max(mine)), 4),
            'reference_median_s': round(float(np.median(theirs)), 4),
            'reference_min_s': round(float(np.min(theirs)), 4),
            'speedup_paired_median': round(float(np.median(ratios)), 2),
            'speedup_of_minima': round(float(np.min(theirs) / np.min(mine)), 2),
            'repeats': args.repeats, 'chosen': chosen['here'],
            'same_choice_as_reference': chosen['here'] == chosen['reference']}


def git_commit(directory):
    """
    Name the commit a checkout is at.

    :param directory: checkout
    :return: commit hash, or '' when it is not a git checkout
    """
    result = subprocess.run(['git', '-C', str(directory), 'rev-parse', 'HEAD'],
                            capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ''


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
    parser.add_argument('--reference', default='',
                        help='another checkout of the package, timed side by side')
    parser.add_argument('--serve', action='store_true',
                        help='internal: time selections requested on stdin (reference side)')
    parser.add_argument('--out', default=str(REPOSITORY_ROOT / 'results' / 'bench_selection.json'))
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f'--repeats must be >= 1, got {args.repeats}')
    if args.serve:
        serve(args)
        return
    server = ReferenceServer(args.reference, args) if args.reference else None
    load_before = os.getloadavg()
    runs = []
    print(f"{'tasks':>5} {'targets':>7} {'dim':>4} {'B':>2} {'blas':>7} {'median_s':>9} "
          f"{'min_s':>7} {'max_s':>7}")
    for tasks in args.tasks:
        for target_states in args.target_states:
            for dim in args.dims:
                for batch_size in args.batch_sizes:
                    for threads in args.blas_threads:
                        line = ''
                        if server is None:
                            row = measure(tasks, target_states, dim, batch_size, threads, args)
                        else:
                            row = measure_paired(server, tasks, target_states, dim, batch_size,
                                                 threads, args)
                            line = (f" {row['reference_median_s']:>9.3f} "
                                    f"{row['speedup_paired_median']:>6.2f}x")
                        runs.append(row)
                        print(f'{tasks:>5} {target_states:>7} {dim:>4} {batch_size:>2} '
                              f"{row['blas_threads']:>7} {row['median_s']:>9.3f} "
                              f"{row['min_s']:>7.3f} {row['max_s']:>7.3f}" + line, flush=True)
    if server is not None:
        server.close()
    record = {'benchmark': 'bench/bench_selection.py',
              'command': ' '.join(shlex.quote(a) for a in [sys.executable] + sys.argv),
              'machine': machine_info(), 'load_average_before': load_before,
              'load_average_after': os.getloadavg(),
              'reference': {'path': args.reference, 'commit': git_commit(args.reference)}
              if args.reference else None,
              'settings': {'candidate_states': args.candidate_states,
                           'demo_states': args.demo_states, 'rho2': args.rho2,
                           'repeats': args.repeats, 'seed': args.seed},
              'runs': runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + '\n')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
