"""
Measure the operator dashboard in a real browser while the sim graph runs.

Starts the ``sim`` graph with the project runner (every node in its own process; no scripted
operator, no sim rollouts, so the trainer stays idle and the load is the camera, the policy and
the dashboard), gives the policy a task, and opens the page in Debian's headless Chromium driven
by playwright (``executable_path``: no browser download).  Phases, one after the other in the
same run:

1. ``clients_0``: nobody watches (the dashboard encodes no frame);
2. ``clients_1``: one page;
3. ``clients_10``: ten pages at once, each in its own Chromium process (ten operators' browsers;
   ten contexts of one Chromium left some pages unresponsive on the loaded 2-core machine);
4. ``ws_10``: ten plain websocket clients in one other Python process, which read every frame
   packet and decode nothing: the dashboard node serves ten clients without ten browsers
   rendering on the same CPUs (the frames' ``added`` time ends at the packet's arrival);
5. ``clients_0_after``: nobody watches again (brackets drifts of the machine's load).

Measured per phase:

- the policy node's control loop, from a ROS subscriber in this process: the arrival times of
  ``policy/twist`` (one per control cycle), their rate, the gaps between them, and the cycles
  missed (``sum(max(round(gap / period) - 1, 0))``, as in ``bench_policy_latency``);
- per page and per camera stream (``policy``: the policy's input view; ``full``: the camera
  frame, downscaled above ``full_max_width``), from the page's own ``window.afStats``: frames
  drawn per second, and the latencies of each drawn frame: ``added`` = the moment the page's
  ``drawImage`` into the canvas returned (``performance.timeOrigin + performance.now()``) minus
  the wall time at which the dashboard node's image callback received the message (so: queueing
  and JPEG encoding on the server, the websocket, JPEG decoding and drawing in the browser; the
  compositor shows the canvas at its next frame after that); ``end_to_end`` = the same draw time
  minus the image's header stamp (the sim bridge stamps each frame when it renders it);
  ``encode`` = the server's JPEG-encoded time minus the node's receive time;
- the camera's own rate: ``camera/image_raw`` messages received by the same subscriber node
  (the browser cannot show more frames than the camera sends);
- the offset between the page's clock and this process's ``time.time()`` (both wall clocks of
  the same host; from the shortest of five ``page.evaluate`` round trips, whose half-width
  bounds it);
- CPU seconds per second of the dashboard, policy and sim bridge process groups and of the whole
  machine (``/proc``), and ``os.getloadavg()``.

Usage, from the repository root::

    MUJOCO_GL=egl .venv/bin/python -m bench.bench_dashboard --phase-s 30 \
        --clients 0,1,10,ws10,0 --output results/bench_dashboard.json
"""

import argparse
import asyncio
import datetime
import json
import os
from pathlib import Path
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from active_finetune.dashboard.probe import free_port, get_state

import numpy as np

TASK = 'reach-v3'
GOAL_FPS = 10.0
GOAL_ADDED_MS = 150.0
STREAMS = ('policy', 'full')
CLOCK_TICKS = os.sysconf('SC_CLK_TCK')
PAGE_ANSWER_S = 15.0
"""A page that does not answer a call within this is counted as drawing nothing."""

RESET_PAGE = """() => {
  window.afStats.latencyMs = [];
  return performance.timeOrigin + performance.now();
}"""

READ_PAGE = """() => ({
  now: performance.timeOrigin + performance.now(),
  latency: window.afStats.latencyMs,
  errors: window.afStats.errors,
  visibility: document.visibilityState,
  connected: window.afStats.connected,
})"""


def log(text):
    """Print a progress line with the time to stderr."""
    print(f'{time.strftime("%H:%M:%S")} {text}', file=sys.stderr, flush=True)


def summary_ms(values):
    """
    Summarise latencies.

    :param values: milliseconds
    :return: dict with count, p50, p95, max (ms); count 0 alone when empty
    """
    values = [v for v in values if v is not None]
    if not values:
        return {'count': 0}
    array = np.asarray(values, dtype=float)
    return {'count': int(array.size), 'p50_ms': round(float(np.percentile(array, 50)), 1),
            'p95_ms': round(float(np.percentile(array, 95)), 1),
            'max_ms': round(float(array.max()), 1)}


