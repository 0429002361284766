"""
Checkpoint transfer time and control-cycle misses of the policy node, by request vs inline.

The policy node runs in its own process (``python -m active_finetune.nodes.policy_node``, the
shipped checkpoint, CPU, timer trigger at ``--rate-hz``, an empty ``checkpoint_cache_dir``) in a
random ROS domain; this process publishes 640x480 camera frames, joint states and poses at 30 Hz
and logs every ``policy/twist`` (each is one control cycle) and ``policy/status``.  A third
process (this script with ``--serve``) plays the trainer: it serves two checkpoints with
:class:`~active_finetune.nodes.checkpoint_transfer.CheckpointServer` and announces what this
process tells it to.  The checkpoints have the shipped policy's tasks: ``small`` is the shipped
architecture with perturbed weights (0.44 MB), ``large`` wider layers (``--large-mb``, ~50 MB);
each phase has checkpoints of its own (a sha256 already running is not loaded again).  Their
announced path does not exist on the policy's side, so the policy must fetch them.

Phases, in this order, each preceded by ``--idle-s`` seconds without a transfer (``idle_*``):

1. ``fetch_small``: announced by reference; the node fetches the bytes and swaps;
2. ``fetch_large``: the same for the large checkpoint;
3. ``inline_small``, ``inline_large``: the same weights carried as base64 in the announcement,
   as the trainer did before (still read from older trainers), for comparison.

Per phase: from the announcement to the swap (``policy/status`` shows the new sha256), the
transfer time the node logs (``fetched weights ... in X s``), and over that window the twist
rate, the worst gap between two twists and the control cycles missed (a gap of g periods counts
round(g) - 1 misses), also for the transfer alone (``transfer_missed_cycles``: from the
announcement until the fetch ended, before verification, loading and the swap).  The phases run
``--repeats`` times, each with a new policy node and an empty cache; ``summary`` lists each
figure per repeat.  Every process gets the package's large shared-memory Fast DDS profile, as
under ``af-runner``.

Usage, from the repository root (python: .venv/bin/python)::

    python -m bench.bench_checkpoint_transfer --output results/bench_checkpoint_transfer.json
"""

import argparse
import base64
import json
import os
from pathlib import Path
import random
import re
import subprocess
import sys
import tempfile
import time

from bench.bench_fault_inputs import Bench, resident_mb, stop_group
import numpy as np

CHECKPOINT = 'checkpoints/pretrained_mt10_skewed'
TASK = 'reach-v3'


def make_checkpoints(trainer_dir, large_mb):
    """
    Write a small and a large checkpoint for each way of transfer (four different sha256).

    :param trainer_dir: the 'trainer machine' directory
    :param large_mb: approximate size of the large ones
    :return: dict name -> (path, sha256, size bytes), names small_fetch, large_fetch,
        small_inline, large_inline
    """
    import torch
    from active_finetune.policy.checkpoint import load_checkpoint, save_checkpoint, WEIGHTS_FILE
    from active_finetune.policy.model import PolicyConfig, TaskPolicy
    base = dict(read_config()['policy'])
    for hidden in range(1024, 16384, 128):  # the width that makes float32 weights ~large_mb
        size = sum(p.numel() for p in TaskPolicy(PolicyConfig(**{
            **base, 'hidden_dim': hidden, 'feature_dim': hidden})).state_dict().values()) * 4
        if size >= large_mb * 1e6:
            break
    out = {}
    for version, name in enumerate(('small_fetch', 'large_fetch', 'small_inline',
                                    'large_inline'), start=1):
        torch.manual_seed(version)
        if name.startswith('small'):
            policy, _ = load_checkpoint(CHECKPOINT)
            with torch.no_grad():
                for param in policy.parameters():
                    param.add_(1e-4 * version)
        else:
            policy = TaskPolicy(PolicyConfig(**{**base, 'hidden_dim': hidden,
                                                'feature_dim': hidden}))
        path = trainer_dir / f'v{version:04d}'
        sha = save_checkpoint(policy, path, {'kind': 'bench', 'version': version})
        out[name] = (path, sha, (path / WEIGHTS_FILE).stat().st_size)
    return out


