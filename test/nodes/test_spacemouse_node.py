"""SpaceMouse node through real DDS, with a scripted FakeSpaceMouse or spacenav_node's topics."""

from active_finetune.devices.spacemouse import FakeSpaceMouse, SpaceMouseState
from active_finetune.nodes.conversions import twist_stamped_to_linear
from active_finetune.nodes.qos import COMMAND_QOS
from active_finetune.nodes.spacemouse_node import SpaceMouseNode
from geometry_msgs.msg import Twist, TwistStamped
import numpy as np
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import Joy
from std_msgs.msg import Float64

pytestmark = pytest.mark.timeout(60)


def state(x=0.0, y=0.0, z=0.0, buttons=(0, 0)):
    return SpaceMouseState(axes=np.array([x, y, z, 0.0, 0.0, 0.0]), buttons=buttons)


def linear(msg):
    return twist_stamped_to_linear(msg)


@pytest.fixture
def teleop_logs(ros):
    return (ros.collect(TwistStamped, 'teleop/twist', COMMAND_QOS),
            ros.collect(Joy, 'teleop/joy', COMMAND_QOS),
            ros.collect(Float64, 'teleop/gripper', COMMAND_QOS))


def make_node(ros, mouse, **parameters):
    values = {'deadband': 0.0, 'max_linear_velocity_mps': 0.2, 'reconnect_period_s': 0.05,
              'frame_id': 'robot_base'}
    values.update(parameters)
    return ros.add_node(SpaceMouseNode(
        device_factory=lambda config: mouse, context=ros.context,
        parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]))


def test_device_motion_becomes_twist_joy_and_gripper(ros, wait_for, teleop_logs):
    twists, joys, grippers = teleop_logs
    mouse = FakeSpaceMouse([state(x=0.5, z=-0.25)])
    make_node(ros, mouse)
    assert wait_for(lambda: len(twists) >= 5 and len(joys) >= 5 and len(grippers) >= 5, 5.0)
    np.testing.assert_allclose(linear(twists.last), [0.1, 0.0, -0.05])
    assert twists.last.header.frame_id == 'robot_base'
    assert list(joys.last.axes) == pytest.approx([0.5, 0.0, -0.25, 0.0, 0.0, 0.0])
    assert list(joys.last.buttons) == [0, 0]
    assert grippers.last.data == -1.0, 'the gripper starts open'

    mouse.set_state(state(buttons=(0, 1)))
    assert wait_for(lambda: grippers.last.data == 1.0, 2.0), 'button 1 closes the gripper'
    mouse.set_state(state(buttons=(0, 0)))
    assert wait_for(lambda: list(joys.last.buttons) == [0, 0], 2.0)
    assert grippers.last.data == 1.0, 'releasing the button keeps it closed'
    mouse.set_state(state(buttons=(0, 1)))
    assert wait_for(lambda: grippers.last.data == -1.0, 2.0), 'the next press opens it'


def test_device_loss_publishes_zero_and_recovers(ros, wait_for, teleop_logs):
    twists, joys, _ = teleop_logs
    mouse = FakeSpaceMouse([state(y=1.0)])
    make_node(ros, mouse)
    assert wait_for(lambda: len(twists) > 0 and linear(twists.last)[1] == pytest.approx(0.2),
                    5.0)
    mouse.unplug()
    assert wait_for(lambda: np.all(linear(twists.last) == 0.0), 2.0), 'zero after the loss'
    twists.clear()
    assert wait_for(lambda: len(twists) >= 10, 2.0), 'zero keeps being published'
    assert all(np.all(linear(m) == 0.0) for m in twists.messages)
    assert list(joys.last.axes) == [0.0] * 6
    mouse.plug()
    assert wait_for(lambda: linear(twists.last)[1] == pytest.approx(0.2), 5.0), 'recovers'
    assert mouse.open_count >= 2


def test_zero_twist_on_shutdown(ros, wait_for, teleop_logs):
    twists, _, _ = teleop_logs
    node = make_node(ros, FakeSpaceMouse([state(x=1.0)]))
    assert wait_for(lambda: len(twists) > 0 and linear(twists.last)[0] > 0.0, 5.0)
    ros.destroy_node(node)
    assert wait_for(lambda: np.all(linear(twists.last) == 0.0), 2.0), \
        'the last twist of a node that shuts down is zero'


def test_spacenav_topics_are_republished(ros, wait_for, teleop_logs):
    twists, joys, grippers = teleop_logs
    node = ros.add_node(SpaceMouseNode(context=ros.context, parameter_overrides=[
        Parameter('source', value='spacenav'), Parameter('deadband', value=0.0),
        Parameter('max_linear_velocity_mps', value=0.5),
        Parameter('axis_sign', value=[1, -1, 1, 1, 1, 1]),
        Parameter('input_timeout_s', value=0.3)]))
    twist_pub = ros.publisher(Twist, 'spacenav/twist')
    joy_pub = ros.publisher(Joy, 'spacenav/joy')
    assert ros.wait_for_subscribers(twist_pub) and ros.wait_for_subscribers(joy_pub)
    assert wait_for(lambda: len(twists) > 0, 5.0)
    assert np.all(linear(twists.last) == 0.0), 'zero before any spacenav input'
    joy_pub.publish(Joy(axes=[0.2, 0.4, 0.0, 0.0, 0.0, 0.1], buttons=[0, 1]))
    assert wait_for(lambda: grippers.last.data == 1.0, 2.0)
    assert list(joys.last.axes) == pytest.approx([0.2, -0.4, 0.0, 0.0, 0.0, 0.1])
    np.testing.assert_allclose(linear(twists.last), [0.1, -0.2, 0.0])
    moving = Twist()
    moving.linear.x, moving.linear.z = -0.6, 0.8
    for _ in range(3):
        twist_pub.publish(moving)
    assert wait_for(lambda: linear(twists.last)[0] == pytest.approx(-0.3), 2.0)
    np.testing.assert_allclose(linear(twists.last), [-0.3, 0.0, 0.4])
    assert wait_for(lambda: np.all(linear(twists.last) == 0.0), 2.0), \
        'spacenav silent for input_timeout_s -> zero'
    assert node.config.source == 'spacenav'


def test_parameters_have_descriptors_and_refuse_bad_values(ros):
    node = make_node(ros, FakeSpaceMouse())
    assert node.describe_parameter('source').read_only
    assert '(m/s)' in node.describe_parameter('max_linear_velocity_mps').description
    assert node.describe_parameter('deadband').floating_point_range[0].to_value == 0.95
    too_short = node.set_parameters([Parameter('axis_scale', value=[1.0] * 5)])[0]
    assert not too_short.successful and 'axis_scale needs 6' in too_short.reason
    assert not node.set_parameters([Parameter('deadband', value=1.5)])[0].successful
    assert not node.set_parameters([Parameter('source', value='spacenav')])[0].successful
    assert node.set_parameters([Parameter('max_linear_velocity_mps', value=0.05)])[0].successful
    assert node.config.max_linear_velocity_mps == 0.05


def test_invalid_source_is_refused_at_start(ros):
    with pytest.raises(ValueError, match='joystick'):
        SpaceMouseNode(context=ros.context,
                       parameter_overrides=[Parameter('source', value='joystick')])
