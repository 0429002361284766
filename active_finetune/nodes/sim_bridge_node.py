"""
Simulation bridge node: Meta-World as a robot, over the same topics as the lab arm.

Publishes ``camera/image_raw`` and ``camera/camera_info`` (image QoS, same stamp),
``camera/image_policy`` (the frame area-resized to ``policy_image_size``, the policy's input size,
same stamp, published first; 0 turns it off),
``joint_states`` (Sawyer arm joints, finger joints, and ``gripper_joint_name`` = finger distance),
``ee_pose`` (PoseStamped, position only, in ``frame_id``), ``sim/success`` (Bool, every step) and
``sim/status`` (JSON, latched: state, task, episode, seed, request_id, step, last_episode).
Subscribes ``cmd/twist`` and ``cmd/gripper`` (or ``teleop/*`` with ``direct_teleop``): the twist
divided by ``max_linear_velocity_mps`` is the Meta-World action (zero when older than
``command_timeout_s``), the gripper command is held.  ``policy/task`` (String) switches the task
(reset at once, or after a running demonstration).  Service ``sim/reset`` (std_srvs/Trigger)
resets the current task with the next seed.

With ``scripted_operator`` it also subscribes ``operator/next_task`` (JSON, latched) and, for each
new request, demonstrates the task with Meta-World's scripted expert: a ``teleop/joy`` press of
button 0 starts recording, ``teleop/twist`` / ``teleop/gripper`` carry the expert's actions (which
reach the sim back through the command mux), a second press stops.  See
:mod:`active_finetune.sim.bridge` (what this node drives), :mod:`active_finetune.sim.robot` for
the stepping and :mod:`active_finetune.sim.demonstrator` for the scripted operator's state
machine, which run on their own thread so the executor is never blocked by rendering.
"""

import os

from active_finetune.nodes.conversions import camera_info_from_intrinsics, \
    linear_to_twist_stamped, rgb_to_image, s_to_stamp, stamp_to_s, twist_stamped_to_linear
from active_finetune.nodes.parameters import declare_config
from active_finetune.nodes.qos import COMMAND_QOS, IMAGE_QOS, LATCHED_QOS, SENSOR_QOS
from active_finetune.nodes.spin import run_node
from active_finetune.payloads import decode_next_task, decode_recorder_status, encode, \
    PayloadError, SimStatus
from active_finetune.policy.inputs import POLICY_IMAGE_TOPIC, resize_image
from active_finetune.sim.bridge import SimBridge, SimBridgeConfig
from active_finetune.sim.metaworld_env import UnknownTaskError
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState, Joy
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

JOY_AXES = 6
JOY_BUTTONS = 2
RECORD_BUTTON = 0


