"""Simulation bridge through real DDS: sensors, commanded motion, scripted operator via the mux."""

import json

from active_finetune.nodes.command_mux_node import CommandMuxNode
from active_finetune.nodes.conversions import header_stamp_s, image_to_rgb, \
    linear_to_twist_stamped, pose_position
from active_finetune.nodes.qos import COMMAND_QOS, IMAGE_QOS, LATCHED_QOS, SENSOR_QOS
from active_finetune.nodes.sim_bridge_node import SimBridgeNode
from active_finetune.policy.inputs import resize_image
from active_finetune.sim.metaworld_env import SAWYER_ARM_JOINTS
from geometry_msgs.msg import PoseStamped, TwistStamped
import numpy as np
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, JointState, Joy
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

IMAGE_SIZE = 32


def start_bridge(ros, **overrides):
    params = {'rate_hz': 0.0, 'image_size': IMAGE_SIZE, 'record_start_delay_s': 0.0,
              'command_timeout_s': 0.2}
    params.update(overrides)
    return ros.add_node(SimBridgeNode(context=ros.context, parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()]))


def test_publishes_camera_joint_states_and_pose_with_one_stamp(ros, wait_for):
    images = ros.collect(Image, 'camera/image_raw', IMAGE_QOS)
    infos = ros.collect(CameraInfo, 'camera/camera_info', IMAGE_QOS)
    joints = ros.collect(JointState, 'joint_states', SENSOR_QOS)
    poses = ros.collect(PoseStamped, 'ee_pose', SENSOR_QOS)
    start_bridge(ros)
    assert wait_for(lambda: len(images) > 2 and len(infos) > 2 and len(joints) > 2
                    and len(poses) > 2, 10.0)
    rgb = image_to_rgb(images.last)
    assert rgb.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and rgb.std() > 0
    stamps = {header_stamp_s(m) for m in images.messages}
    assert any(header_stamp_s(m) in stamps for m in infos.messages)
    assert infos.last.k[0] > 0 and infos.last.width == IMAGE_SIZE
    names = list(joints.last.name)
    assert set(SAWYER_ARM_JOINTS) <= set(names) and 'gripper_finger_distance' in names
    opening = joints.last.position[names.index('gripper_finger_distance')]
    assert 0.0 < opening <= 0.1
    assert poses.last.header.frame_id == 'base_link'
    assert np.isfinite(pose_position(poses.last)).all()


@pytest.mark.parametrize('axis', [0, 2])
def test_cmd_twist_moves_the_end_effector_that_way(ros, wait_for, axis):
    poses = ros.collect(PoseStamped, 'ee_pose', SENSOR_QOS)
    cmd = ros.publisher(TwistStamped, 'cmd/twist', COMMAND_QOS)
    node = start_bridge(ros, max_steps=1000)
    assert wait_for(lambda: len(poses) > 0, 10.0)
    assert ros.wait_for_subscribers(cmd)
    start = pose_position(poses.last)
    velocity = np.zeros(3)
    velocity[axis] = 0.5 * node.config.max_linear_velocity_mps * (1 if axis == 0 else -1)

    def moved():
        cmd.publish(linear_to_twist_stamped(velocity, 0.0, 'base_link'))
        return abs(pose_position(poses.last)[axis] - start[axis]) > 0.03
    assert wait_for(moved, 10.0, interval_s=0.02)
    delta = pose_position(poses.last) - start
    assert np.sign(delta[axis]) == np.sign(velocity[axis])
    others = [i for i in range(3) if i != axis]
    assert np.abs(delta[others]).max() < 0.5 * abs(delta[axis]), delta


