"""
Recording core throughput: 30 Hz 640x480 frames + 100 Hz joint states (+ pose, teleop) for N s.

Feeds :class:`active_finetune.data.recorder.EpisodeRecorder` in real time from one thread (no DDS),
as the node's subscriptions would, then stops, saves and loads the episode back.  Reports samples
dropped by the bounded queue, the writer's throughput and the save latency; writes
results/bench_recorder.json.

    .venv/bin/python bench/bench_recorder.py --seconds 10
"""

import argparse
import json
import os
from pathlib import Path
import platform
import tempfile
import time

from active_finetune.data.mcap_episode import load_episode
from active_finetune.data.recorder import EpisodeRecorder, RecorderSettings
import numpy as np

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def run(seconds, image_format, queue_size, dataset_dir):
    """
    Record one episode in real time and measure it.

    :param seconds: episode length (s)
    :param image_format: 'jpeg' or 'png'
    :param queue_size: recorder queue size
    :param dataset_dir: where to write
    :return: dict of measurements
    """
    finished = []
    recorder = EpisodeRecorder(RecorderSettings(
        dataset_dir=str(dataset_dir), min_free_disk_mb=0.0, image_format=image_format,
        queue_size=queue_size), on_finished=finished.append)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    base = (base // 32 * 32).astype(np.uint8)  # camera-like: some texture, compressible
    recorder.start('pick-place')
    start_s = time.monotonic()
    next_state_s = next_frame_s = start_s
    offered = {'image': 0, 'state': 0}
    frame = 0
    while time.monotonic() - start_s < seconds:
        now_s = time.monotonic()
        if now_s >= next_state_s:
            recorder.add_joint_state([f'joint{i}' for i in range(7)] + ['gripper_finger_distance'],
                                     rng.normal(size=8), rng.normal(size=8), rng.normal(size=8))
            recorder.add_ee_pose(rng.normal(size=3))
            offered['state'] += 1
            if offered['state'] % 2 == 0:  # 50 Hz teleop
                recorder.add_twist(rng.normal(size=3) * 0.05)
                recorder.add_gripper(1.0)
                recorder.add_joy([0.0] * 6, [0, 0])
            next_state_s += 0.01
        if now_s >= next_frame_s:
            image = np.roll(base, frame * 4, axis=1)
            recorder.add_image(image, time.time_ns(), 'camera')
            offered['image'] += 1
            frame += 1
            next_frame_s += 1.0 / 30.0
        time.sleep(max(0.0, min(next_state_s, next_frame_s) - time.monotonic()))
    session = recorder.active
    stop_s = time.monotonic()
    recorder.stop()
    assert recorder.wait_idle(120.0), 'writer did not finish'
    save_s = time.monotonic() - stop_s
    result = finished[-1]
    size_mb = Path(result['path']).stat().st_size / 1e6
    load_start_s = time.monotonic()
    episode = load_episode(result['path'], image_size=(96, 96))
    load_s = time.monotonic() - load_start_s
    elapsed_s = stop_s - start_s
    return {
        'image_format': image_format, 'queue_size': queue_size, 'seconds': round(elapsed_s, 2),
        'frames_offered': offered['image'], 'joint_states_offered': offered['state'],
        'frames_written': result['frames'], 'dropped': dict(session.dropped),
        'dropped_total': result['dropped'],
        'frame_rate_hz': round(offered['image'] / elapsed_s, 2),
        'file_mb': round(size_mb, 2), 'write_mb_per_s': round(size_mb / (elapsed_s + save_s), 2),
        'save_after_stop_s': round(save_s, 3), 'steps_loaded': len(episode),
        'load_s': round(load_s, 2), 'state': result['state']}


def main():
    """Run the benchmark and write results/bench_recorder.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('--seconds', type=float, default=10.0, help='episode length (s)')
    parser.add_argument('--queue-size', type=int, default=512, help='recorder queue size')
    parser.add_argument('--formats', default='jpeg,png', help='image formats to measure')
    parser.add_argument('--out', default=str(REPOSITORY_ROOT / 'results' / 'bench_recorder.json'))
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for image_format in args.formats.split(','):
            measured = run(args.seconds, image_format, args.queue_size,
                           Path(tmp) / image_format)
            runs.append(measured)
            print(json.dumps(measured))
    record = {'benchmark': 'bench/bench_recorder.py', 'host': platform.node(),
              'cpus': os.cpu_count(), 'load_average': os.getloadavg(),
              'python': platform.python_version(), 'runs': runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + '\n')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