def control_loop(arrivals_s, start_s, end_s, rate_hz):
    """
    Describe the policy node's control cycles from the arrival times of its actions.

    :param arrivals_s: sorted arrival times of policy/twist (s)
    :param start_s: window start (s)
    :param end_s: window end (s)
    :param rate_hz: the node's control rate
    :return: dict: actions, rate, gaps, cycles expected and missed
    """
    inside = np.asarray([t for t in arrivals_s if start_s <= t <= end_s])
    period_s = 1.0 / rate_hz
    gaps_s = np.diff(inside)
    missed = int(np.sum(np.maximum(np.round(gaps_s / period_s) - 1, 0))) if gaps_s.size else 0
    window_s = end_s - start_s
    return {
        'control_rate_hz': rate_hz, 'window_s': round(window_s, 2), 'actions': int(inside.size),
        'rate_hz': round(float(inside.size / window_s), 2) if window_s > 0 else None,
        'cycles_expected': int(window_s * rate_hz), 'cycles_missed': missed,
        'gaps_over_1_5_periods': int(np.sum(gaps_s > 1.5 * period_s)),
        'gap': summary_ms(list(gaps_s * 1e3)),
    }


def page_numbers(read, reset_ms):
    """
    Turn what a page recorded during a phase into frame rates and latencies per stream.

    :param read: the result of :data:`READ_PAGE` (None: the page did not answer)
    :param reset_ms: page time at which its record was emptied (ms; None: no answer)
    :return: dict; a page that did not answer has drawn no frame as far as anyone can tell
    """
    if read is None or reset_ms is None:
        none = {'frames': 0, 'fps': 0.0, 'added': summary_ms([]),
                'end_to_end': summary_ms([]), 'encode': summary_ms([])}
        return {'answered': False, 'streams': {stream: dict(none) for stream in STREAMS}}
    window_s = (read['now'] - reset_ms) / 1e3
    result = {'answered': True, 'window_s': round(window_s, 2), 'visibility': read['visibility'],
              'connected': read['connected'], 'errors': read['errors'][:5], 'streams': {}}
    for stream in STREAMS:
        frames = [f for f in read['latency'] if f['stream'] == stream]
        result['streams'][stream] = {
            'frames': len(frames),
            'fps': round(len(frames) / window_s, 2) if window_s > 0 else None,
            'added': summary_ms([f['added'] for f in frames]),
            'end_to_end': summary_ms([f['endToEnd'] for f in frames]),
            'encode': summary_ms([f['encoded'] for f in frames]),
        }
    return result


def clock_offset_ms(page, tries=5):
    """
    Measure the page's wall clock against ``time.time()``.

    :param page: playwright page
    :param tries: round trips; the shortest one gives the estimate
    :return: (offset ms: page minus this process, half that round trip ms)
    """
    samples = []
    for _ in range(tries):
        before = time.time()
        page_ms = bounded_evaluate(page, '() => performance.timeOrigin + performance.now()',
                                   10.0)
        after = time.time()
        if page_ms is not None:
            samples.append((after - before, page_ms - (before + after) / 2 * 1e3))
    if not samples:
        return None, None
    round_trip_s, offset = min(samples)
    return round(offset, 2), round(round_trip_s / 2 * 1e3, 2)


async def _ws_client(url, seconds, record):
    from active_finetune.dashboard.frames import parse_packet
    import websockets
    async with websockets.connect(url, max_size=None) as socket_:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                message = await asyncio.wait_for(socket_.recv(), left)
            except asyncio.TimeoutError:
                return
            if isinstance(message, bytes):
                arrival = time.time()
                header, _ = parse_packet(message)
                record.append((header['stream'], arrival, header['received_s'],
                               header['stamp_s'], header['encoded_s']))


def ws_worker(url, count, warmup_s, seconds):
    """
    Run ``count`` websocket clients for ``warmup_s + seconds``; print their frames as JSON.

    Started in its own process by :func:`run_ws_phase` (``python -c``).

    :param url: the page's URL (http)
    :param count: clients
    :param warmup_s: seconds before the measured window
    :param seconds: measured seconds
    """
    ws_url = url.replace('http://', 'ws://', 1).rstrip('/') + '/ws'
    records = [[] for _ in range(count)]

    async def run():
        await asyncio.gather(*(_ws_client(ws_url, warmup_s + seconds, r) for r in records))
    started = time.time()
    asyncio.run(run())
    start = started + warmup_s
    print(json.dumps({'start_s': start, 'end_s': time.time(), 'clients': [
        [r for r in record if r[1] >= start] for record in records]}))