def read_config():
    """:return: the shipped checkpoint's config.json."""
    return json.loads((Path(CHECKPOINT) / 'config.json').read_text())


def serve(args):
    """Be the trainer: serve the checkpoints, announce on each stdin line 'name version mode'."""
    import rclpy
    from active_finetune.nodes.checkpoint_transfer import CheckpointServer
    from active_finetune.nodes.qos import LATCHED_QOS
    from active_finetune.payloads import CheckpointAnnounced, encode
    from active_finetune.policy.checkpoint import CONFIG_FILE, WEIGHTS_FILE
    from std_msgs.msg import String
    rclpy.init(domain_id=args.domain_id)
    node = rclpy.create_node('bench_trainer')
    server = CheckpointServer(node)
    publisher = node.create_publisher(String, 'trainer/checkpoint', LATCHED_QOS)
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(node)
    checkpoints = json.loads(args.serve)
    for path, sha, _ in checkpoints.values():
        server.offer(Path(path) / WEIGHTS_FILE, sha)
    print('serving', flush=True)
    import select
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], 0.01)
        executor.spin_once(timeout_sec=0.01)
        if not ready:
            continue
        line = sys.stdin.readline().split()
        if not line:
            break
        name, version, mode = line[0], int(line[1]), line[2]
        path, sha, size = checkpoints[name]
        config = json.loads((Path(path) / CONFIG_FILE).read_text())
        if mode == 'fetch':
            payload = CheckpointAnnounced(version=version, sha256=sha,
                                          path=f'/trainer_only{path}', config=config,
                                          size_bytes=size, chunk_bytes=server.chunk_bytes)
            text = encode(payload)
        else:
            text = json.dumps({'version': version, 'sha256': sha, 'path': '', 'config': config,
                               'weights_b64': base64.b64encode(
                                   (Path(path) / WEIGHTS_FILE).read_bytes()).decode()})
        started = time.monotonic()
        publisher.publish(String(data=text))
        print(f'announced {started} {len(text)}', flush=True)
    server.close()
    node.destroy_node()
    rclpy.shutdown()


def misses(times, start_s, stop_s, period_s):
    """:return: control cycles missed in a window (gaps of g periods: round(g) - 1 each)."""
    gaps = np.diff([start_s] + [t for t in times if start_s <= t <= stop_s] + [stop_s])
    return int(sum(max(0, round(gap / period_s) - 1) for gap in gaps))


def window(bench, start_s, stop_s, period_s):
    """Summarise the control cycles of a window."""
    result = bench.window(start_s, stop_s)
    with bench._lock:
        times = list(bench.twist_times)
    result['missed_cycles'] = misses(times, start_s, stop_s, period_s)
    result['duration_s'] = round(stop_s - start_s, 3)
    return result


