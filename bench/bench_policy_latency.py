"""
Measure the policy node: image-in to action-out latency, the model's share of it, and swap cost.

Two processes, as the nodes of a graph run: in this one the policy node and a peer that receives
``policy/twist`` (each on its own rclpy context and executor thread: separate DDS participants);
in a spawned one the package's camera node (:class:`active_finetune.nodes.camera_node.CameraNode`)
on a bench device that delivers 640x480 rgb8 frames at 30 Hz stamped with their capture time,
fresh joint states and poses with every frame, and a recorder stand-in that subscribes the
full-resolution ``camera/image_raw`` (raw, as the demo recorder always does).  The policy node
stamps each twist with the source stamp of the image it acted on, so the latency of an action is
its arrival time minus the capture stamp (one host, one clock); a frame's latency is that of the
first action on it (with ``cycle_trigger: image`` the control timer repeats the last action when
no frame came for a period; those repeats are counted as ``repeat_actions``).  Every participant
uses the package's large shared-memory Fast DDS profile (``active_finetune.nodes.qos``) unless
``--default-transport``.

Two image paths, measured side by side in one run (``--paths``), alternating in ``--rounds``
blocks so that the machine's load falls on both alike:

- ``full``: the camera node publishes only ``camera/image_raw`` (``policy_image_size`` 0) and the
  policy subscribes it: two DDS hops of a 921 kB frame, and the policy resizes it in
  ``PolicyInference.act``;
- ``policy_stream``: the camera node also publishes ``camera/image_policy``, each frame resized at
  the source to the policy's input size (96x96), and the policy subscribes that; the resize is
  then part of the overhead beyond the model, not of ``act``.

Phases:

1. ``latency_<trigger>`` (full path) and ``latency_<trigger>_policy_stream`` for each
   ``--triggers`` value (``image``: one action per new frame; ``timer``: one action per control
   period on the newest frame, so latency includes waiting for the next tick): end-to-end p50/p99,
   the node's own time from image arrival to publish, the time in ``PolicyInference.act`` (resize,
   batch, forward) and in the network alone, and the overhead beyond the model (end-to-end minus
   ``act``, percentile by percentile).
2. ``swap``: a 30 Hz timer-driven run on the policy stream during which ``--swaps`` checkpoints are
   announced on ``trainer/checkpoint`` (weights carried in the message, alternating between two
   checkpoints so every announcement really loads); counts control cycles missed (gaps between
   actions longer than 1.5 periods) and confirms every swap in ``policy/status``.

Usage, from the repository root::

    .venv/bin/python -m bench.bench_policy_latency --frames 2000 --device cpu \
        --output results/bench_policy_latency.json
"""

import argparse
import base64
import faulthandler
import json
import os
from pathlib import Path
import platform
import random
import signal
import sys
import tempfile
import threading
import time

import numpy as np

CHECKPOINT = 'checkpoints/pretrained_mt10_skewed'
TASK = 'reach-v3'
WIDTH, HEIGHT = 640, 480


def percentiles_ms(values_s):
    """
    Summarise durations.

    :param values_s: durations in seconds
    :return: dict with p50, p99, max (ms) and the count
    """
    if len(values_s) == 0:
        return {'count': 0}
    array = np.asarray(values_s) * 1e3
    return {'count': int(array.size), 'p50_ms': float(np.percentile(array, 50)),
            'p99_ms': float(np.percentile(array, 99)), 'max_ms': float(array.max())}


def make_second_checkpoint(path, out_dir):
    """
    Save a perturbed copy of a checkpoint so a swap between the two really loads weights.

    :param path: source checkpoint
    :param out_dir: directory for the copy
    :return: list of two announcements (dicts) with weights carried in the message
    """
    import torch
    from active_finetune.policy.checkpoint import CONFIG_FILE, load_checkpoint, \
        save_checkpoint, WEIGHTS_FILE
    policy, _ = load_checkpoint(path)
    with torch.no_grad():
        policy.net.head.linear.bias.add_(0.01)
    copy = Path(out_dir) / 'perturbed'
    save_checkpoint(policy, copy)
    announcements = []
    for version, directory in ((1, copy), (2, Path(path))):
        config = json.loads((directory / CONFIG_FILE).read_text())
        weights = (directory / WEIGHTS_FILE).read_bytes()
        announcements.append({
            'path': '', 'sha256': config['weights_sha256'], 'version': version, 'step': 0,
            'metrics': {}, 'config': config, 'weights_b64': base64.b64encode(weights).decode()})
    return announcements