class SimBridgeNode(Node):
    """
    Meta-World robot: sensors out, velocity commands in, optional scripted operator.

    :param kwargs: passed to rclpy Node (context, parameter_overrides, ...)
    """

    def __init__(self, **kwargs):
        # Headless MuJoCo rendering; must be set before mujoco is first imported (the config's
        # task validation imports Meta-World).  A user's own MUJOCO_GL wins.
        os.environ.setdefault('MUJOCO_GL', 'egl')
        super().__init__('sim_bridge', **kwargs)
        self.config = declare_config(self, SimBridgeConfig)
        self._image_pub = self.create_publisher(Image, 'camera/image_raw', IMAGE_QOS)
        self._policy_image_pub = None
        if self.config.policy_image_size > 0:
            self._policy_image_pub = self.create_publisher(Image, POLICY_IMAGE_TOPIC, IMAGE_QOS)
        self._info_pub = self.create_publisher(CameraInfo, 'camera/camera_info', IMAGE_QOS)
        self._joint_pub = self.create_publisher(JointState, 'joint_states', SENSOR_QOS)
        self._pose_pub = self.create_publisher(PoseStamped, 'ee_pose', SENSOR_QOS)
        self._success_pub = self.create_publisher(Bool, 'sim/success', COMMAND_QOS)
        self._status_pub = self.create_publisher(String, 'sim/status', LATCHED_QOS)
        self._teleop_twist_pub = self.create_publisher(TwistStamped, 'teleop/twist', COMMAND_QOS)
        self._teleop_gripper_pub = self.create_publisher(Float64, 'teleop/gripper', COMMAND_QOS)
        self._joy_pub = self.create_publisher(Joy, 'teleop/joy', COMMAND_QOS)
        self._last_episode = None
        self.status = {}
        """The newest sim/status dict."""

        self._recorder_state = None
        self._bridge = SimBridge(self.config, self, now_s=self._now_s)
        source = 'teleop' if self.config.direct_teleop else 'cmd'
        self.create_subscription(TwistStamped, f'{source}/twist', self._on_twist, COMMAND_QOS)
        self.create_subscription(Float64, f'{source}/gripper', self._on_gripper, COMMAND_QOS)
        self.create_subscription(String, 'policy/task', self._on_task, LATCHED_QOS)
        self.create_subscription(String, 'policy/task', self._on_task, COMMAND_QOS)
        if self.config.scripted_operator:
            self.create_subscription(String, 'operator/next_task', self._on_next_task,
                                     LATCHED_QOS)
            self.create_subscription(String, 'recorder/status', self._on_recorder_status,
                                     LATCHED_QOS)
        self.create_service(Trigger, 'sim/reset', self._on_reset)
        self._bridge.start()
        self.get_logger().info(
            f'simulating {self.config.task} at '
            f'{self.config.rate_hz if self.config.rate_hz > 0 else "max"} Hz, '
            f'{self.config.image_size}px images, commands from {source}/*'
            + (', scripted operator on' if self.config.scripted_operator else ''))

    def _now_s(self):
        return self.get_clock().now().nanoseconds * 1e-9

    # ---------------------------------------------------------------- subscriptions

    def _on_twist(self, msg):
        stamp_s = stamp_to_s(msg.header.stamp)
        self._bridge.commands.set_twist(twist_stamped_to_linear(msg), stamp_s or None)

    def _on_gripper(self, msg):
        self._bridge.commands.set_gripper(msg.data)

    def _on_task(self, msg):
        task = msg.data.strip()
        if not task or task == self._bridge.task:
            return
        try:
            self._bridge.request_task(task)
        except UnknownTaskError as error:
            self.get_logger().error(f'ignoring policy/task: {error}')
            return
        self.get_logger().info(f'switching the simulation to {task}')

    def _on_next_task(self, msg):
        try:
            outcome = self._bridge.demos.offer(decode_next_task(msg.data).to_dict())
        except ValueError as error:
            self.get_logger().error(f'ignoring operator/next_task: {error}')
            return
        if outcome == 'queued':
            self.get_logger().info(f'scripted operator will demonstrate: {msg.data[:200]}')

    def _on_reset(self, request, response):
        if self._bridge.error is not None:
            response.success = False
            response.message = f'simulation stopped: {self._bridge.error}'
            return response
        self._bridge.request_reset()
        response.success = True
        response.message = f'resetting {self._bridge.task}' + (
            ' after the running demonstration' if self._bridge.demo_request_id is not None
            else '')
        return response

    # ---------------------------------------------------------------- bridge outputs
    # Called from the bridge's stepping thread; rclpy publishers are thread-safe.

    def publish_frame(self, frame):
        """
        Publish the sensors of one simulation frame, all with the frame's stamp.

        :param frame: :class:`active_finetune.sim.robot.SimFrame`
        """
        stamp = s_to_stamp(frame.stamp_s)
        if self._policy_image_pub is not None:
            self._policy_image_pub.publish(rgb_to_image(
                resize_image(frame.image, self.config.policy_image_size), frame.stamp_s,
                self.config.camera_frame_id))
        self._image_pub.publish(rgb_to_image(frame.image, frame.stamp_s,
                                             self.config.camera_frame_id))
        self._info_pub.publish(camera_info_from_intrinsics(
            self._bridge.intrinsics, frame.stamp_s,
            self.config.camera_frame_id))
        joints = JointState()
        joints.header.stamp = stamp
        joints.header.frame_id = self.config.frame_id
        joints.name = list(frame.joint_positions)
        joints.position = [float(v) for v in frame.joint_positions.values()]
        self._joint_pub.publish(joints)
        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.header.frame_id = self.config.frame_id
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (
            float(v) for v in frame.ee_position_m)
        pose.pose.orientation.w = 1.0
        self._pose_pub.publish(pose)
        self._success_pub.publish(Bool(data=frame.success))

    def publish_teleop(self, linear_mps, gripper):
        """
        Publish the scripted operator's command as the SpaceMouse would (gripper, then twist).

        :param linear_mps: (3,) m/s
        :param gripper: -1 open .. +1 closed
        :return: the twist's header stamp (s), which the command mux hands on in cmd/twist
        """
        stamp_s = self._now_s()
        self._teleop_gripper_pub.publish(Float64(data=float(gripper)))
        self._teleop_twist_pub.publish(
            linear_to_twist_stamped(linear_mps, stamp_s, self.config.frame_id))
        return stamp_s

    def _on_recorder_status(self, msg):
        try:
            status = decode_recorder_status(msg.data)
            self._recorder_state = (status.state, status.task)
        except PayloadError as error:
            self.get_logger().warning(f'ignoring malformed recorder/status: {error}',
                                      throttle_duration_sec=5.0)

    def recorder_state(self):
        """
        Give the newest recorder/status.

        :return: (state, task), or None before the recorder said anything
        """
        return self._recorder_state

    def press_record_button(self):
        """Publish a press and a release of record button 0 on teleop/joy."""
        for pressed in (1, 0):
            joy = Joy()
            joy.header.stamp = s_to_stamp(self._now_s())
            joy.axes = [0.0] * JOY_AXES
            joy.buttons = [0] * JOY_BUTTONS
            joy.buttons[RECORD_BUTTON] = pressed
            self._joy_pub.publish(joy)

    def episode_event(self, event):
        """
        Log an episode start or end and publish sim/status.

        :param event: :class:`active_finetune.sim.robot.EpisodeEvent`
        """
        if event.kind == 'end':
            self._last_episode = {'task': event.task, 'episode': event.episode,
                                  'success': event.success, 'steps': event.steps,
                                  'request_id': event.request_id}
            late = '' if event.request_id is None else \
                f" ({event.late_commands} on a command older than the operator's)"
            self.get_logger().info(
                f'episode {event.episode} of {event.task} ended: success={event.success} '
                f'after {event.steps} steps{late}')
            if event.request_id is not None and 2 * event.late_commands > event.steps:
                self.get_logger().warning(
                    f'{event.late_commands} of {event.steps} demonstration steps waited '
                    f"{self.config.command_timeout_s} s for the operator's command in vain: does "
                    'cmd/twist keep the teleop stamp (command mux forward_source_stamp: true)?',
                    throttle_duration_sec=60.0)
            return
        self.status = {
            'state': 'demonstrating' if event.request_id is not None else 'running',
            'task': event.task, 'episode': event.episode, 'seed': event.seed,
            'request_id': event.request_id, 'last_episode': self._last_episode}
        self._status_pub.publish(String(data=encode(SimStatus.from_dict(self.status))))

    # ---------------------------------------------------------------- shutdown

    def destroy_node(self):
        """Stop the simulation thread (a running demonstration is closed with a record press)."""
        self._bridge.stop()
        if self._bridge.error is not None:
            self.get_logger().error(f'simulation had stopped: {self._bridge.error}')
        super().destroy_node()


def main(args=None):
    """
    Run the simulation bridge until Ctrl-C or SIGTERM.

    :param args: ROS command-line arguments
    """
    run_node(SimBridgeNode, args)


if __name__ == '__main__':
    main()
