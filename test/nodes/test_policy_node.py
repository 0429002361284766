"""Policy node through real DDS: actions, stale inputs, tasks, hot swap, refusal, rollback, NaN."""

import base64
import json
import math
import time

from active_finetune.nodes.conversions import rgb_to_image, s_to_stamp, twist_stamped_to_linear
from active_finetune.nodes.policy_node import PolicyNode
from active_finetune.nodes.qos import COMMAND_QOS, IMAGE_QOS, LATCHED_QOS, SENSOR_QOS
from active_finetune.policy.checkpoint import CONFIG_FILE, save_checkpoint, WEIGHTS_FILE
from active_finetune.policy.model import PolicyConfig, TaskPolicy
from geometry_msgs.msg import PoseStamped, TwistStamped
import numpy as np
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger
import torch

TASKS = ('reach-v3', 'push-v3')
IMAGE_SIZE = 32
GRIPPER_JOINT = 'gripper_finger_distance'


def tiny_policy(seed):
    torch.manual_seed(seed)
    return TaskPolicy(PolicyConfig(tasks=TASKS, image_size=IMAGE_SIZE, conv_channels=(4, 4),
                                   hidden_dim=16, feature_dim=8, task_embedding_dim=4))


def make_checkpoint(path, seed, mean=None):
    """Save a tiny image policy; with ``mean`` its action is that constant (weights zeroed)."""
    policy = tiny_policy(seed)
    if mean is not None:
        with torch.no_grad():
            for param in policy.parameters():
                param.zero_()
            policy.net.head.linear.bias[:4] = torch.atanh(torch.tensor(mean, dtype=torch.float32))
    return save_checkpoint(policy, path)


def announcement(path, sha256, version, carry_weights=False):
    payload = {'path': str(path), 'sha256': sha256, 'version': version, 'step': 0,
               'metrics': {}}
    if carry_weights:
        payload['config'] = json.loads((path / CONFIG_FILE).read_text())
        payload['weights_b64'] = base64.b64encode((path / WEIGHTS_FILE).read_bytes()).decode()
        payload['path'] = ''
    return String(data=json.dumps(payload))


class Inputs:
    """Publish fresh camera, joint state and pose messages from the test."""

    def __init__(self, ros, position=(0.0, 0.6, 0.2)):
        self.image_pub = ros.publisher(Image, 'camera/image_raw', IMAGE_QOS)
        self.joint_pub = ros.publisher(JointState, 'joint_states', SENSOR_QOS)
        self.pose_pub = ros.publisher(PoseStamped, 'ee_pose', SENSOR_QOS)
        self.position = position
        self.node = ros.node
        rng = np.random.default_rng(0)
        self.rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)

    def publish(self):
        now_s = self.node.get_clock().now().nanoseconds * 1e-9
        self.image_pub.publish(rgb_to_image(self.rgb, now_s, 'camera'))
        joints = JointState()
        joints.header.stamp = s_to_stamp(now_s)
        joints.name = ['right_j0', GRIPPER_JOINT]
        joints.position = [0.1, 0.05]
        self.joint_pub.publish(joints)
        pose = PoseStamped()
        pose.header.stamp = s_to_stamp(now_s)
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = self.position
        self.pose_pub.publish(pose)


