"""
Per-round overhead of the trainer and the task selector with episodes by announcement.

Records ``--episodes`` synthetic episodes (``--frames`` camera frames of ``--image-side`` pixels,
rgb8 raw, through the recorder's core) into a temporary dataset directory, then measures, side by
side in this one process, what each round costs the two readers before and after episodes came
by announcement (``recorder/episode``) with a decoded-episode cache by sha256:

- ``trainer_poll``: the trainer's check every ``poll_period_s`` (1 s): before, a listing of the
  dataset directory (:func:`list_saved_episodes`: the index read, every file checked, the
  directory walked); after, :meth:`EpisodeCatalog.entries` (in memory);
- ``trainer_round_load``: the round process loading every episode of the round at the policy's
  ``--policy-side``: before, every MCAP file decoded again (:func:`load_episode`); after, through
  :class:`EpisodeDiskCache` holding the episodes of the earlier rounds (the B = ``--new``
  episodes new this round are decoded and stored);
- ``selector_rescore``: the episodes part of a re-scoring after B new episodes: before, a
  listing plus decoding the new files (the selector cached decoded episodes by path); after, the
  catalog plus :class:`EpisodeMemoryCache` (the new ones decoded).

Each is repeated ``--repeats`` times on fresh caches; the median and min are reported, with the
load average at start and end (2-core machine shared with other work).

Usage, from the repository root (python: .venv/bin/python)::

    python -m bench.bench_episode_announcements --output results/bench_episode_announcements.json
"""

import argparse
import json
import os
from pathlib import Path
import shutil
import statistics
import tempfile
import time

from active_finetune.data.episode_catalog import EpisodeCatalog, EpisodeDiskCache, \
    EpisodeMemoryCache
from active_finetune.data.episode_index import list_saved_episodes
from active_finetune.data.mcap_episode import load_episode
from active_finetune.data.recorder import EpisodeRecorder, RecorderSettings
from active_finetune.payloads import EpisodeSaved
import numpy as np

GRIPPER = 'gripper_finger_distance'
TASKS = ('reach-v3', 'push-v3', 'pick-place-v3', 'drawer-close-v3', 'button-press-topdown-v3')


def record_dataset(dataset, episodes, frames, side):
    """Record synthetic episodes through the recorder's core; :return: seconds taken."""
    started = time.perf_counter()
    recorder = EpisodeRecorder(RecorderSettings(dataset_dir=str(dataset), min_free_disk_mb=0.0,
                                                image_format='raw'))
    try:
        for number in range(episodes):
            rng = np.random.default_rng(number)
            recorder.start(TASKS[number % len(TASKS)])
            t0 = 1_700_000_000_000_000_000 + number * 100_000_000_000
            base = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
            for step in range(frames):
                t = t0 + step * 50_000_000
                recorder.add_joint_state(['arm', GRIPPER], [0.1, 0.05], stamp_ns=t,
                                         log_time_ns=t)
                recorder.add_ee_pose(tuple(rng.uniform(-0.2, 0.2, 3)), stamp_ns=t, log_time_ns=t)
                recorder.add_twist(tuple(rng.uniform(-0.2, 0.2, 3)), stamp_ns=t, log_time_ns=t)
                recorder.add_gripper(1.0, log_time_ns=t)
                recorder.add_image(np.roll(base, step, axis=1), t, 'camera',
                                   log_time_ns=t + 1_000_000)
            recorder.stop(success=True)
            if not recorder.wait_idle(60.0):
                raise RuntimeError('recorder did not finish writing')
    finally:
        recorder.close()
    return time.perf_counter() - started


def announcement(entry):
    """Build the recorder/episode payload of a listed episode."""
    return EpisodeSaved(path=entry['path'], sha256=entry['sha256'], task=entry['task'],
                        success=entry['success'], frames=entry['frames'],
                        bag_path=entry['bag_path'] or '')


def timed(function):
    """:return: (seconds, result) of one call."""
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def summary(samples):
    """:return: dict of median and min in ms."""
    return {'median_ms': round(1e3 * statistics.median(samples), 2),
            'min_ms': round(1e3 * min(samples), 2), 'repeats': len(samples)}


