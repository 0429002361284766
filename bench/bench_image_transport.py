"""
Measure image transport between two processes: loss and latency per QoS and Fast DDS set-up.

A publisher process sends 640x480 rgb8 sensor_msgs/Image at 30 Hz for a few
seconds to a subscriber process (both started with the ``spawn`` method, each
configuration in its own random ROS domain).  The latency of a frame is its
arrival time minus its header stamp (both the system clock of this host).

Configurations compare best effort against reliable at several depths, with
Fast DDS's default transports, with a shared-memory transport whose segment
holds whole frames (the package's profile from active_finetune.nodes.qos, given
through FASTRTPS_DEFAULT_PROFILES_FILE, written to a temporary file), with that
profile and a 4 MB segment, with data sharing requested in that profile, and
with Fast DDS's LARGE_DATA builtin transports (FASTDDS_BUILTIN_TRANSPORTS).

Usage, from the repository root (``-m`` puts the package on the path of the
spawned processes)::

    .venv/bin/python -m bench.bench_image_transport --duration-s 10 \
        --output results/bench_image_transport.json
"""

import argparse
import json
import multiprocessing
import os
from pathlib import Path
import platform
import queue
import random
import sys
import tempfile
import time

from active_finetune.nodes.qos import FASTDDS_LARGE_SHM_PROFILE_XML, FASTDDS_PROFILES_ENV
from active_finetune.nodes.qos import FASTDDS_SHM_SEGMENT_BYTES
import numpy as np

DATA_SHARING_ENDPOINTS = """\
  <data_writer profile_name="data_sharing_writer" is_default_profile="true">
    <qos><data_sharing><kind>AUTOMATIC</kind></data_sharing></qos>
  </data_writer>
  <data_reader profile_name="data_sharing_reader" is_default_profile="true">
    <qos><data_sharing><kind>AUTOMATIC</kind></data_sharing></qos>
  </data_reader>"""

CONFIGURATIONS = [
    # name, reliability, depth, transport
    ('best_effort_depth5_default', 'best_effort', 5, 'default'),
    ('reliable_depth1_default', 'reliable', 1, 'default'),
    ('reliable_depth5_default', 'reliable', 5, 'default'),
    ('reliable_depth10_default', 'reliable', 10, 'default'),
    ('best_effort_depth5_large_shm', 'best_effort', 5, 'large_shm'),
    ('reliable_depth1_large_shm', 'reliable', 1, 'large_shm'),
    ('reliable_depth5_large_shm', 'reliable', 5, 'large_shm'),
    ('reliable_depth10_large_shm', 'reliable', 10, 'large_shm'),
    ('reliable_depth5_data_sharing', 'reliable', 5, 'data_sharing'),
    ('reliable_depth5_shm_4mb', 'reliable', 5, 'shm_4mb'),
    ('best_effort_depth5_large_data', 'best_effort', 5, 'large_data'),
    ('reliable_depth5_large_data', 'reliable', 5, 'large_data'),
]


def transport_environment(transport, directory):
    """
    Environment variables that select a Fast DDS transport set-up.

    :param transport: 'default', 'large_shm' (the package's profile), 'data_sharing'
        (that profile with data sharing requested), 'shm_4mb' (that profile with a
        4 MB segment) or 'large_data'
    :param directory: where to write an XML profile
    :return: dict of environment variables
    :raises ValueError: for an unknown transport
    """
    if transport == 'default':
        return {}
    if transport == 'large_data':
        return {'FASTDDS_BUILTIN_TRANSPORTS': 'LARGE_DATA'}
    if transport in ('large_shm', 'data_sharing', 'shm_4mb'):
        xml = FASTDDS_LARGE_SHM_PROFILE_XML
        if transport == 'data_sharing':
            xml = xml.replace('</profiles>', DATA_SHARING_ENDPOINTS + '\n</profiles>')
        if transport == 'shm_4mb':
            xml = xml.replace(f'<segment_size>{FASTDDS_SHM_SEGMENT_BYTES}</segment_size>',
                              f'<segment_size>{4 * 1024 * 1024}</segment_size>')
            xml = xml.replace(
                f'<maxMessageSize>{FASTDDS_SHM_SEGMENT_BYTES // 4}</maxMessageSize>',
                f'<maxMessageSize>{1024 * 1024}</maxMessageSize>')
        path = Path(directory) / f'{transport}.xml'
        path.write_text(xml)
        return {FASTDDS_PROFILES_ENV: str(path)}
    raise ValueError(f'unknown transport {transport!r}')


