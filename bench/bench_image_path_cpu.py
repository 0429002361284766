"""
CPU time per camera frame of the two image paths to the policy, beyond the model.

Wall-clock latency on a loaded machine mostly measures waiting for a CPU; the CPU time a thread
spends (``time.thread_time``) does not.  For each path this times, per 640x480 frame:

- source: what the camera node does for the policy (``full``: the rgb8 message of the full frame;
  ``policy_stream``: :func:`active_finetune.policy.inputs.resize_image` to 96x96 and its message)
  and the serialisation DDS does (``rclpy.serialization.serialize_message``);
- policy: what the policy node does before the network (deserialise the raw message,
  ``image_to_rgb``, and the resize to the model's input size that ``PolicyInference`` applies:
  a 640x480 -> 96x96 area resize on the full path, a no-op on the stream).

The paths alternate frame by frame, so both see the same machine.  Writes
``results/bench_image_path_cpu.json``.

    .venv/bin/python bench/bench_image_path_cpu.py --frames 300
"""

import argparse
import json
import os
from pathlib import Path
import platform
import time

from active_finetune.nodes.conversions import image_to_rgb, rgb_to_image
from active_finetune.policy.inputs import resize_image
import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, SIZE = 640, 480, 96


def one_frame(frame, path):
    """
    Run one frame through a path.

    :param frame: (480, 640, 3) uint8
    :param path: 'full' or 'policy_stream'
    :return: (source CPU s, policy CPU s)
    """
    started = time.thread_time()
    sent = frame if path == 'full' else resize_image(frame, SIZE)
    raw = serialize_message(rgb_to_image(sent, 1.0, 'camera'))
    source_s = time.thread_time() - started
    started = time.thread_time()
    image = resize_image(image_to_rgb(deserialize_message(raw, Image)), SIZE)
    policy_s = time.thread_time() - started
    assert image.shape == (SIZE, SIZE, 3)
    return source_s, policy_s


def main(argv=None):
    """
    Run the benchmark and write the JSON results.

    :param argv: command-line arguments
    :return: exit status
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('--frames', type=int, default=300)
    parser.add_argument('--out', default=str(REPOSITORY_ROOT / 'results' /
                                             'bench_image_path_cpu.json'))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(8)]
    load_before = os.getloadavg()
    times = {'full': ([], []), 'policy_stream': ([], [])}
    for index in range(args.frames):
        order = ('full', 'policy_stream') if index % 2 == 0 else ('policy_stream', 'full')
        for path in order:
            source_s, policy_s = one_frame(pool[index % len(pool)], path)
            times[path][0].append(source_s)
            times[path][1].append(policy_s)

    def stats(values):
        array = np.asarray(values) * 1e3
        return {'p50_ms': round(float(np.percentile(array, 50)), 3),
                'p99_ms': round(float(np.percentile(array, 99)), 3),
                'mean_ms': round(float(array.mean()), 3)}

    rows = {path: {'source_cpu': stats(source), 'policy_cpu_before_model': stats(policy),
                   'bytes_per_frame': (WIDTH * HEIGHT * 3 if path == 'full' else SIZE * SIZE * 3)}
            for path, (source, policy) in times.items()}
    record = {'benchmark': 'bench/bench_image_path_cpu.py', 'frames': args.frames,
              'image': f'{WIDTH}x{HEIGHT} rgb8 -> {SIZE}x{SIZE}', 'clock': 'time.thread_time',
              'machine': {'cpus': os.cpu_count(), 'python': platform.python_version()},
              'load_average_before': load_before, 'load_average_after': os.getloadavg(),
              'paths': rows}
    Path(args.out).write_text(json.dumps(record, indent=1) + '\n')
    for path, row in rows.items():
        print(f"{path:>14}: source {row['source_cpu']['p50_ms']:.3f} ms p50, policy before the "
              f"model {row['policy_cpu_before_model']['p50_ms']:.3f} ms p50 / "
              f"{row['policy_cpu_before_model']['p99_ms']:.3f} ms p99")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