def test_reset_service_and_task_switch(ros, wait_for):
    statuses = ros.collect(String, 'sim/status', LATCHED_QOS)
    node = start_bridge(ros)
    assert wait_for(lambda: len(statuses) > 0, 10.0)
    episode = json.loads(statuses.last.data)['episode']
    client = ros.node.create_client(Trigger, 'sim/reset')
    assert client.wait_for_service(timeout_sec=5.0)
    future = client.call_async(Trigger.Request())
    assert wait_for(future.done, 5.0) and future.result().success
    assert wait_for(lambda: json.loads(statuses.last.data)['episode'] > episode, 5.0)
    task_pub = ros.publisher(String, 'policy/task', LATCHED_QOS)
    task_pub.publish(String(data='push-v3'))
    assert wait_for(lambda: json.loads(statuses.last.data)['task'] == 'push-v3', 10.0)
    task_pub.publish(String(data='not-a-task-v3'))
    assert wait_for(lambda: node._bridge.task == 'push-v3', 1.0)


def test_scripted_operator_demonstrates_through_the_command_mux(ros, wait_for):
    joys = ros.collect(Joy, 'teleop/joy', COMMAND_QOS)
    teleop = ros.collect(TwistStamped, 'teleop/twist', COMMAND_QOS)
    commands = ros.collect(TwistStamped, 'cmd/twist', COMMAND_QOS)
    success = ros.collect(Bool, 'sim/success', COMMAND_QOS)
    statuses = ros.collect(String, 'sim/status', LATCHED_QOS)
    ros.add_node(CommandMuxNode(context=ros.context, parameter_overrides=[
        Parameter('forward_source_stamp', value=True)]))
    start_bridge(ros, scripted_operator=True, max_steps=150, recorder_timeout_s=0.0)
    next_task = ros.publisher(String, 'operator/next_task', LATCHED_QOS)
    request = {'request_id': 3, 'round': 0, 'task': 'reach-v3', 'done': False}
    next_task.publish(String(data=json.dumps(request)))

    def finished():
        last = json.loads(statuses.last.data).get('last_episode') or {}
        return last.get('request_id') == 3
    assert wait_for(finished, 40.0), statuses.messages[-1:]
    last = json.loads(statuses.last.data)['last_episode']
    assert last['success'] and last['task'] == 'reach-v3', last
    presses = [list(m.buttons) for m in joys.messages]
    assert presses == [[1, 0], [0, 0], [1, 0], [0, 0]]
    assert len(teleop) >= last['steps'] and any(
        np.abs([m.twist.linear.x, m.twist.linear.y]).max() > 0.01 for m in teleop.messages)
    assert len(commands) > 0 and any(m.data for m in success.messages)
    # The same request again (a latched re-delivery) is not demonstrated twice.
    next_task.publish(String(data=json.dumps(request)))
    wait_for(lambda: False, 0.5)
    assert len(joys) == 4


def test_the_policy_stream_is_the_frame_resized_with_the_same_stamp(ros, wait_for):
    images = ros.collect(Image, 'camera/image_raw', IMAGE_QOS)
    small = ros.collect(Image, 'camera/image_policy', IMAGE_QOS)
    start_bridge(ros, rate_hz=20.0, policy_image_size=16)
    assert wait_for(lambda: len(images) >= 10 and len(small) >= 10, 20.0)
    assert {(m.width, m.height) for m in small.messages} == {(16, 16)}
    assert {(m.width, m.height) for m in images.messages} == {(IMAGE_SIZE, IMAGE_SIZE)}
    full_by_stamp = {header_stamp_s(m): m for m in images.messages}
    matched = [(m, full_by_stamp[header_stamp_s(m)]) for m in small.messages
               if header_stamp_s(m) in full_by_stamp]
    assert len(matched) >= len(small) - 1, 'every policy frame has the stamp of a full frame'
    for policy_msg, full_msg in matched[-3:]:
        np.testing.assert_array_equal(image_to_rgb(policy_msg),
                                      resize_image(image_to_rgb(full_msg), 16))
    assert abs(len(small) - len(images)) <= 2, 'one policy frame per full frame'


def test_policy_image_size_zero_publishes_no_policy_stream(ros, wait_for):
    images = ros.collect(Image, 'camera/image_raw', IMAGE_QOS)
    node = start_bridge(ros, policy_image_size=0)
    assert wait_for(lambda: len(images) > 2, 10.0)
    assert node.count_publishers('camera/image_policy') == 0
