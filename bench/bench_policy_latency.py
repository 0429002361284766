"""
Measure the policy node: image-in to action-out latency, the model's share of it, and swap cost.

The policy node runs in this process on its own rclpy context and executor thread (as it would in
its own process: a separate DDS participant); a bench node on a second context publishes 640x480
rgb8 frames at 30 Hz with fresh joint states and poses, and receives ``policy/twist``.  The
policy node stamps each twist with the source stamp of the image it acted on, so the latency of an
action is its arrival time minus that stamp (one host, one clock).  Both participants use the
package's large shared-memory Fast DDS profile (``active_finetune.nodes.qos``) unless
``--default-transport``.

Phases:

1. ``latency_<trigger>`` for each ``--triggers`` value (``image``: one action per new frame;
   ``timer``: one action per control period on the newest frame, so latency includes waiting for
   the next tick): end-to-end p50/p99, the node's own time from image arrival to publish, the time
   in ``PolicyRunner.act`` (resize 640x480 -> model size, batch, forward) and in the network alone,
   and the overhead beyond the model (end-to-end minus ``act``).
2. ``swap``: a 30 Hz timer-driven run during which ``--swaps`` checkpoints are announced on
   ``trainer/checkpoint`` (weights carried in the message, alternating between two checkpoints so
   every announcement really loads); counts control cycles missed (gaps between actions longer
   than 1.5 periods) and confirms every swap in ``policy/status``.

Usage, from the repository root::

    .venv/bin/python -m bench.bench_policy_latency --frames 2000 --device cpu \
        --output results/bench_policy_latency.json
"""

import argparse
import base64
import json
import os
from pathlib import Path
import platform
import random
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

    :param runner: PolicyRunner
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


class BenchPeer:
    """The camera/robot side: publishes frames and inputs, records actions and statuses."""

    def __init__(self, rclpy, context):
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String
        from active_finetune.nodes.qos import COMMAND_QOS, IMAGE_QOS, LATCHED_QOS, SENSOR_QOS
        self.node = rclpy.create_node('bench_peer', context=context)
        self.image_pub = self.node.create_publisher(Image, 'camera/image_raw', IMAGE_QOS)
        self.joint_pub = self.node.create_publisher(JointState, 'joint_states', SENSOR_QOS)
        self.pose_pub = self.node.create_publisher(PoseStamped, 'ee_pose', SENSOR_QOS)
        self.checkpoint_pub = self.node.create_publisher(String, 'trainer/checkpoint',
                                                         LATCHED_QOS)
        self.actions = []
        self.statuses = []
        self.lock = threading.Lock()
        self.node.create_subscription(TwistStamped, 'policy/twist', self._on_twist, COMMAND_QOS)
        self.node.create_subscription(String, 'policy/status', self._on_status, LATCHED_QOS)
        self._types = (Image, JointState, PoseStamped, String)

    def _on_twist(self, msg):
        arrival_s = time.time()
        with self.lock:
            stamp_s = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            self.actions.append((arrival_s, stamp_s, msg.twist.linear.x, msg.twist.linear.y,
                                 msg.twist.linear.z))

    def _on_status(self, msg):
        with self.lock:
            self.statuses.append(json.loads(msg.data))

    def publish_frame(self, frame):
        from active_finetune.nodes.conversions import rgb_to_image, s_to_stamp
        _, JointState, PoseStamped, _ = self._types
        now_s = time.time()
        stamp = s_to_stamp(now_s)
        joints = JointState()
        joints.header.stamp = stamp
        joints.name = ['gripper_finger_distance']
        joints.position = [0.1]
        self.joint_pub.publish(joints)
        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.0, 0.6, 0.2
        self.pose_pub.publish(pose)
        self.image_pub.publish(rgb_to_image(frame, now_s, 'camera'))
        return now_s