def make_qos(reliability, depth):
    """
    Build the QoS profile under test.

    :param reliability: 'reliable' or 'best_effort'
    :param depth: keep-last depth
    :return: rclpy QoSProfile
    """
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=DurabilityPolicy.VOLATILE)


def run_subscriber(environment, reliability, depth, ready, done, results):
    """
    Receive images until ``done`` is set and report arrival statistics.

    :param environment: environment variables to set before ROS starts
    :param reliability: QoS reliability
    :param depth: QoS depth
    :param ready: event set once the subscription exists
    :param done: event that ends the run
    :param results: queue receiving a dict
    """
    os.environ.update(environment)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from active_finetune.nodes.conversions import header_stamp_s, image_to_rgb

    rclpy.init()
    node = rclpy.create_node('bench_image_subscriber')
    latencies_s, sequences = [], []

    def on_image(msg):
        arrival_s = time.time()
        image_to_rgb(msg)
        latencies_s.append(arrival_s - header_stamp_s(msg))
        sequences.append(int(msg.header.frame_id))

    node.create_subscription(Image, 'bench/image', on_image, make_qos(reliability, depth))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    ready.set()
    while not done.is_set():
        executor.spin_once(timeout_sec=0.05)
    results.put({'role': 'subscriber', 'latencies_s': latencies_s, 'sequences': sequences})
    node.destroy_node()
    rclpy.shutdown()


def run_publisher(environment, reliability, depth, rate_hz, duration_s, results):
    """
    Publish 640x480 rgb8 images at ``rate_hz`` once a subscriber is matched.

    :param environment: environment variables to set before ROS starts
    :param reliability: QoS reliability
    :param depth: QoS depth
    :param rate_hz: publish rate
    :param duration_s: how long to publish
    :param results: queue receiving a dict
    """
    os.environ.update(environment)
    import rclpy
    from sensor_msgs.msg import Image

    from active_finetune.nodes.conversions import rgb_to_image

    rclpy.init()
    node = rclpy.create_node('bench_image_publisher')
    publisher = node.create_publisher(Image, 'bench/image', make_qos(reliability, depth))
    deadline = time.monotonic() + 20.0
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    matched = publisher.get_subscription_count() > 0
    time.sleep(1.0)
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    count = int(round(rate_hz * duration_s))
    publish_s = []
    start = time.monotonic()
    for sequence in range(count if matched else 0):
        wake = start + sequence / rate_hz
        time.sleep(max(0.0, wake - time.monotonic()))
        before = time.perf_counter()
        msg = rgb_to_image(rgb, time.time(), str(sequence))
        publisher.publish(msg)
        publish_s.append(time.perf_counter() - before)
    time.sleep(1.0)
    results.put({'role': 'publisher', 'published': len(publish_s), 'matched': matched,
                 'publish_s': publish_s})
    node.destroy_node()
    rclpy.shutdown()


def percentile_ms(values_s, q):
    """
    Return a percentile in milliseconds, or NaN for no values.

    :param values_s: values in seconds
    :param q: percentile in [0, 100]
    :return: milliseconds
    """
    return float(np.percentile(values_s, q) * 1e3) if len(values_s) else float('nan')


