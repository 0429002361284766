"""
Sensor subscriptions match a lab's drivers: QoS overrides, and a clear word on a mismatch.

The policy and demo recorder subscribe camera/image_raw, joint_states and ee_pose reliable
(lossless, see active_finetune/nodes/qos.py); a reliable subscription never matches a
best-effort publisher.  With ``qos_overrides.<topic>.subscription.reliability: best_effort``
in their parameters they match one, and without it the mismatch is logged with that parameter.
"""

import threading

from active_finetune.graph import SOURCE_ROOT
from active_finetune.nodes.demo_recorder_node import DemoRecorderNode
from active_finetune.nodes.policy_node import PolicyNode
from active_finetune.nodes.qos import IMAGE_QOS, SENSOR_QOS, sensor_subscription_options
from geometry_msgs.msg import PoseStamped
import pytest
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState

pytestmark = pytest.mark.timeout(120)

SENSOR_TOPICS = {'camera/image_raw': Image, 'joint_states': JointState, 'ee_pose': PoseStamped}
CHECKPOINT = SOURCE_ROOT / 'checkpoints' / 'pretrained_mt10_skewed'


def best_effort_overrides(namespace=''):
    return [Parameter(f'qos_overrides.{namespace}/{topic}.subscription.reliability',
                      value='best_effort') for topic in SENSOR_TOPICS]


def build_policy(ros, tmp_path, overrides):
    return PolicyNode(context=ros.context, parameter_overrides=[
        Parameter('checkpoint_path', value=str(CHECKPOINT)), Parameter('device', value='cpu'),
        *overrides])


def build_recorder(ros, tmp_path, overrides):
    return DemoRecorderNode(context=ros.context, parameter_overrides=[
        Parameter('dataset_dir', value=str(tmp_path / 'episodes')),
        Parameter('min_free_disk_mb', value=0.0), *overrides])


def sensor_subscriptions(node):
    return {sub.topic_name: sub for sub in node.subscriptions
            if sub.topic_name.lstrip('/') in SENSOR_TOPICS}


@pytest.mark.parametrize('build', [build_policy, build_recorder], ids=['policy', 'recorder'])
def test_sensor_subscriptions_take_best_effort_by_override(ros, wait_for, tmp_path, build):
    node = ros.add_node(build(ros, tmp_path, best_effort_overrides()))
    subscriptions = sensor_subscriptions(node)
    assert sorted(subscriptions) == sorted(f'/{topic}' for topic in SENSOR_TOPICS)
    for topic, subscription in subscriptions.items():
        assert subscription.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT, topic
        assert subscription.qos_profile is not IMAGE_QOS and subscription.qos_profile is not \
            SENSOR_QOS, 'rclpy writes the overrides into the profile it gets'
        assert node.get_parameter(
            f'qos_overrides.{topic}.subscription.reliability').value == 'best_effort'
    publishers = [ros.publisher(msg_type, topic, qos_profile_sensor_data)
                  for topic, msg_type in SENSOR_TOPICS.items()]
    for publisher in publishers:
        assert ros.wait_for_subscribers(publisher, timeout_s=10.0), publisher.topic_name
    assert IMAGE_QOS.reliability == SENSOR_QOS.reliability == ReliabilityPolicy.RELIABLE


@pytest.mark.parametrize('build', [build_policy, build_recorder], ids=['policy', 'recorder'])
def test_sensor_subscriptions_stay_reliable_by_default(ros, tmp_path, build):
    node = ros.add_node(build(ros, tmp_path, []))
    for topic, subscription in sensor_subscriptions(node).items():
        assert subscription.qos_profile.reliability == ReliabilityPolicy.RELIABLE, topic
        assert subscription.qos_profile.depth == (5 if topic == '/camera/image_raw' else 10)


class WarningLog:
    """Stand in for a node's logger, keeping warnings and forwarding everything."""

    def __init__(self, logger):
        self.logger = logger
        self.warnings = []
        self.lock = threading.Lock()

    def warning(self, message, *args, **kwargs):
        with self.lock:
            self.warnings.append(message)
        return self.logger.warning(message, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.logger, name)


def test_a_best_effort_publisher_is_reported_with_the_parameter_to_set(ros, wait_for):
    node = rclpy.create_node('policy', namespace='/arm1', context=ros.context)
    log = WarningLog(node.get_logger())
    node.get_logger = lambda: log
    node.create_subscription(Image, 'camera/image_raw', lambda msg: None,
                             **sensor_subscription_options(node, 'camera/image_raw', IMAGE_QOS))
    ros.add_node(node)
    ros.publisher(Image, '/arm1/camera/image_raw', qos_profile_sensor_data)
    assert wait_for(lambda: log.warnings, 10.0), 'no incompatible-QoS report'
    assert 'qos_overrides./arm1/camera/image_raw.subscription.reliability: best_effort' in \
        log.warnings[0]
    assert 'RELIABILITY' in log.warnings[0]