def usable_checkpoint(path, out_dir):
    """
    Return ``path`` when it loads with the current architecture, else a fresh model of its shape.

    Latency does not depend on the weights' values, so a freshly initialised policy with the
    same configuration (image size, task list, widths) measures the same thing.

    :param path: checkpoint directory
    :param out_dir: where to write the substitute
    :return: (checkpoint path, note or '')
    """
    from active_finetune.policy.checkpoint import CheckpointError, load_checkpoint, \
        read_checkpoint_config, save_checkpoint
    from active_finetune.policy.model import PolicyConfig, TaskPolicy
    try:
        load_checkpoint(path)
        return str(path), ''
    except CheckpointError as error:
        config = read_checkpoint_config(path)
        substitute = Path(out_dir) / 'fresh_same_architecture'
        save_checkpoint(TaskPolicy(PolicyConfig(**config['policy'])), substitute)
        return str(substitute), (f'{path} does not load with the current model code ({error}); '
                                 f'measured a freshly initialised policy with its config')


def network_forward_s(runner, repeats=300):
    """
    Time the network alone on a ready batch (no resize, no conversion).

    :param runner: PolicyInference
    :param repeats: forward passes timed
    :return: list of seconds
    """
    import torch
    size = runner.config.image_size
    batch = runner.make_batch([0], [np.zeros(4, np.float32)],
                              [np.zeros((size, size, 3), np.uint8)])
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            started = time.perf_counter()
            runner.policy(batch)
            if runner.device.type == 'cuda':
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
    return times[10:]


PATH_TOPICS = {'full': 'camera/image_raw', 'policy_stream': 'camera/image_policy'}
"""The topic the policy node subscribes on each image path."""


class BenchPeer:
    """The controller side (policy's process): receives twists and statuses, announces weights."""

    def __init__(self, rclpy, context):
        from geometry_msgs.msg import TwistStamped
        from std_msgs.msg import String
        from active_finetune.nodes.qos import COMMAND_QOS, LATCHED_QOS
        self.node = rclpy.create_node('bench_peer', context=context)
        self.checkpoint_pub = self.node.create_publisher(String, 'trainer/checkpoint',
                                                         LATCHED_QOS)
        self.actions = []
        self.statuses = []
        self.lock = threading.Lock()
        self.node.create_subscription(TwistStamped, 'policy/twist', self._on_twist, COMMAND_QOS)
        self.node.create_subscription(String, 'policy/status', self._on_status, LATCHED_QOS)

    def _on_twist(self, msg):
        arrival_s = time.time()
        with self.lock:
            stamp_s = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            self.actions.append((arrival_s, stamp_s, msg.twist.linear.x, msg.twist.linear.y,
                                 msg.twist.linear.z))

    def _on_status(self, msg):
        with self.lock:
            self.statuses.append(json.loads(msg.data))