def main(argv=None):
    """Run the phases; print and write the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rate-hz', type=float, default=20.0)
    parser.add_argument('--large-mb', type=float, default=50.0)
    parser.add_argument('--idle-s', type=float, default=4.0)
    parser.add_argument('--repeats', type=int, default=3, help='policy node runs, fresh cache')
    parser.add_argument('--swap-timeout-s', type=float, default=180.0)
    parser.add_argument('--output', default='')
    parser.add_argument('--phases', default='fetch_small,fetch_large,inline_small,inline_large')
    parser.add_argument('--serve', default='', help='internal: be the trainer process')
    parser.add_argument('--domain-id', type=int, default=0, help='internal: with --serve')
    args = parser.parse_args(argv)
    if args.serve:
        serve(args)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix='transfer_bench_'))
    from active_finetune.nodes.qos import write_fastdds_profile
    os.environ.update(write_fastdds_profile(tmp / 'fastdds_large_shm.xml'))
    checkpoints = make_checkpoints(tmp / 'trainer', args.large_mb)
    domain_id = random.SystemRandom().randint(101, 200)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id))
    summary = {'load_average_start': os.getloadavg(), 'rate_hz': args.rate_hz,
               'sizes_bytes': {k: v[2] for k, v in checkpoints.items()}, 'repeats': []}
    for repeat in range(args.repeats):
        # A new trainer process too: its latched announcement must not reach the next node.
        trainer = subprocess.Popen(
            [sys.executable, '-m', 'bench.bench_checkpoint_transfer', '--domain-id',
             str(domain_id), '--serve',
             json.dumps({k: [str(p), s, n] for k, (p, s, n) in checkpoints.items()})],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert trainer.stdout.readline().strip() == 'serving'
            summary['repeats'].append(run_policy(args, env, domain_id, tmp / f'run{repeat}',
                                                 trainer, checkpoints))
        finally:
            trainer.stdin.close()
            trainer.wait(20.0)
    summary['load_average_end'] = os.getloadavg()
    summary['cpus'] = os.cpu_count()
    summary['summary'] = {}
    for phase in summary['repeats'][0]:
        runs = [r[phase] for r in summary['repeats']]
        summary['summary'][phase] = {
            key: [r.get(key) for r in runs] for key in (
                'announce_to_swap_s', 'fetch_s', 'rate_hz', 'worst_gap_ms', 'missed_cycles',
                'transfer_missed_cycles', 'duration_s') if any(key in r for r in runs)}
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2) + '\n')
    return 0


def run_policy(args, env, domain_id, run_dir, trainer, checkpoints):
    """Start a policy node with an empty cache, run the phases, stop it; :return: phase dict."""
    print(f'run {run_dir.name}', flush=True)
    run_dir.mkdir(parents=True)
    log_path = run_dir / 'policy.log'
    log = open(log_path, 'w')
    policy = subprocess.Popen(
        [sys.executable, '-m', 'active_finetune.nodes.policy_node', '--ros-args',
         '-p', f'checkpoint_path:={CHECKPOINT}', '-p', 'device:=cpu', '-p', f'task:={TASK}',
         '-p', f'control_rate_hz:={args.rate_hz}', '-p', 'max_input_age_s:=0.5',
         '-p', f'checkpoint_cache_dir:={run_dir / "robot_cache"}'],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    bench = Bench(domain_id)
    period_s = 1.0 / args.rate_hz
    plan = {'fetch_small': ('small_fetch', 1, 'fetch'), 'fetch_large': ('large_fetch', 2, 'fetch'),
            'inline_small': ('small_inline', 3, 'inline'),
            'inline_large': ('large_inline', 4, 'inline')}
    phases = {}
    try:
        bench.start_sending()
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline and not any(
                s['state'] == 'running' for _, s in bench.statuses):
            time.sleep(0.2)
        time.sleep(2.0)
        for phase in args.phases.split(','):
            name, version, mode = plan[phase]
            idle_start = time.monotonic()
            time.sleep(args.idle_s)
            phases[f'idle_before_{phase}'] = window(bench, idle_start, time.monotonic(),
                                                    period_s)
            trainer.stdin.write(f'{name} {version} {mode}\n')
            trainer.stdin.flush()
            _, started, length = trainer.stdout.readline().split()
            started = float(started)
            sha = checkpoints[name][1]
            swapped = None
            deadline = time.monotonic() + args.swap_timeout_s
            while swapped is None and time.monotonic() < deadline:
                time.sleep(0.02)
                with bench._lock:
                    swapped = next((t for t, s in bench.statuses
                                    if s['version'] == version and s['sha256'] == sha), None)
            stop = swapped if swapped is not None else time.monotonic()
            result = window(bench, started, stop, period_s)
            result.update(announcement_chars=int(length), swapped=swapped is not None,
                          announce_to_swap_s=round(stop - started, 3),
                          size_bytes=checkpoints[name][2])
            fetched = re.findall(rf'fetched weights {sha[:12]} .* in ([0-9.]+) s',
                                 log_path.read_text())
            result['fetch_s'] = float(fetched[-1]) if mode == 'fetch' and fetched else None
            if result['fetch_s'] is not None:
                # The transfer alone (before verification, loading and the swap).
                with bench._lock:
                    times = list(bench.twist_times)
                result['transfer_missed_cycles'] = misses(
                    times, started, started + result['fetch_s'], period_s)
            result['policy_rss_mb'] = round(resident_mb(policy.pid) or -1.0, 1)
            phases[phase] = result
            print(phase, json.dumps(result), flush=True)
    finally:
        bench.close()
        stop_group(policy)
        log.close()
    return phases


if __name__ == '__main__':
    raise SystemExit(main())