def wait_for_result(results, processes, timeout_s):
    """
    Take the next result from the queue while the processes that should send it are alive.

    :param results: multiprocessing queue
    :param processes: processes that must stay alive until they report
    :param timeout_s: deadline
    :return: the result dict
    :raises RuntimeError: when a process died or the deadline passed without a result
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=0.5)
        except queue.Empty:
            dead = [p.name for p in processes if not p.is_alive()]
            if dead:
                raise RuntimeError(f'benchmark process(es) {dead} exited without a result')
    raise RuntimeError(f'no benchmark result within {timeout_s} s')


def run_configuration(name, reliability, depth, transport, rate_hz, duration_s, directory):
    """
    Run one publisher/subscriber pair and summarise it.

    :param name: configuration name
    :param reliability: QoS reliability
    :param depth: QoS depth
    :param transport: transport set-up (see :func:`transport_environment`)
    :param rate_hz: publish rate
    :param duration_s: publish duration
    :param directory: temporary directory for XML profiles
    :return: dict of results
    """
    environment = transport_environment(transport, directory)
    environment['ROS_DOMAIN_ID'] = str(random.randint(1, 100))
    environment['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    spawn = multiprocessing.get_context('spawn')
    ready, done, results = spawn.Event(), spawn.Event(), spawn.Queue()
    subscriber = spawn.Process(target=run_subscriber,
                               args=(environment, reliability, depth, ready, done, results))
    subscriber.start()
    ready.wait(30.0)
    publisher = spawn.Process(target=run_publisher,
                              args=(environment, reliability, depth, rate_hz, duration_s, results))
    publisher.start()
    try:
        publisher_result = wait_for_result(results, [publisher, subscriber], duration_s + 60.0)
        done.set()
        subscriber_result = wait_for_result(results, [subscriber], 30.0)
    finally:
        done.set()
        for process in (publisher, subscriber):
            process.join(10.0)
            if process.is_alive():
                process.kill()
    published = publisher_result['published']
    received = len(set(subscriber_result['sequences']))
    latencies_s = subscriber_result['latencies_s']
    return {
        'name': name, 'reliability': reliability, 'depth': depth, 'transport': transport,
        'matched': publisher_result['matched'],
        'published': published, 'received': received,
        'lost_pct': 100.0 * (published - received) / published if published else float('nan'),
        'received_rate_hz': received / duration_s,
        'latency_p50_ms': percentile_ms(latencies_s, 50),
        'latency_p99_ms': percentile_ms(latencies_s, 99),
        'latency_max_ms': percentile_ms(latencies_s, 100),
        'publish_call_p50_ms': percentile_ms(publisher_result['publish_s'], 50),
        'publish_call_p99_ms': percentile_ms(publisher_result['publish_s'], 99),
    }


def format_table(rows):
    """
    Format results as a Markdown table.

    :param rows: result dicts
    :return: table text
    """
    lines = ['| configuration | published | received | lost % | p50 ms | p99 ms | max ms '
             '| publish p50 ms |',
             '|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['published']} | {r['received']} | {r['lost_pct']:.1f} "
            f"| {r['latency_p50_ms']:.2f} | {r['latency_p99_ms']:.2f} | {r['latency_max_ms']:.2f} "
            f"| {r['publish_call_p50_ms']:.2f} |")
    return '\n'.join(lines)


def main(argv=None):
    """
    Run the benchmark and write a JSON report.

    :param argv: command-line arguments (default: sys.argv[1:])
    :return: process exit code
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--duration-s', type=float, default=10.0)
    parser.add_argument('--rate-hz', type=float, default=30.0)
    parser.add_argument('--only', nargs='*', default=None,
                        help='configuration names to run (default: all)')
    parser.add_argument('--output', type=Path, default=Path('results/bench_image_transport.json'))
    args = parser.parse_args(argv)
    configurations = [c for c in CONFIGURATIONS if args.only is None or c[0] in args.only]
    rows = []
    with tempfile.TemporaryDirectory(prefix='bench_image_transport_') as directory:
        for name, reliability, depth, transport in configurations:
            rows.append(run_configuration(name, reliability, depth, transport, args.rate_hz,
                                          args.duration_s, directory))
            print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    report = {
        'image': '640x480 rgb8', 'rate_hz': args.rate_hz, 'duration_s': args.duration_s,
        'host': {'machine': platform.machine(), 'cpus': os.cpu_count(),
                 'python': platform.python_version(),
                 'load_average_1min': os.getloadavg()[0]},
        'latency': 'arrival time minus header stamp, system clock, same host',
        'results': rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + '\n')
    print(format_table(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