def run_phase(args, name, trigger, control_rate_hz, frames, announcements=()):
    """
    Run the policy node against a 30 Hz camera for ``frames`` frames.

    :param args: parsed arguments
    :param name: phase name
    :param trigger: policy node cycle_trigger
    :param control_rate_hz: policy node control_rate_hz
    :param frames: frames to publish
    :param announcements: checkpoint announcements to publish, evenly spread over the run
    :return: dict of results
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from std_msgs.msg import String
    from active_finetune.nodes.policy_node import PolicyNode

    contexts, executors, threads = [], [], []

    def spin_in_thread(node, context):
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        executors.append(executor)
        threads.append(thread)

    for _ in range(2):
        context = rclpy.Context()
        rclpy.init(context=context)
        contexts.append(context)
    policy = PolicyNode(context=contexts[0], parameter_overrides=[
        Parameter('checkpoint_path', value=args.checkpoint),
        Parameter('device', value=args.device),
        Parameter('control_rate_hz', value=float(control_rate_hz)),
        Parameter('cycle_trigger', value=trigger), Parameter('task', value=TASK),
        Parameter('max_input_age_s', value=0.2)])
    peer = BenchPeer(rclpy, contexts[1])
    spin_in_thread(policy, contexts[0])
    spin_in_thread(peer.node, contexts[1])
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and (peer.image_pub.get_subscription_count() < 1
                                           or peer.node.count_subscribers('policy/twist') < 0):
        time.sleep(0.05)
    rng = np.random.default_rng(0)
    frame_pool = [rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(8)]
    swap_at = {int((i + 1) * frames / (len(announcements) + 1)): a
               for i, a in enumerate(announcements)}
    period_s = 1.0 / args.camera_rate_hz
    published = {}
    for _ in range(15):  # warm-up frames, not counted
        peer.publish_frame(frame_pool[0])
        time.sleep(period_s)
    with peer.lock:
        peer.actions.clear()
    policy.recent_cycles.clear()
    started_s = time.monotonic()
    for index in range(frames):
        target_s = started_s + index * period_s
        delay_s = target_s - time.monotonic()
        if delay_s > 0:
            time.sleep(delay_s)
        stamp_s = peer.publish_frame(frame_pool[index % len(frame_pool)])
        published[round(stamp_s, 6)] = index
        if index in swap_at:
            peer.checkpoint_pub.publish(String(data=json.dumps(swap_at[index])))
    run_s = time.monotonic() - started_s
    time.sleep(0.5)
    with peer.lock:
        actions = list(peer.actions)
        statuses = list(peer.statuses)
    cycles = list(policy.recent_cycles)
    if policy._hot_swap.active is None:
        raise RuntimeError(f'the policy node has no model: {policy.status}')
    runner = policy._hot_swap.active.runner
    network_s = network_forward_s(runner) if not announcements else []
    for executor in executors:
        executor.shutdown(timeout_sec=2.0)
    policy.destroy_node()
    peer.node.destroy_node()
    for context in contexts:
        context.try_shutdown()
    for thread in threads:
        thread.join(2.0)

    acted = [(arrival, stamp) for arrival, stamp, *_ in actions
             if round(stamp, 6) in published]
    e2e_s = [arrival - stamp for arrival, stamp in acted]
    act_s = [c.forward_s for c in cycles]
    node_s = [c.published_s - c.image_arrival_s for c in cycles]
    result = {
        'name': name, 'cycle_trigger': trigger, 'control_rate_hz': control_rate_hz,
        'frames_published': frames, 'run_s': run_s, 'actions_received': len(actions),
        'actions_on_published_frames': len(acted),
        'image_to_action': percentiles_ms(e2e_s),
        'node_image_arrival_to_publish': percentiles_ms(node_s),
        'policy_runner_act': percentiles_ms(act_s),
    }
    if network_s:
        result['network_forward_only'] = percentiles_ms(network_s)
    if e2e_s and act_s:
        result['overhead_beyond_model_p50_ms'] = result['image_to_action']['p50_ms'] - \
            result['policy_runner_act']['p50_ms']
        result['overhead_beyond_model_p99_ms'] = result['image_to_action']['p99_ms'] - \
            result['policy_runner_act']['p99_ms']
    if trigger == 'timer':
        arrivals = np.array([a[0] for a in actions])
        gaps = np.diff(arrivals)
        period = 1.0 / control_rate_hz
        missed = int(np.sum(np.maximum(np.round(gaps / period) - 1, 0))) if gaps.size else 0
        result['action_gap'] = percentiles_ms(gaps)
        result['cycles_expected'] = int(run_s * control_rate_hz)
        result['cycles_missed'] = missed
    if announcements:
        versions = [s.get('version') for s in statuses]
        swaps_seen = sum(1 for a, b in zip(versions, versions[1:]) if a != b)
        result['swaps_announced'] = len(announcements)
        result['swaps_seen_in_status'] = swaps_seen
        result['refused'] = [s['refused'] for s in statuses if s.get('refused')][:3]
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
    parser.add_argument('--frames', type=int, default=2000, help='frames per latency phase')
    parser.add_argument('--camera-rate-hz', type=float, default=30.0)
    parser.add_argument('--triggers', default='image,timer')
    parser.add_argument('--control-rate-hz', type=float, default=30.0)
    parser.add_argument('--swaps', type=int, default=20)
    parser.add_argument('--swap-frames', type=int, default=900, help='frames of the swap run')
    parser.add_argument('--default-transport', action='store_true',
                        help="use Fast DDS's default transports, not the large SHM profile")
    parser.add_argument('--output', default='results/bench_policy_latency.json')
    args = parser.parse_args(argv)

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
    phases = []
    for trigger in [t for t in args.triggers.split(',') if t]:
        phase = run_phase(args, f'latency_{trigger}', trigger, args.control_rate_hz, args.frames)
        phases.append(phase)
        print(json.dumps(phase, indent=2), flush=True)
    if args.swaps > 0:
        pair = make_second_checkpoint(args.checkpoint, tmp.name)
        announcements = [dict(pair[i % 2], version=i + 1) for i in range(args.swaps)]
        phase = run_phase(args, 'swap', 'timer', args.control_rate_hz, args.swap_frames,
                          announcements)
        phases.append(phase)
        print(json.dumps(phase, indent=2), flush=True)
    tmp.cleanup()

    results = {
        'image': f'{WIDTH}x{HEIGHT} rgb8', 'camera_rate_hz': args.camera_rate_hz,
        'checkpoint': args.checkpoint, 'checkpoint_note': checkpoint_note.splitlines()[:1],
        'device': args.device,
        'transport': 'default' if args.default_transport else 'large_shm_profile',
        'host': {'machine': platform.machine(), 'cpus': os.cpu_count(),
                 'python': platform.python_version(), 'load_average_1min': os.getloadavg()[0],
                 'torch': torch.__version__,
                 'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        'latency': 'arrival of policy/twist minus the stamp of the image it acted on '
                   '(system clock, same host); overhead = that minus PolicyRunner.act',
        'phases': phases,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + '\n')
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