class BenchCamera:
    """
    A camera device for the package's camera node: a pool of frames paced at ``rate_hz``.

    Frames are held back until ``go`` is set; the first ``warmup`` are not counted.  Each frame's
    capture stamp is recorded with its index, and a joint state and a pose with that stamp go out
    with it (``publish_state``).

    :param publish_state: callable(stamp_s)
    :param frames: counted frames to deliver (then reads wait for ``stop``)
    :param rate_hz: frame rate
    :param go: event that starts the frames
    :param stop: event that ends the reads
    :param warmup: frames delivered before the counted ones
    """

    description = 'bench camera'

    def __init__(self, publish_state, frames, rate_hz, go, stop, warmup=15):
        from active_finetune.devices.camera import CameraIntrinsics
        rng = np.random.default_rng(0)
        self.pool = [rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(8)]
        self.publish_state, self.frames, self.warmup = publish_state, frames, warmup
        self.period_s = 1.0 / rate_hz
        self.published = {}
        self.started_s = self.finished_s = None
        self._index = -warmup
        self._go, self._stop = go, stop
        self._connected = False
        self.intrinsics = CameraIntrinsics(width=WIDTH, height=HEIGHT)

    @property
    def is_connected(self):
        """:return: True after connect()."""
        return self._connected

    def connect(self):
        """Connect (always succeeds)."""
        self._connected = True

    def disconnect(self):
        """Stop delivering frames."""
        self._connected = False

    @property
    def done(self):
        """:return: True once every counted frame was delivered."""
        return self._index >= self.frames

    def read(self):
        """
        Deliver the next frame at its time, or wait for ``stop`` after the last one.

        :return: :class:`active_finetune.devices.camera.Frame`
        :raises CameraDisconnected: once stopped
        """
        from active_finetune.devices.camera import CameraDisconnected, Frame
        while not self._go.is_set() or self.done:
            if self._stop.wait(0.05):
                raise CameraDisconnected('bench over')
        if self._index == 0:
            self.started_s = time.monotonic()
        if self._index >= 0:
            delay_s = self.started_s + self._index * self.period_s - time.monotonic()
            if delay_s > 0:
                time.sleep(delay_s)
        else:
            time.sleep(self.period_s)
        now_s = time.time()
        index = self._index
        self.publish_state(now_s)
        if index >= 0:
            self.published[round(now_s, 6)] = index
        self._index += 1
        if self.done:
            self.finished_s = time.monotonic()
        return Frame(rgb=self.pool[index % len(self.pool)], capture_time_s=now_s,
                     sequence=index + self.warmup)


