"""
Control-cycle rate and worst gap of the policy node while it receives oversize inputs.

The policy node runs in its own process (``python -m active_finetune.nodes.policy_node``, timer
trigger at ``--rate-hz``, the shipped checkpoint, CPU) in a random ROS domain; this process
publishes 640x480 camera frames, joint states and poses at 30 Hz and logs every ``policy/twist``
(zero or not: each is one control cycle).  The faults come from a third process (this script
with ``--inject``), so building and publishing them delays neither the normal inputs nor the
time stamps of the received twists.  Phases of ``--phase-s`` seconds each:

1. ``baseline``: nothing else;
2. ``big_images``: ``--big-side`` x ``--big-side`` rgb8 frames (4000 x 4000 = 48 MB each) at
   ``--big-rate-hz`` on the camera topic, between the 640x480 ones;
3. ``baseline_again``: 640x480 frames only;
4. ``big_announcement``: one ``trainer/checkpoint`` of ``--announcement-mb`` MB (valid JSON,
   weights_b64 of random bytes, so it is refused after decoding: a tampered checkpoint).

Per phase: the twist rate (Hz), the worst gap between two twists (ms), the policy/status codes
seen, and the policy process's resident memory at the end (MB).  Every process gets the package's
large shared-memory Fast DDS profile, as under ``af-runner`` (``--default-transport``: not).

Usage, from the repository root (``PYTHONPATH=<other checkout>`` measures another version)::

    .venv/bin/python -m bench.bench_fault_inputs --output /tmp/bench_fault_inputs.json
"""

import argparse
import base64
import json
import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

CHECKPOINT = 'checkpoints/pretrained_mt10_skewed'
TASK = 'reach-v3'


def stop_group(process, timeout_s=20.0):
    """
    Stop a ``start_new_session`` child's process group: SIGTERM, then SIGKILL after ``timeout_s``.

    :param process: the group leader's Popen
    :param timeout_s: seconds to wait for a clean exit
    """
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def resident_mb(pid):
    """
    Read a process's resident memory.

    :param pid: process id
    :return: VmRSS in MB, or None when the process is gone
    """
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class Bench:
    """
    Publish the policy's inputs and log its outputs, on a context of its own.

    :param domain_id: ROS domain of the run
    """

    def __init__(self, domain_id):
        import rclpy
        from active_finetune.nodes.conversions import rgb_to_image, s_to_stamp
        from active_finetune.nodes.qos import COMMAND_QOS, IMAGE_QOS, LATCHED_QOS, SENSOR_QOS
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String
        self._rgb_to_image, self._s_to_stamp = rgb_to_image, s_to_stamp
        self._types = {'pose': PoseStamped, 'joint': JointState}
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node('fault_bench', context=self.context)
        self._image_pub = self.node.create_publisher(Image, 'camera/image_raw', IMAGE_QOS)
        self._joint_pub = self.node.create_publisher(JointState, 'joint_states', SENSOR_QOS)
        self._pose_pub = self.node.create_publisher(PoseStamped, 'ee_pose', SENSOR_QOS)
        self._lock = threading.Lock()
        self.twist_times = []
        self.statuses = []
        self.node.create_subscription(TwistStamped, 'policy/twist', self._on_twist, COMMAND_QOS)
        self.node.create_subscription(String, 'policy/status', self._on_status, LATCHED_QOS)
        self.image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        self._executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._stop = threading.Event()
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()
        self._sender = threading.Thread(target=self._send, daemon=True)

    def _spin(self):
        while not self._stop.is_set():
            self._executor.spin_once(timeout_sec=0.05)

    def _on_twist(self, msg):
        with self._lock:
            self.twist_times.append(time.monotonic())

    def _on_status(self, msg):
        with self._lock:
            self.statuses.append((time.monotonic(), json.loads(msg.data)))

    def start_sending(self):
        """Start publishing the normal inputs at 30 Hz."""
        self._sender.start()

    def _send(self):
        while not self._stop.is_set():
            now = time.monotonic()
            stamp_s = self.node.get_clock().now().nanoseconds * 1e-9
            self._image_pub.publish(self._rgb_to_image(self.image, stamp_s, 'camera'))
            joints = self._types['joint'](name=['gripper_finger_distance'], position=[0.05])
            joints.header.stamp = self._s_to_stamp(stamp_s)
            self._joint_pub.publish(joints)
            pose = self._types['pose']()
            pose.header.stamp = self._s_to_stamp(stamp_s)
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.0, 0.6, 0.2
            self._pose_pub.publish(pose)
            time.sleep(max(0.0, 1.0 / 30.0 - (time.monotonic() - now)))

    def window(self, start_s, stop_s):
        """
        Summarise the twists and statuses of a time window.

        :param start_s: monotonic start
        :param stop_s: monotonic stop
        :return: dict rate_hz, worst_gap_ms, twists, codes
        """
        with self._lock:
            times = [t for t in self.twist_times if start_s <= t <= stop_s]
            codes = sorted({s['code'] for t, s in self.statuses if start_s <= t <= stop_s})
            refused = [s['refused'] for t, s in self.statuses
                       if start_s <= t <= stop_s and s.get('refused')]
        gaps = np.diff([start_s] + times + [stop_s])
        return {'rate_hz': round(len(times) / (stop_s - start_s), 2),
                'worst_gap_ms': round(float(gaps.max()) * 1e3, 1), 'twists': len(times),
                'codes': codes, 'refused': refused[-1]['reason'][:160] if refused else None}

    def close(self):
        """Stop publishing and spinning."""
        self._stop.set()
        for thread in (self._sender, self._spinner):
            if thread.is_alive():
                thread.join(5.0)
        self._executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def announcement_text(megabytes):
    """
    Build a well-formed announcement carrying ``megabytes`` MB of (random, tampered) weights.

    :param megabytes: size of the JSON text
    :return: str
    """
    config = json.loads((Path(CHECKPOINT) / 'config.json').read_text())
    raw = os.urandom(int(megabytes * 1e6 * 3 / 4))
    return json.dumps({'path': '', 'sha256': 'f' * 64, 'version': 99,
                       'step': 0, 'metrics': {}, 'config': config,
                       'weights_b64': base64.b64encode(raw).decode()})