def ws_numbers(record, window_s):
    """
    Frame rates and latencies of one websocket client.

    :param record: list of (stream, arrival, received_s, stamp_s, encoded_s)
    :param window_s: measured seconds
    :return: dict shaped as :func:`page_numbers`'s
    """
    result = {'window_s': round(window_s, 2), 'streams': {}}
    for stream in STREAMS:
        frames = [r for r in record if r[0] == stream]
        result['streams'][stream] = {
            'frames': len(frames), 'fps': round(len(frames) / window_s, 2),
            'added': summary_ms([(r[1] - r[2]) * 1e3 for r in frames]),
            'end_to_end': summary_ms([(r[1] - r[3]) * 1e3 for r in frames if r[3]]),
            'encode': summary_ms([(r[4] - r[2]) * 1e3 for r in frames]),
        }
    return result


class CpuMeter:
    """CPU seconds of process groups and of the whole machine, between two samples."""

    def __init__(self, groups):
        self.groups = dict(groups)

    @staticmethod
    def _group_ticks(pgid):
        total = 0
        for entry in os.listdir('/proc'):
            if not entry.isdigit():
                continue
            try:
                with open(f'/proc/{entry}/stat') as stat:
                    fields = stat.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
        return total

    @staticmethod
    def _machine():
        with open('/proc/stat') as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        idle = values[3] + values[4]
        return sum(values) - idle, sum(values)

    def sample(self):
        """:return: a sample to give to :meth:`between`."""
        return (time.monotonic(), {name: self._group_ticks(pgid)
                                   for name, pgid in self.groups.items()}, self._machine())

    def between(self, first, second):
        """:return: dict name -> CPU percent of one core, and the machine's busy percent."""
        elapsed_s = second[0] - first[0]
        result = {f'{name}_pct_of_one_core': round(
            100.0 * (second[1][name] - first[1][name]) / CLOCK_TICKS / elapsed_s, 1)
            for name in self.groups}
        busy = second[2][0] - first[2][0]
        total = second[2][1] - first[2][1]
        result['machine_busy_pct_of_all_cores'] = round(100.0 * busy / total, 1) if total else None
        return result


class Watcher:
    """This benchmark's ROS node: sets the policy's task, logs policy/twist arrival times."""

    def __init__(self, domain_id):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from geometry_msgs.msg import TwistStamped
        from std_msgs.msg import String
        from active_finetune.nodes.dashboard_node import CAMERA_QOS
        from active_finetune.nodes.qos import COMMAND_QOS, LATCHED_QOS
        from sensor_msgs.msg import Image
        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node('dashboard_bench_watcher', context=self.context)
        self.lock = threading.Lock()
        self.twists = []
        self.images = []
        self.node.create_subscription(TwistStamped, 'policy/twist', self._on_twist, COMMAND_QOS)
        self.node.create_subscription(Image, 'camera/image_raw', self._on_image, CAMERA_QOS,
                                      raw=True)
        self.task_pub = self.node.create_publisher(String, 'policy/task', LATCHED_QOS)
        self.task_pub.publish(String(data=TASK))
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while not self.stop.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.1)

    def _on_twist(self, msg):
        arrival = time.time()
        with self.lock:
            self.twists.append(arrival)

    def _on_image(self, raw):
        arrival = time.time()
        with self.lock:
            self.images.append(arrival)

    def arrivals(self):
        """:return: the arrival times of policy/twist so far (s, sorted)."""
        with self.lock:
            return list(self.twists)

    def camera_rate_hz(self, start_s, end_s):
        """:return: camera/image_raw messages received per second between two times."""
        with self.lock:
            count = sum(1 for t in self.images if start_s <= t <= end_s)
        return round(count / (end_s - start_s), 2)

    def close(self):
        """Stop spinning and shut the context down."""
        self.stop.set()
        self.thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