def camera_process(frames, rate_hz, policy_image_size, ready, go, stop, report):
    """
    Run the robot side in a process of its own: camera node, joint states, poses, recorder.

    :param frames: counted frames
    :param rate_hz: camera frame rate
    :param policy_image_size: the camera node's policy_image_size (0: full frames only)
    :param ready: set once the recorder stand-in sees the camera
    :param go: starts the frames
    :param stop: ends the process
    :param report: queue that receives the capture stamps, times and the recorder's count
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import Image, JointState
    from active_finetune.nodes.camera_node import CameraNode
    from active_finetune.nodes.conversions import s_to_stamp
    from active_finetune.nodes.qos import IMAGE_QOS, SENSOR_QOS

    context = rclpy.Context()
    rclpy.init(context=context)
    robot = rclpy.create_node('bench_robot', context=context)
    joint_pub = robot.create_publisher(JointState, 'joint_states', SENSOR_QOS)
    pose_pub = robot.create_publisher(PoseStamped, 'ee_pose', SENSOR_QOS)
    recorded = []
    # The demo recorder always takes the full frames; raw, as it does.
    robot.create_subscription(Image, 'camera/image_raw', lambda raw: recorded.append(1),
                              IMAGE_QOS, raw=True)

    def publish_state(stamp_s):
        stamp = s_to_stamp(stamp_s)
        joints = JointState()
        joints.header.stamp = stamp
        joints.name = ['gripper_finger_distance']
        joints.position = [0.1]
        joint_pub.publish(joints)
        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.0, 0.6, 0.2
        pose_pub.publish(pose)

    device = BenchCamera(publish_state, frames, rate_hz, go, stop)
    camera = CameraNode(device_factory=lambda config: device, context=context,
                        parameter_overrides=[
                            Parameter('width', value=WIDTH), Parameter('height', value=HEIGHT),
                            Parameter('fps', value=rate_hz),
                            Parameter('policy_image_size', value=policy_image_size)])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(robot)
    executor.add_node(camera)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline and robot.count_publishers('camera/image_raw') < 1:
        time.sleep(0.05)
    ready.set()
    while not device.done and not stop.is_set():
        time.sleep(0.05)
    time.sleep(0.5)
    report.put({'published': device.published, 'started_s': device.started_s,
                'finished_s': device.finished_s, 'recorder_frames': len(recorded)})
    stop.wait(30.0)
    executor.shutdown(timeout_sec=2.0)
    camera.destroy_node()
    robot.destroy_node()
    context.try_shutdown()
    thread.join(2.0)


def run_phase(args, name, trigger, control_rate_hz, frames, path, announcements=()):
    """
    Run the policy node against the camera node at 30 Hz for ``frames`` frames.

    The policy node and the peer that receives its twists run in this process; the camera node,
    the joint state and pose publisher and the recorder stand-in run in another (spawned), as
    the nodes of a graph do.

    :param args: parsed arguments
    :param name: phase name
    :param trigger: policy node cycle_trigger
    :param control_rate_hz: policy node control_rate_hz
    :param frames: frames to publish
    :param path: 'full' or 'policy_stream' (see the module doc)
    :param announcements: checkpoint announcements to publish, evenly spread over the run
    :return: dict of raw measurements (see :func:`summarise`)
    """
    import multiprocessing
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from std_msgs.msg import String
    from active_finetune.nodes.policy_node import PolicyNode

    contexts, executors, threads = [], [], []
    for _ in range(2):
        context = rclpy.Context()
        rclpy.init(context=context)
        contexts.append(context)
    policy = PolicyNode(context=contexts[0], parameter_overrides=[
        Parameter('checkpoint_path', value=args.checkpoint),
        Parameter('device', value=args.device),
        Parameter('control_rate_hz', value=float(control_rate_hz)),
        Parameter('cycle_trigger', value=trigger), Parameter('task', value=TASK),
        Parameter('max_input_age_s', value=0.2),
        Parameter('image_topic', value=PATH_TOPICS[path]),
        Parameter('fallback_image_topic', value='')])
    if policy._hot_swap.active is None:
        raise RuntimeError(f'the policy node has no model: {policy.status}')
    runner = policy._hot_swap.active.runner
    # Before the run: timing the network alone while the node acts would disturb both.
    network_s = network_forward_s(runner) if not announcements else []
    peer = BenchPeer(rclpy, contexts[1])
    for node, context in ((policy, contexts[0]), (peer.node, contexts[1])):
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        executors.append(executor)
        threads.append(thread)

    spawn = multiprocessing.get_context('spawn')
    ready, go, stop, report = spawn.Event(), spawn.Event(), spawn.Event(), spawn.Queue()
    robot = spawn.Process(daemon=True, target=camera_process, args=(
        frames, args.camera_rate_hz,
        runner.config.image_size if path == 'policy_stream' else 0, ready, go, stop, report))
    robot.start()
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline and not (
            ready.is_set() and policy._image_sub.get_publisher_count() >= 1
            and policy.count_publishers('ee_pose') >= 1
            and peer.node.count_publishers('policy/twist') >= 1):
        time.sleep(0.05)
    go.set()
    run_s = frames / args.camera_rate_hz
    for index, announcement in enumerate(announcements):
        time.sleep(run_s / (len(announcements) + 1))
        peer.checkpoint_pub.publish(String(data=json.dumps(announcement)))
    # Generous: on a loaded machine the process takes minutes to start and frames come late.
    robot_report = report.get(timeout=10.0 * run_s + 600.0)
    with peer.lock:
        actions = list(peer.actions)
        statuses = list(peer.statuses)
    published = robot_report['published']
    # The first cycle on each frame: in image mode the control timer also runs a cycle when no
    # frame came for a period (keep-alive on the newest frame); such a repeat is not the frame's
    # latency, so it is counted apart ('repeat_actions').
    cycles, seen = [], set()
    for cycle in policy.recent_cycles:
        stamp = round(cycle.image_stamp_s, 6)
        if stamp in published and stamp not in seen:
            seen.add(stamp)
            cycles.append(cycle)
    stop.set()
    robot.join(30.0)
    for executor in executors:
        executor.shutdown(timeout_sec=2.0)
    policy.destroy_node()
    peer.node.destroy_node()
    for context in contexts:
        context.try_shutdown()
    for thread in threads:
        thread.join(2.0)

    first_counted_s = min(published) if published else 0.0
    counted = [a for a in actions if a[1] >= first_counted_s - 1e-6]
    acted, first_seen = [], set()
    for arrival, stamp, *_ in counted:
        key = round(stamp, 6)
        if key in published and key not in first_seen:
            first_seen.add(key)
            acted.append((arrival, stamp))
    return {
        'name': name, 'cycle_trigger': trigger, 'control_rate_hz': control_rate_hz, 'path': path,
        'image_topic': PATH_TOPICS[path], 'frames_published': frames,
        'run_s': robot_report['finished_s'] - robot_report['started_s'],
        'actions': counted, 'e2e_s': [arrival - stamp for arrival, stamp in acted],
        'repeat_actions': sum(1 for _, stamp, *_ in counted
                              if round(stamp, 6) in published) - len(acted),
        'act_s': [c.forward_s for c in cycles],
        'node_s': [c.published_s - c.image_arrival_s for c in cycles],
        'network_s': network_s, 'statuses': statuses,
        'recorder_frames': robot_report['recorder_frames'], 'announcements': len(announcements),
    }


def summarise(runs):
    """
    Merge the raw measurements of one phase's rounds into the result format.

    :param runs: list of :func:`run_phase` dicts of the same phase
    :return: dict of results
    """
    first = runs[0]
    trigger, control_rate_hz = first['cycle_trigger'], first['control_rate_hz']
    merged = {key: [v for run in runs for v in run[key]]
              for key in ('e2e_s', 'act_s', 'node_s', 'network_s')}
    run_s = sum(run['run_s'] for run in runs)
    result = {
        'name': first['name'], 'cycle_trigger': trigger, 'control_rate_hz': control_rate_hz,
        'image_path': first['path'], 'image_topic': first['image_topic'], 'rounds': len(runs),
        'frames_published': sum(run['frames_published'] for run in runs), 'run_s': run_s,
        'actions_received': sum(len(run['actions']) for run in runs),
        'frames_acted_on': len(merged['e2e_s']),
        'repeat_actions': sum(run['repeat_actions'] for run in runs),
        'recorder_frames_received': sum(run['recorder_frames'] for run in runs),
        'image_to_action': percentiles_ms(merged['e2e_s']),
        'node_image_arrival_to_publish': percentiles_ms(merged['node_s']),
        'policy_inference_act': percentiles_ms(merged['act_s']),
    }
    if merged['network_s']:
        result['network_forward_only'] = percentiles_ms(merged['network_s'])
    if merged['e2e_s'] and merged['act_s']:
        result['overhead_beyond_model_p50_ms'] = result['image_to_action']['p50_ms'] - \
            result['policy_inference_act']['p50_ms']
        result['overhead_beyond_model_p99_ms'] = result['image_to_action']['p99_ms'] - \
            result['policy_inference_act']['p99_ms']
    if trigger == 'timer':
        gaps = np.concatenate([np.diff(np.array([a[0] for a in run['actions']]))
                               for run in runs])
        period = 1.0 / control_rate_hz
        missed = int(np.sum(np.maximum(np.round(gaps / period) - 1, 0))) if gaps.size else 0
        result['action_gap'] = percentiles_ms(gaps)
        result['cycles_expected'] = int(run_s * control_rate_hz)
        result['cycles_missed'] = missed
    announced = sum(run['announcements'] for run in runs)
    if announced:
        versions = [s.get('version') for run in runs for s in run['statuses']]
        result['swaps_announced'] = announced
        result['swaps_seen_in_status'] = sum(1 for a, b in zip(versions, versions[1:]) if a != b)
        result['refused'] = [s['refused'] for run in runs for s in run['statuses']
                             if s.get('refused')][:3]
    return result


def main(argv=None):
    """
    Run the benchmark and write the JSON results.

    :param argv: command-line arguments
    :return: exit status
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--checkpoint', default=CHECKPOINT)
    parser.add_argument('--device', default='cpu', help="'cpu', 'cuda' or 'auto'")
    parser.add_argument('--frames', type=int, default=2000,
                        help='frames per latency phase (over all its rounds)')
    parser.add_argument('--camera-rate-hz', type=float, default=30.0)
    parser.add_argument('--triggers', default='image,timer')
    parser.add_argument('--paths', default='full,policy_stream',
                        help='image paths measured side by side: full, policy_stream')
    parser.add_argument('--rounds', type=int, default=2,
                        help='blocks per phase, the paths alternating block by block')
    parser.add_argument('--control-rate-hz', type=float, default=30.0)
    parser.add_argument('--swaps', type=int, default=20)
    parser.add_argument('--swap-frames', type=int, default=900, help='frames of the swap run')
    parser.add_argument('--default-transport', action='store_true',
                        help="use Fast DDS's default transports, not the large SHM profile")
    parser.add_argument('--output', default='results/bench_policy_latency.json')
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: where is it?
    paths = [p for p in args.paths.split(',') if p]
    unknown = set(paths) - set(PATH_TOPICS)
    if unknown or args.rounds < 1:
        parser.error(f'--paths takes {sorted(PATH_TOPICS)}, --rounds >= 1; got {args.paths!r}, '
                     f'{args.rounds}')

    os.environ['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(150, 230))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    tmp = tempfile.TemporaryDirectory(prefix='bench_policy_')
    if not args.default_transport:
        from active_finetune.nodes.qos import write_fastdds_profile
        os.environ.update(write_fastdds_profile(Path(tmp.name) / 'fastdds.xml'))
    import torch
    torch.set_num_threads(1)

    args.checkpoint, checkpoint_note = usable_checkpoint(args.checkpoint, tmp.name)
    if checkpoint_note:
        print(checkpoint_note.splitlines()[0], file=sys.stderr)
    load_before = os.getloadavg()
    phases = []
    per_round = max(1, args.frames // args.rounds)
    for trigger in [t for t in args.triggers.split(',') if t]:
        runs = {path: [] for path in paths}
        for round_index in range(args.rounds):
            order = paths if round_index % 2 == 0 else paths[::-1]
            for path in order:
                name = f'latency_{trigger}' + ('' if path == 'full' else f'_{path}')
                runs[path].append(run_phase(args, name, trigger, args.control_rate_hz,
                                            per_round, path))
                print(f'{name} round {round_index + 1}/{args.rounds} done', flush=True)
        for path in paths:
            phase = summarise(runs[path])
            phases.append(phase)
            print(json.dumps(phase, indent=2), flush=True)
    if args.swaps > 0:
        pair = make_second_checkpoint(args.checkpoint, tmp.name)
        announcements = [dict(pair[i % 2], version=i + 1) for i in range(args.swaps)]
        swap_path = 'policy_stream' if 'policy_stream' in paths else paths[0]
        phase = summarise([run_phase(args, 'swap', 'timer', args.control_rate_hz,
                                     args.swap_frames, swap_path, announcements)])
        phases.append(phase)
        print(json.dumps(phase, indent=2), flush=True)
    tmp.cleanup()

    results = {
        'image': f'{WIDTH}x{HEIGHT} rgb8', 'camera_rate_hz': args.camera_rate_hz,
        'checkpoint': args.checkpoint, 'checkpoint_note': checkpoint_note.splitlines()[:1],
        'device': args.device,
        'transport': 'default' if args.default_transport else 'large_shm_profile',
        'command': ' '.join([Path(sys.executable).name, '-m', 'bench.bench_policy_latency']
                            + list(sys.argv[1:] if argv is None else argv)),
        'host': {'machine': platform.machine(), 'cpus': os.cpu_count(),
                 'python': platform.python_version(), 'load_average_1min': os.getloadavg()[0],
                 'load_average_before': load_before, 'load_average_after': os.getloadavg(),
                 'torch': torch.__version__,
                 'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        'latency': 'arrival of policy/twist minus the capture stamp of the image it acted on '
                   '(system clock, same host); overhead = that minus PolicyInference.act. Source: '
                   "the package's camera node on a bench device (640x480 at camera_rate_hz) in "
                   'a process of its own, with joint states, poses and a recorder stand-in that '
                   'subscribes camera/image_raw on both paths; the policy node and the twist '
                   'receiver in the bench process. path full: the '
                   'policy subscribes camera/image_raw and act includes the 640x480 -> 96x96 '
                   'resize; path policy_stream: the policy subscribes camera/image_policy '
                   '(resized in the camera node, which counts in the overhead). Phases of each '
                   'trigger ran alternating in rounds, side by side.',
        'phases': phases,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + '\n')
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