def inject(args):
    """
    Publish one kind of fault (``--inject images|announcement``) in the ROS domain of the run.

    :param args: parsed command line
    """
    import rclpy
    from active_finetune.nodes.conversions import rgb_to_image
    from active_finetune.nodes.qos import IMAGE_QOS, LATCHED_QOS
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    rclpy.init(domain_id=args.domain_id)
    node = rclpy.create_node('fault_injector')
    if args.inject == 'images':
        publisher = node.create_publisher(Image, 'camera/image_raw', IMAGE_QOS)
        big = np.random.default_rng(1).integers(0, 255, (args.big_side, args.big_side, 3),
                                                dtype=np.uint8)
    else:
        publisher = node.create_publisher(String, 'trainer/checkpoint', LATCHED_QOS)
        text = announcement_text(args.announcement_mb)
    deadline = time.monotonic() + 60.0
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    print('injecting', flush=True)
    stop_s = time.monotonic() + args.phase_s + 1.0
    if args.inject == 'images':
        while time.monotonic() < stop_s:
            started = time.monotonic()
            stamp_s = node.get_clock().now().nanoseconds * 1e-9
            publisher.publish(rgb_to_image(big, stamp_s, 'camera'))
            time.sleep(max(0.0, 1.0 / args.big_rate_hz - (time.monotonic() - started)))
    else:
        publisher.publish(String(data=text))
        time.sleep(max(0.0, stop_s - time.monotonic()))  # latched: stay until the phase ends
    node.destroy_node()
    rclpy.shutdown()


def main(argv=None):
    """
    Run the phases and print (and optionally write) the summary.

    :param argv: command line
    :return: exit status
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--phase-s', type=float, default=6.0)
    parser.add_argument('--rate-hz', type=float, default=20.0)
    parser.add_argument('--big-side', type=int, default=4000)
    parser.add_argument('--big-rate-hz', type=float, default=5.0)
    parser.add_argument('--announcement-mb', type=float, default=50.0)
    parser.add_argument('--output', default='')
    parser.add_argument('--default-transport', action='store_true')
    parser.add_argument('--phases', default='baseline,big_images,baseline_again,big_announcement',
                        help='comma-separated subset of the phases, in this order')
    parser.add_argument('--inject', choices=('images', 'announcement'), default=None,
                        help='internal: be the fault-injecting process')
    parser.add_argument('--domain-id', type=int, default=0, help='internal: with --inject')
    args = parser.parse_args(argv)
    if args.inject:
        inject(args)
        return 0
    domain_id = random.SystemRandom().randint(101, 200)
    if not args.default_transport:
        from active_finetune.nodes.qos import write_fastdds_profile
        os.environ.update(write_fastdds_profile(
            Path(tempfile.mkdtemp(prefix='fault_bench_')) / 'fastdds_large_shm.xml'))
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id))
    policy = subprocess.Popen(
        [sys.executable, '-m', 'active_finetune.nodes.policy_node', '--ros-args',
         '-p', f'checkpoint_path:={CHECKPOINT}', '-p', 'device:=cpu', '-p', f'task:={TASK}',
         '-p', f'control_rate_hz:={args.rate_hz}', '-p', 'max_input_age_s:=0.5'],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    bench = Bench(domain_id)
    summary = {'python_path': os.environ.get('PYTHONPATH', ''), 'load_average': os.getloadavg(),
               'default_transport': args.default_transport, 'phases': {}}
    try:
        bench.start_sending()
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline and not any(
                s['state'] == 'running' for _, s in bench.statuses):
            time.sleep(0.2)
        time.sleep(2.0)
        for phase, kind in (('baseline', None), ('big_images', 'images'),
                            ('baseline_again', None), ('big_announcement', 'announcement')):
            if phase not in args.phases.split(','):
                continue
            injector = None
            if kind is not None:
                injector = subprocess.Popen(
                    [sys.executable, '-m', 'bench.bench_fault_inputs', '--inject', kind,
                     '--domain-id', str(domain_id)] + [
                        f'--{name.replace("_", "-")}={getattr(args, name)}' for name in (
                            'phase_s', 'big_side', 'big_rate_hz', 'announcement_mb')],
                    env=env, stdout=subprocess.PIPE, text=True)
                injector.stdout.readline()  # 'injecting': start-up is not part of the phase
            start = time.monotonic()
            time.sleep(args.phase_s)
            result = bench.window(start, time.monotonic())
            if kind == 'announcement':
                result['refused_by_end'] = next(
                    (s['refused']['reason'][:160] for _, s in reversed(bench.statuses)
                     if s.get('refused')), None)
            if injector is not None:
                injector.wait(60.0)
                injector.stdout.close()
            result['policy_rss_mb'] = round(resident_mb(policy.pid) or -1.0, 1)
            summary['phases'][phase] = result
            print(phase, json.dumps(result), flush=True)
    finally:
        bench.close()
        stop_group(policy)
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