def measure(dataset, cache_root, policy_side, new, repeats):
    """Measure before/after of each overhead; :return: dict."""
    listed = list_saved_episodes(dataset)
    old, fresh = listed[:-new], listed[-new:]
    size = (policy_side, policy_side)
    samples = {key: [] for key in (
        'trainer_poll_before', 'trainer_poll_after', 'trainer_round_load_before',
        'trainer_round_load_after', 'selector_rescore_before', 'selector_rescore_after')}
    for repeat in range(repeats):
        # Trainer, between rounds: one poll.
        samples['trainer_poll_before'].append(timed(lambda: list_saved_episodes(dataset))[0])
        catalog = EpisodeCatalog(dataset)
        catalog.rescan()
        samples['trainer_poll_after'].append(timed(catalog.entries)[0])

        # Trainer, a round: load every episode in the round process.
        samples['trainer_round_load_before'].append(timed(
            lambda: [load_episode(e['path'], image_size=size) for e in listed])[0])
        cache_dir = Path(cache_root) / f'disk_{repeat}'
        disk = EpisodeDiskCache(cache_dir, 4e9)
        for entry in old:  # the earlier rounds
            disk.load(entry['path'], entry['sha256'], size)
        disk = EpisodeDiskCache(cache_dir, 4e9)  # a new round process
        seconds, _ = timed(lambda: [disk.load(e['path'], e['sha256'], size) for e in listed])
        assert (disk.hits, disk.misses) == (len(old), new), (disk.hits, disk.misses)
        samples['trainer_round_load_after'].append(seconds)
        shutil.rmtree(cache_dir)

        # Selector, B new episodes: the episodes part of a re-scoring.
        by_path = {e['path']: load_episode(e['path'], image_size=size) for e in old}

        def before():
            demos = []
            for entry in list_saved_episodes(dataset):
                if entry['path'] not in by_path:
                    by_path[entry['path']] = load_episode(entry['path'], image_size=size)
                demos.append(by_path[entry['path']])
            return demos
        samples['selector_rescore_before'].append(timed(before)[0])
        catalog = EpisodeCatalog(dataset)
        for entry in old:
            catalog.add(announcement(entry))
        memory = EpisodeMemoryCache(4e9)
        for entry in old:
            memory.load(entry['path'], entry['sha256'], size)

        def after():
            for entry in fresh:
                catalog.add(announcement(entry))
            return [memory.load(e['path'], e['sha256'], size) for e in catalog.entries()]
        seconds, demos = timed(after)
        assert len(demos) == len(listed) and memory.misses == len(listed)
        samples['selector_rescore_after'].append(seconds)
    return {key: summary(value) for key, value in samples.items()}


def main(argv=None):
    """Record the dataset, measure, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--episodes', type=int, default=50)
    parser.add_argument('--frames', type=int, default=100)
    parser.add_argument('--image-side', type=int, default=96)
    parser.add_argument('--policy-side', type=int, default=96)
    parser.add_argument('--new', type=int, default=2, help='B: new episodes per round')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--output', default='results/bench_episode_announcements.json')
    args = parser.parse_args(argv)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix='bench_episodes_') as tmp:
        dataset = Path(tmp) / 'episodes'
        record_s = record_dataset(dataset, args.episodes, args.frames, args.image_side)
        mcap_bytes = sum(p.stat().st_size for p in dataset.rglob('*.mcap'))
        results = measure(dataset, Path(tmp) / 'cache', args.policy_side, args.new,
                          args.repeats)
    out = {'settings': vars(args), 'dataset_mb': round(mcap_bytes / 1e6, 1),
           'record_s': round(record_s, 1), 'results': results,
           'loadavg_start': [round(v, 2) for v in load_start],
           'loadavg_end': [round(v, 2) for v in os.getloadavg()], 'cpus': os.cpu_count()}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + '\n')
    for key, value in results.items():
        print(f'{key:28s} median {value["median_ms"]:9.2f} ms  min {value["min_ms"]:9.2f} ms')
    print(f'load average {out["loadavg_start"]} -> {out["loadavg_end"]}')


if __name__ == '__main__':
    main()