@pytest.fixture
def graph(ros, tmp_path):
    """Give a policy-node factory on a tiny checkpoint (version 0), publishers and logs."""
    v0 = tmp_path / 'v0'
    sha0 = make_checkpoint(v0, seed=0, mean=[0.5, -0.5, 0.9, 0.25])

    def start(**overrides):
        params = {'checkpoint_path': str(v0), 'device': 'cpu', 'control_rate_hz': 50.0,
                  'max_input_age_s': 0.3, 'max_linear_velocity_mps': 0.2, 'task': 'reach-v3'}
        params.update(overrides)
        node = PolicyNode(context=ros.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        return ros.add_node(node)

    class Graph:
        pass

    g = Graph()
    g.start, g.v0, g.sha0, g.tmp = start, v0, sha0, tmp_path
    g.twists = ros.collect(TwistStamped, 'policy/twist', COMMAND_QOS)
    g.grippers = ros.collect(Float64, 'policy/gripper', COMMAND_QOS)
    g.statuses = ros.collect(String, 'policy/status', LATCHED_QOS)
    g.task_pub = ros.publisher(String, 'policy/task', LATCHED_QOS)
    g.checkpoint_pub = ros.publisher(String, 'trainer/checkpoint', LATCHED_QOS)
    g.inputs = Inputs(ros)
    return g


def status(g):
    return json.loads(g.statuses.last.data)


def pump(g, wait_for, predicate, timeout_s=10.0):
    """Keep inputs fresh while waiting for ``predicate``."""
    def step():
        g.inputs.publish()
        return predicate()
    return wait_for(step, timeout_s, interval_s=0.02)


def test_fresh_inputs_give_scaled_actions(graph, wait_for):
    graph.start()
    assert pump(graph, wait_for, lambda: status(graph)['state'] == 'running')
    graph.twists.clear()
    assert pump(graph, wait_for, lambda: len(graph.grippers) > 3 and len(graph.twists) > 3)
    linear = twist_stamped_to_linear(graph.twists.last)
    # The policy's constant action (0.5, -0.5, 0.9) scaled by max_linear_velocity_mps = 0.2.
    np.testing.assert_allclose(linear, [0.1, -0.1, 0.18], atol=1e-6)
    assert graph.grippers.last.data == pytest.approx(0.25)
    s = status(graph)
    assert s['version'] == 0 and s['sha256'] == graph.sha0 and s['task'] == 'reach-v3'


def test_stale_inputs_give_zero_and_stale_status(graph, wait_for):
    graph.start()
    assert pump(graph, wait_for, lambda: status(graph)['state'] == 'running')
    assert wait_for(lambda: status(graph)['state'] == 'stale', 3.0)
    assert 'stale' in status(graph)['reason']
    time.sleep(0.1)
    assert np.allclose(twist_stamped_to_linear(graph.twists.last), 0.0)


def test_unknown_task_is_refused_with_zero_output(graph, wait_for):
    graph.start()
    assert pump(graph, wait_for, lambda: status(graph)['state'] == 'running')
    graph.task_pub.publish(String(data='no-such-task-v3'))
    assert pump(graph, wait_for, lambda: status(graph)['state'] == 'error')
    s = status(graph)
    assert s['code'] == 'unknown_task' and 'no-such-task-v3' in s['reason']
    assert np.allclose(twist_stamped_to_linear(graph.twists.last), 0.0)
    graph.task_pub.publish(String(data='push-v3'))
    assert pump(graph, wait_for, lambda: status(graph)['state'] == 'running'
                and status(graph)['task'] == 'push-v3')


def test_hot_swap_then_corrupt_refused_then_rollback(graph, wait_for, tmp_path):
    node = graph.start()
    assert pump(graph, wait_for, lambda: status(graph)['state'] == 'running')
    v1 = tmp_path / 'v1'
    sha1 = make_checkpoint(v1, seed=1, mean=[-0.5, 0.5, 0.0, -0.75])
    # Version 1 arrives inside the message (no shared disk needed).
    graph.checkpoint_pub.publish(announcement(v1, sha1, 1, carry_weights=True))
    assert pump(graph, wait_for, lambda: status(graph)['version'] == 1)
    assert status(graph)['sha256'] == sha1 and status(graph)['rollback_versions'] == [0]
    graph.twists.clear()
    assert pump(graph, wait_for, lambda: len(graph.twists) > 2 and np.allclose(
        twist_stamped_to_linear(graph.twists.last), [-0.1, 0.1, 0.0], atol=1e-6))

    # Version 2 on disk is truncated: refused, version 1 keeps running.
    v2 = tmp_path / 'v2'
    sha2 = make_checkpoint(v2, seed=2)
    weights = (v2 / WEIGHTS_FILE).read_bytes()
    (v2 / WEIGHTS_FILE).write_bytes(weights[:len(weights) // 2])
    graph.checkpoint_pub.publish(announcement(v2, sha2, 2))
    assert pump(graph, wait_for, lambda: (status(graph)['refused'] or {}).get('version') == 2)
    s = status(graph)
    assert s['version'] == 1 and s['state'] == 'running' and 'sha256' in s['refused']['reason']

    # Rollback goes back to version 0 without a restart.
    client = node.create_client(Trigger, 'policy/rollback')
    assert client.wait_for_service(timeout_sec=5.0)
    future = client.call_async(Trigger.Request())
    assert wait_for(future.done, 5.0)
    assert future.result().success, future.result().message
    assert pump(graph, wait_for, lambda: status(graph)['version'] == 0)
    future = client.call_async(Trigger.Request())
    assert wait_for(future.done, 5.0)
    assert not future.result().success and 'no earlier' in future.result().message


def test_nan_checkpoint_refused_and_nan_output_gives_zero(graph, wait_for, tmp_path):
    node = graph.start()
    assert pump(graph, wait_for, lambda: status(graph)['state'] == 'running')
    # A checkpoint with NaN weights is refused by verification.
    policy = tiny_policy(3)
    with torch.no_grad():
        next(policy.parameters()).fill_(math.nan)
    v_nan = tmp_path / 'v_nan'
    sha_nan = save_checkpoint(policy, v_nan)
    graph.checkpoint_pub.publish(announcement(v_nan, sha_nan, 7))
    assert pump(graph, wait_for, lambda: (status(graph)['refused'] or {}).get('version') == 7)
    assert status(graph)['version'] == 0
    assert 'NaN' in status(graph)['refused']['reason']

    # Weights that turn NaN while running (e.g. a GPU fault) give zero output and an error.
    with torch.no_grad():
        for param in node._hot_swap.active.runner.policy.parameters():
            param.fill_(math.nan)
    assert pump(graph, wait_for, lambda: status(graph)['code'] == 'non_finite')
    assert status(graph)['state'] == 'error'
    assert np.allclose(twist_stamped_to_linear(graph.twists.last), 0.0)


def test_shutdown_publishes_zero(graph, ros, wait_for):
    node = graph.start()
    assert pump(graph, wait_for, lambda: len(graph.twists) > 0 and not np.allclose(
        twist_stamped_to_linear(graph.twists.last), 0.0))
    ros.destroy_node(node)
    assert wait_for(lambda: np.allclose(twist_stamped_to_linear(graph.twists.last), 0.0), 2.0)


def test_control_timer_cannot_starve_inputs_on_a_multithreaded_executor(graph):
    # rclpy's MultiThreadedExecutor skips every subscription of a busy mutually exclusive group;
    # a 50 Hz timer whose cycle takes ~20 ms (a loaded machine) then starved the image input for
    # seconds.  The timer has a group of its own, and no input or service shares it.
    node = graph.start()
    # The control timer, and the check for a publisher of image_topic (an input-side timer).
    timers = list(node.timers)
    assert len(timers) == 2 and node._timer in timers
    timer_groups = {node._timer.callback_group}
    inputs = [s for s in node.subscriptions if s.topic_name.lstrip('/') in (
        'camera/image_policy', 'camera/image_raw', 'joint_states', 'ee_pose', 'policy/task',
        'estop', 'trainer/checkpoint')]
    assert len(inputs) == 9
    inputs += [t for t in timers if t is not node._timer]
    rollback = [s for s in node.services if s.srv_name.endswith('policy/rollback')]
    assert len(rollback) == 1
    assert all(entity.callback_group not in timer_groups for entity in inputs + rollback)


def moving(g):
    return len(g.twists) > 0 and not np.allclose(twist_stamped_to_linear(g.twists.last), 0.0)


def test_implausible_but_finite_positions_give_zero_and_a_reason(graph, wait_for):
    # The tiny checkpoint's statistics are mean 0, std 1; a box wide enough for the std check.
    graph.start(workspace_min_m=[-100.0, -100.0, -100.0], workspace_max_m=[100.0, 100.0, 100.0])
    assert pump(graph, wait_for, lambda: status(graph)['state'] == 'running' and moving(graph))
    for position, words in (((0.0, 600.0, 200.0), ['outside the workspace box', '600']),
                            ((1e6, 1e6, 1e6), ['outside the workspace box']),
                            ((0.0, 7.0, 0.2), ['std from the training mean'])):
        graph.inputs.position = position
        assert pump(graph, wait_for, lambda: status(graph)['code'] == 'implausible'
                    and all(w in status(graph)['reason'] for w in words)), status(graph)
        assert status(graph)['state'] == 'error'
        graph.twists.clear()
        assert pump(graph, wait_for, lambda: len(graph.twists) > 2)
        assert not moving(graph), 'zero while the position is implausible'
        graph.inputs.position = (0.0, 0.6, 0.2)
        assert pump(graph, wait_for, lambda: status(graph)['state'] == 'running')


def test_the_workspace_box_is_a_parameter(graph, wait_for):
    node = graph.start(workspace_max_m=[1.0, 0.5, 1.0])
    assert pump(graph, wait_for, lambda: status(graph)['code'] == 'implausible')
    assert 'y [-1.5, 0.5]' in status(graph)['reason'], status(graph)['reason']
    assert not node.set_parameters([Parameter('workspace_max_m', value=[1.0, -2.0, 1.0])])[
        0].successful
    assert node.set_parameters([Parameter('workspace_max_m', value=[1.0, 1.0, 1.0])])[
        0].successful
    assert pump(graph, wait_for, lambda: status(graph)['state'] == 'running')


def test_an_oversize_image_is_refused_before_conversion(graph, wait_for, monkeypatch):
    from active_finetune.nodes import policy_node as module
    converted = []
    for name in ('image_to_rgb', 'deserialize_message'):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *args, real=real, name=name: (
            converted.append(name), real(*args))[1])
    node = graph.start(max_image_pixels=3000)  # the test images are 64x48 = 3072 pixels
    assert pump(graph, wait_for, lambda: status(graph)['code'] == 'image_too_large')
    s = status(graph)
    assert s['state'] == 'error' and '64x48 (3072 pixels)' in s['reason'], s
    assert not converted, 'not even deserialised'
    assert not moving(graph)
    assert node.set_parameters([Parameter('max_image_pixels', value=4096)])[0].successful
    assert pump(graph, wait_for, lambda: status(graph)['state'] == 'running')
    assert {'image_to_rgb', 'deserialize_message'} <= set(converted)


def test_older_versions_and_other_task_lists_are_refused_and_the_newest_refusal_shows(
        graph, wait_for, tmp_path):
    graph.start()
    assert pump(graph, wait_for, lambda: status(graph)['state'] == 'running')
    v20 = tmp_path / 'v20'
    sha20 = make_checkpoint(v20, seed=20, mean=[0.5, 0.5, 0.5, 0.5])
    graph.checkpoint_pub.publish(announcement(v20, sha20, 20, carry_weights=True))
    assert pump(graph, wait_for, lambda: status(graph)['version'] == 20)

    v3 = tmp_path / 'v3'
    sha3 = make_checkpoint(v3, seed=3)
    graph.checkpoint_pub.publish(announcement(v3, sha3, 3, carry_weights=True))
    assert pump(graph, wait_for, lambda: (status(graph)['refused'] or {}).get('version') == 3)
    assert 'lower than the running version 20' in status(graph)['refused']['reason']

    torch.manual_seed(21)
    swapped = TaskPolicy(PolicyConfig(tasks=TASKS[::-1], image_size=IMAGE_SIZE,
                                      conv_channels=(4, 4), hidden_dim=16, feature_dim=8,
                                      task_embedding_dim=4))
    v21 = tmp_path / 'v21'
    sha21 = save_checkpoint(swapped, v21)
    graph.checkpoint_pub.publish(announcement(v21, sha21, 21))
    assert pump(graph, wait_for, lambda: (status(graph)['refused'] or {}).get('version') == 21)
    assert 'another order' in status(graph)['refused']['reason']

    # Two malformed announcements in a row: the second one's reason is in the status too.
    for text, words in (('{"version": 22', 'not JSON'), ('[22]', 'expected a JSON object')):
        graph.checkpoint_pub.publish(String(data=text))
        assert pump(graph, wait_for, lambda: words in (status(graph)['refused'] or {}).get(
            'reason', '')), status(graph)
    s = status(graph)
    assert s['version'] == 20 and s['state'] == 'running' and s['refused']['number'] == 4
    assert status(graph)['tasks'] == list(TASKS), "still the running checkpoint's task list"


def test_checkpoint_announcements_and_images_are_taken_raw(graph):
    node = graph.start()
    (subscription,) = [s for s in node.subscriptions
                       if s.topic_name.lstrip('/') == 'trainer/checkpoint']
    assert subscription.raw, 'the weights never become a Python string on the executor thread'
    for topic in ('camera/image_policy', 'camera/image_raw'):
        (subscription,) = [s for s in node.subscriptions if s.topic_name.lstrip('/') == topic]
        assert subscription.raw, 'an image is checked before it is deserialised'


def test_the_policy_acts_on_the_policy_stream_and_falls_back_to_the_full_one(
        graph, ros, wait_for):
    node = graph.start()
    # Only camera/image_raw has a publisher (a lab's driver): the policy acts on it.
    assert pump(graph, wait_for, lambda: status(graph)['state'] == 'running')
    assert [t.lstrip('/') for t in node.image_topics] == ['camera/image_policy',
                                                          'camera/image_raw']
    small_pub = ros.publisher(Image, 'camera/image_policy', IMAGE_QOS)
    small_rgb = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 90, np.uint8)
    small_stamps = set()

    def publish_both():
        graph.inputs.publish()  # full frame, joint state and pose, stamped now
        stamp_s = ros.node.get_clock().now().nanoseconds * 1e-9 + 1e-4
        small_stamps.add(round(stamp_s, 6))
        small_pub.publish(rgb_to_image(small_rgb, stamp_s, 'camera'))

    def step(predicate):
        def run():
            publish_both()
            return predicate()
        return wait_for(run, 10.0, interval_s=0.02)

    # A publisher of the policy stream appears: the full-resolution subscription is dropped.
    assert step(lambda: [t.lstrip('/') for t in node.image_topics] == ['camera/image_policy'])
    assert step(lambda: (node.newest_image_size or (0, 0))[0] == IMAGE_SIZE)
    graph.twists.clear()
    node.recent_cycles.clear()
    assert step(lambda: len(node.recent_cycles) >= 10)
    assert status(graph)['state'] == 'running'
    used = {round(c.image_stamp_s, 6) for c in node.recent_cycles}
    assert used <= small_stamps, 'every action came from a policy-stream frame'
    assert node.newest_image_size[0] == IMAGE_SIZE
    # The policy stream goes away (camera node stopped): the fallback comes back.
    ros.node.destroy_publisher(small_pub)
    assert pump(graph, wait_for, lambda: len(node.image_topics) == 2)
    node.recent_cycles.clear()
    assert pump(graph, wait_for, lambda: len(node.recent_cycles) >= 3)
    assert node.newest_image_size[0] == 64, 'acting on the full frames again'


def test_image_topics_are_parameters(graph, ros, wait_for):
    node = graph.start(image_topic='camera/image_raw', fallback_image_topic='')
    assert [t.lstrip('/') for t in node.image_topics] == ['camera/image_raw']
    assert pump(graph, wait_for, lambda: status(graph)['state'] == 'running')
    assert node.describe_parameter('image_topic').read_only
    with pytest.raises(ValueError, match='must differ'):
        graph.start(image_topic='camera/image_raw', fallback_image_topic='camera/image_raw')