def wait_for(graph, predicate, what, timeout_s):
    """Poll ``predicate`` until true while every node runs; raise on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        graph.check()
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f'timed out after {timeout_s:.0f} s waiting for {what}')


DRAWING = ('() => window.afStats.connected && window.afStats.frames.full >= 3 '
           '&& window.afStats.frames.policy >= 3')
STATS = """() => ({connected: window.afStats.connected, frames: window.afStats.frames,
  states: window.afStats.states, errors: window.afStats.errors})"""


def bounded_evaluate(page, expression, timeout_s):
    """
    Evaluate a JavaScript function in a page, giving up after ``timeout_s``.

    ``page.evaluate`` waits without a deadline for a page whose main thread does not answer;
    ``wait_for_function`` (polled on a timer, not on animation frames) has one, and returns
    at once the truthy value the function gives.

    :return: the function's value, or None when the page did not answer in time
    """
    try:
        handle = page.wait_for_function(expression, polling=100, timeout=timeout_s * 1e3)
    except Exception:  # noqa: B902 - playwright's TimeoutError (or a closed page)
        return None
    return handle.json_value()


def open_pages(launch, url, count, timeout_s):
    """
    Open ``count`` pages, each in its own browser, and wait until each draws frames.

    A page that does not draw within ``timeout_s`` stays open and is measured as it is (its
    frame rate then tells); its state is given.

    :param launch: callable() -> a new playwright Browser
    :return: (pages, list per page of the seconds until it drew, or its afStats when it did not)
    """
    pages, ready = [], []
    started = time.monotonic()
    for index in range(count):
        page = launch().new_page(viewport={'width': 1500, 'height': 1000})
        page.set_default_timeout(timeout_s * 1e3)
        page.goto(url)
        pages.append(page)
        log(f'page {index + 1} of {count} loaded')
    for page in pages:
        left_s = max(1.0, timeout_s - (time.monotonic() - started))
        if bounded_evaluate(page, DRAWING, left_s):
            ready.append(round(time.monotonic() - started, 1))
        else:
            ready.append(bounded_evaluate(page, STATS, PAGE_ANSWER_S) or 'page did not answer')
    return pages, ready


def summarise_clients(clients):
    """
    Summarise the clients of a phase per stream.

    :param clients: list of :func:`page_numbers` / :func:`ws_numbers` dicts
    :return: dict stream -> fps_min, fps_median, added_p50_ms_median, added_p95_ms_max,
        meets_goal
    """
    result = {}
    for stream in STREAMS:
        per_client = [c['streams'][stream] for c in clients]
        fps = [c['fps'] for c in per_client]
        added_p50 = [c['added'].get('p50_ms') for c in per_client]
        added_p95 = [c['added'].get('p95_ms') for c in per_client]
        known_p50 = [v for v in added_p50 if v is not None]
        result[stream] = {
            'fps_min': min(fps), 'fps_median': round(float(np.median(fps)), 2),
            'added_p50_ms_median': round(float(np.median(known_p50)), 1) if known_p50 else None,
            'added_p95_ms_max': max([v for v in added_p95 if v is not None] or [None]),
            'meets_goal': bool(min(fps) >= GOAL_FPS and all(
                v is not None and v < GOAL_ADDED_MS for v in added_p50)),
        }
    return result


def measure(graph, seconds):
    """Wait ``seconds`` while checking the nodes; return the window (start, end) in time.time()."""
    start_s = time.time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        graph.check()
        time.sleep(0.5)
    return start_s, time.time()


def run_phase(spec, name, args, graph, watcher, meter, launch, url):
    """
    Run one phase: ``spec`` is a number of pages, or ``ws<N>`` for N websocket clients.

    :return: dict
    """
    websocket_clients = spec.startswith('ws')
    count = int(spec[2:] if websocket_clients else spec)
    log(f'phase {name}')
    pages, clients = [], []
    if websocket_clients:
        worker = subprocess.Popen(
            [sys.executable, '-c', 'import sys; from bench.bench_dashboard import ws_worker; '
             'ws_worker(sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:]))', url,
             str(count), str(args.warmup_s), str(args.phase_s)], stdout=subprocess.PIPE, text=True)
        time.sleep(args.warmup_s)
        cpu_start = meter.sample()
        start_s, end_s = measure(graph, args.phase_s)
        cpu_end = meter.sample()
        out, _ = worker.communicate(timeout=60)
        if worker.returncode != 0:
            raise RuntimeError(f'the websocket clients failed (status {worker.returncode})')
        record = json.loads(out)
        window_s = record['end_s'] - record['start_s']
        clients = [ws_numbers(r, window_s) for r in record['clients']]
    else:
        pages, ready = [], []
        if count:
            pages, ready = open_pages(launch, url, count, args.page_timeout_s)
        try:
            time.sleep(args.warmup_s)
            resets = [bounded_evaluate(page, RESET_PAGE, PAGE_ANSWER_S) for page in pages]
            cpu_start = meter.sample()
            start_s, end_s = measure(graph, args.phase_s)
            cpu_end = meter.sample()
            reads = [bounded_evaluate(page, READ_PAGE, PAGE_ANSWER_S) if reset else None
                     for page, reset in zip(pages, resets)]
            offsets = [clock_offset_ms(page) if read else (None, None)
                       for page, read in zip(pages, reads)]
        finally:
            for page in pages:
                page.context.browser.close()
        for read, reset_ms, (offset, half_rtt), drawn in zip(reads, resets, offsets, ready):
            numbers = page_numbers(read, reset_ms)
            numbers['drawing_after_s'] = drawn
            numbers['clock_offset_ms'] = offset
            numbers['clock_offset_bound_ms'] = half_rtt
            clients.append(numbers)
    state = get_state(url) or {}
    result = {'name': name, 'clients': count,
              'client_kind': 'websocket' if websocket_clients else 'chromium page',
              'camera_rate_hz': watcher.camera_rate_hz(start_s, end_s),
              'policy_loop': control_loop(watcher.arrivals(), start_s, end_s,
                                          args.control_rate_hz),
              'cpu': meter.between(cpu_start, cpu_end),
              'load_average_1_5_15_at_end': [round(v, 2) for v in os.getloadavg()],
              'policy_state_at_end': ((state.get('topics') or {}).get('policy/status')
                                      or {}).get('state')}
    if clients:
        result['streams'] = summarise_clients(clients)
        for stream in result['streams'].values():
            stream['fps_median_over_camera_rate'] = round(
                stream['fps_median'] / result['camera_rate_hz'], 2) \
                if result['camera_rate_hz'] else None
        result['per_client'] = clients
    return result


def main(argv=None):
    """
    Run the benchmark and write the JSON results.

    :param argv: command-line arguments
    :return: exit status
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--phase-s', type=float, default=30.0, help='measured seconds per phase')
    parser.add_argument('--warmup-s', type=float, default=3.0,
                        help='seconds between the pages drawing frames and the measurement')
    parser.add_argument('--clients', default='0,1,10,ws10,0',
                        help='comma list, one phase each, in order: a number of Chromium pages, '
                        'or ws<N> for N plain websocket clients')
    parser.add_argument('--control-rate-hz', type=float, default=20.0,
                        help="the policy node's control rate (set in the graph)")
    parser.add_argument('--start-timeout-s', type=float, default=240.0)
    parser.add_argument('--page-timeout-s', type=float, default=90.0,
                        help='how long the pages of a phase may take to draw frames')
    parser.add_argument('--output', default='results/bench_dashboard.json')
    args = parser.parse_args(argv)
    from active_finetune.runner import GraphRunner
    from playwright.sync_api import sync_playwright

    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    if not chromium:
        parser.error('chromium is not installed: run scripts/setup.sh (apt-get install chromium)')
    os.environ.setdefault('MUJOCO_GL', 'egl')
    domain_id = random.SystemRandom().randint(150, 230)
    port = free_port()
    url = f'http://127.0.0.1:{port}/'
    load_at_start = [round(v, 2) for v in os.getloadavg()]
    git = {'commit': subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True,
                                    text=True).stdout.strip(),
           'uncommitted_changes': [line[3:] for line in subprocess.run(
               ['git', 'status', '--porcelain', '--untracked-files=no'], capture_output=True,
               text=True).stdout.splitlines()]}
    tmp = tempfile.TemporaryDirectory(prefix='bench_dashboard_')
    dataset = Path(tmp.name) / 'episodes'
    overrides = {
        'sim_bridge.scripted_operator': False,
        'task_selector.sim_rollouts_per_task': 0, 'task_selector.dataset_dir': str(dataset),
        'demo_recorder.dataset_dir': str(dataset), 'trainer.dataset_dir': str(dataset),
        'trainer.checkpoint_dir': str(Path(tmp.name) / 'checkpoints'),
        'trainer.evaluate_episodes': 0, 'trainer.log_dir': str(Path(tmp.name) / 'tensorboard'),
        'policy.control_rate_hz': args.control_rate_hz,
        'dashboard.port': port, 'dashboard.dataset_dir': str(dataset),
    }
    watcher = Watcher(domain_id)
    phases = []
    graph = GraphRunner('sim', overrides=overrides, log_dir=Path(tmp.name) / 'logs',
                        env={'ROS_DOMAIN_ID': str(domain_id),
                             'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'})
    from active_finetune.dashboard.config import DashboardConfig
    dashboard_config = DashboardConfig(**{
        k: v for k, v in graph.graph.node('dashboard').parameters.items()
        if k in DashboardConfig.__dataclass_fields__})
    try:
        graph.start()
        meter = CpuMeter({name: graph.pid(name)
                          for name in ('dashboard', 'policy', 'sim_bridge')})
        t0 = time.monotonic()
        wait_for(graph, lambda: (get_state(url) or {}).get('camera', {}).get('rate_hz'),
                 'camera frames at the dashboard', args.start_timeout_s)
        wait_for(graph, lambda: len(watcher.arrivals()) > 40, 'policy/twist',
                 args.start_timeout_s)
        if watcher.node.count_publishers('policy/twist') != 1:
            raise RuntimeError(f'{watcher.node.count_publishers("policy/twist")} publishers of '
                               f'policy/twist in ROS domain {domain_id}: another graph shares '
                               'it; run again (the domain is drawn at random)')
        print(f'graph up in {time.monotonic() - t0:.0f} s; dashboard at {url}', flush=True)
        with sync_playwright() as playwright:
            def launch():
                return playwright.chromium.launch(executable_path=chromium, headless=True)
            probe = launch()
            browser_version = probe.version
            probe.close()
            for index, spec in enumerate(args.clients.split(',')):
                name = spec if spec.startswith('ws') else f'clients_{spec}'
                if name in [p['name'] for p in phases]:
                    name += '_after'
                phase = run_phase(spec, name, args, graph, watcher, meter, launch, url)
                phases.append(phase)
                print(json.dumps({k: phase.get(k) for k in (
                    'name', 'camera_rate_hz', 'policy_loop', 'cpu', 'streams')}), flush=True)
    except Exception:
        print(graph.log_tails(10), file=sys.stderr)
        raise
    finally:
        graph.stop()
        watcher.close()
        tmp.cleanup()

    command = 'MUJOCO_GL=egl .venv/bin/python -m bench.bench_dashboard ' + ' '.join(
        argv if argv is not None else sys.argv[1:])
    results = {
        'command': command.strip(),
        'date_utc': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
        'host': {'machine': platform.machine(), 'cpus': os.cpu_count(),
                 'python': platform.python_version(), 'browser': f'Debian chromium '
                 f'{browser_version} (headless, playwright)',
                 'load_average_1_5_15_at_start': load_at_start,
                 'load_average_1_5_15_at_end': [round(v, 2) for v in os.getloadavg()],
                 'note': 'the machine is shared: other jobs ran during the measurement'},
        'git': git,
        'graph': 'sim (no scripted operator, no sim rollouts, trainer idle); policy task '
                 f'{TASK}',
        'dashboard': {k: getattr(dashboard_config, k) for k in (
            'camera_fps', 'jpeg_quality', 'policy_image_size', 'full_max_width')},
        'goal': {'fps_min': GOAL_FPS, 'added_latency_max_ms': GOAL_ADDED_MS},
        'definitions': {
            'fps': "frames drawn into the stream's canvas per second of the phase, per page "
                   '(websocket clients: frame packets received per second)',
            'added': "page time when drawImage returned minus the dashboard node's receive "
                     'time of the image message (server queue + JPEG encode + websocket + '
                     'browser JPEG decode + draw); websocket clients: the packet arrival time '
                     "minus the node's receive time",
            'camera_rate_hz': 'camera/image_raw messages per second at a ROS subscriber in the '
                              'benchmark process (no client can show more)',
            'end_to_end': 'page time when drawImage returned minus the image header stamp '
                          '(the sim bridge stamps a frame when it renders it)',
            'encode': "the server's JPEG-encoded time minus the node's receive time",
            'clock_offset_ms': "page clock minus this process's time.time(), from the shortest "
                               'of five page.evaluate round trips; clock_offset_bound_ms is '
                               'half that round trip',
            'policy_loop': 'arrivals of policy/twist at a ROS subscriber in the benchmark '
                           'process; cycles_missed = sum(max(round(gap / period) - 1, 0))',
            'cpu': "CPU seconds per second of each node's process group (100 = one core) and "
                   'the busy share of all cores of the machine, over the phase',
            'meets_goal': "every client >= fps_min and every client's added p50 < "
                          'added_latency_max_ms',
        },
        'phases': phases,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=1) + '\n')
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
