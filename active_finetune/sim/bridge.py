"""
The ROS-free core of the simulation bridge node: the simulated robot with its scripted operator.

:class:`SimBridgeConfig` holds the node's parameters.  :class:`SimBridge` is what the node
drives: it builds the simulated robot (:class:`~active_finetune.sim.robot.SimRobot`, Meta-World
stepped with the command stream, in :mod:`active_finetune.sim.robot`) and attaches the scripted
operator to it (:class:`~active_finetune.sim.demonstrator.Demonstrator`, which demonstrates
``operator/next_task`` requests, in :mod:`active_finetune.sim.demonstrator`); both publish
through the node.
"""

from dataclasses import dataclass, field
import math
import time

from active_finetune.sim.demonstrator import Demonstrator
from active_finetune.sim.metaworld_env import MetaWorldEnv, validate_tasks
from active_finetune.sim.robot import SimRobot


@dataclass
class SimBridgeConfig:
    """
    Parameters of the simulation bridge node (``active_finetune.nodes.sim_bridge_node``).

    :param task: Meta-World v3 task at start-up
    :param seed: base seed of every reset (episodes and demonstrations draw from it)
    :param image_size: square camera image side
    :param policy_image_size: side of the policy-resolution image published besides the full one
        (0 = none)
    :param camera: MuJoCo camera name
    :param rate_hz: steps per second in real time; 0 = as fast as possible
    :param max_steps: episode horizon
    :param success_hold_steps: steps success must persist before the episode ends
    :param max_linear_velocity_mps: m/s that map to a normalised action of 1
    :param command_timeout_s: a velocity command older than this counts as zero
    :param gripper_joint_name: extra joint giving the gripper finger distance
    :param gripper_open_position: that joint's position when fully open
    :param frame_id: frame of ee_pose and joint_states (robot base)
    :param camera_frame_id: optical frame of the camera image
    :param scripted_operator: demonstrate operator/next_task requests with the scripted expert
    :param operator_noise_std: Gaussian noise on the expert's normalised actions
    :param direct_teleop: act on teleop/* instead of cmd/* (tests without a command mux)
    :param record_start_delay_s: pause between the record press and the first demo step
    :param recorder_timeout_s: how long the scripted operator waits for recorder/status to confirm
        a press before pressing again (0 = press blindly)
    """

    task: str = field(default='reach-v3', metadata={
        'description': 'Meta-World v3 task at start-up (policy/task and operator/next_task '
                       'change it)', 'read_only': True})
    seed: int = field(default=0, metadata={
        'description': 'base seed of the resets (count)', 'range': (0, 2 ** 31 - 1),
        'read_only': True})
    image_size: int = field(default=96, metadata={
        'description': 'side of the square camera image (px)', 'range': (16, 1024),
        'read_only': True})
    policy_image_size: int = field(default=96, metadata={
        'description': 'side of the square image on camera/image_policy: each frame area-resized '
                       "to the policy's input size, same stamp as camera/image_raw (px); 0 = no "
                       'policy stream', 'range': (0, 1024), 'read_only': True})
    camera: str = field(default='workspace', metadata={
        'description': 'camera rendered to camera/image_raw: a Meta-World camera name or '
                       '"workspace" (a free camera framing the table)', 'read_only': True})
    rate_hz: float = field(default=20.0, metadata={
        'description': 'simulation steps per second in real time (Hz); 0 = as fast as possible',
        'range': (0.0, 1000.0), 'read_only': True})
    max_steps: int = field(default=200, metadata={
        'description': 'episode horizon (steps)', 'range': (1, 100000), 'read_only': True})
    success_hold_steps: int = field(default=5, metadata={
        'description': 'steps success must persist before the episode ends (steps)',
        'range': (1, 1000), 'read_only': True})
    max_linear_velocity_mps: float = field(default=0.25, metadata={
        'description': 'end-effector speed of a normalised action of 1 (m/s); cmd/twist is '
                       'divided by it', 'range': (1e-6, 5.0), 'read_only': True})
    command_timeout_s: float = field(default=0.2, metadata={
        'description': 'a velocity command older than this is treated as zero (s)',
        'range': (0.001, 10.0), 'read_only': True})
    gripper_joint_name: str = field(default='gripper_finger_distance', metadata={
        'description': 'extra joint in joint_states: finger distance, gripper_open_position '
                       'when open (m)', 'read_only': True})
    gripper_open_position: float = field(default=0.1, metadata={
        'description': 'gripper_joint_name position when fully open (m)', 'range': (1e-6, 10.0),
        'read_only': True})
    frame_id: str = field(default='base_link', metadata={
        'description': 'frame of ee_pose and joint_states (robot base, REP 103)',
        'read_only': True})
    camera_frame_id: str = field(default='camera_color_optical_frame', metadata={
        'description': 'frame_id of camera/image_raw and camera/camera_info', 'read_only': True})
    scripted_operator: bool = field(default=False, metadata={
        'description': 'demonstrate each operator/next_task request with the scripted expert',
        'read_only': True})
    operator_noise_std: float = field(default=0.0, metadata={
        'description': 'std of Gaussian noise on the expert action (normalised units)',
        'range': (0.0, 1.0), 'read_only': True})
    direct_teleop: bool = field(default=False, metadata={
        'description': 'act on teleop/twist and teleop/gripper instead of cmd/* (tests without '
                       'a command mux)', 'read_only': True})
    record_start_delay_s: float = field(default=0.3, metadata={
        'description': 'pause between the record-button press and the first demo step (s)',
        'range': (0.0, 10.0), 'read_only': True})
    recorder_timeout_s: float = field(default=10.0, metadata={
        'description': 'the scripted operator watches recorder/status like a person watching '
                       'the console: it presses record again if the recorder did not start '
                       'within this time, and gives up on a request after three tries (s); '
                       '0 = press blindly', 'range': (0.0, 120.0), 'read_only': True})

    def __post_init__(self):
        validate_tasks([self.task])
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f'image_size must be in [16, 1024], got {self.image_size}')
        if not 0 <= self.policy_image_size <= 1024:
            raise ValueError(f'policy_image_size must be in [0, 1024] (0 = off), got '
                             f'{self.policy_image_size}')
        if not (math.isfinite(self.rate_hz) and self.rate_hz >= 0):
            raise ValueError(f'rate_hz must be a finite number >= 0, got {self.rate_hz!r}')
        for name in ('max_steps', 'success_hold_steps'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        for name in ('max_linear_velocity_mps', 'command_timeout_s', 'gripper_open_position'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f'{name} must be a positive finite number, got {value!r}')
        for name in ('operator_noise_std', 'record_start_delay_s', 'recorder_timeout_s'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f'{name} must be a finite number >= 0, got {value!r}')
        for name in ('gripper_joint_name', 'frame_id', 'camera_frame_id', 'camera'):
            if not getattr(self, name):
                raise ValueError(f'{name} must not be empty')


class SimBridge:
    """
    Meta-World as a robot on a thread of its own, with the scripted operator attached.

    ``outputs`` receives everything to publish; it needs these methods, called from the stepping
    thread: ``publish_frame(frame)``, ``publish_teleop(linear_mps, gripper)``,
    ``press_record_button()``, ``episode_event(event)`` and ``recorder_state()`` (the newest
    recorder/status as (state, task), or None before any arrived).

    :param config: :class:`SimBridgeConfig`
    :param outputs: the publisher side (the node)
    :param now_s: clock for frame stamps (the node's clock)
    :param env_factory: callable(SimConfig) -> MetaWorldEnv (tests may inject one)
    """

    def __init__(self, config, outputs, now_s=time.time, env_factory=MetaWorldEnv):
        self.config = config
        self.robot = SimRobot(config, outputs, now_s=now_s, env_factory=env_factory)
        """The simulated robot (:class:`~active_finetune.sim.robot.SimRobot`)."""
        self.operator = Demonstrator(config, outputs, self.robot)
        """The scripted operator (:class:`~active_finetune.sim.demonstrator.Demonstrator`)."""
        self.robot.operator = self.operator
        self.commands = self.robot.commands
        """The robot's :class:`~active_finetune.sim.robot.CommandInbox` (cmd/* goes here)."""
        self.demos = self.operator.requests
        """The operator's :class:`~active_finetune.sim.demonstrator.DemoRequests`."""

    # ------------------------------------------------------------- state (any thread)

    @property
    def task(self):
        """:return: the task running."""
        return self.robot.task

    @property
    def episode(self):
        """:return: the episode counter (demonstrations included)."""
        return self.robot.episode

    @property
    def seed(self):
        """:return: the reset seed of the current episode (None before the first)."""
        return self.robot.seed

    @property
    def steps(self):
        """:return: steps taken in the current episode."""
        return self.robot.steps

    @property
    def error(self):
        """:return: repr of the exception that stopped the stepping thread, or None."""
        return self.robot.error

    @property
    def intrinsics(self):
        """:return: CameraIntrinsics of the rendered camera, once the env is built (else None)."""
        return self.robot.intrinsics

    @property
    def demo_request_id(self):
        """:return: the request id being demonstrated, or None."""
        return self.operator.request_id

    # ------------------------------------------------------------- requests (any thread)

    def request_task(self, task):
        """
        Switch to ``task`` (reset now, or after a running demonstration).

        :param task: Meta-World v3 task name
        :raises UnknownTaskError: for a task Meta-World does not have
        """
        self.robot.request_task(task)

    def request_reset(self):
        """Reset the current task with the next seed (after a running demonstration)."""
        self.robot.request_reset()

    # ------------------------------------------------------------- thread

    def start(self, ready_timeout_s=30.0):
        """
        Start the stepping thread and wait until the first frame is out.

        :param ready_timeout_s: how long to wait for the environment to build
        :raises RuntimeError: when the environment failed or took too long
        """
        self.robot.start(ready_timeout_s)

    def stop(self, timeout_s=5.0):
        """
        Stop stepping and release the environment (ends a demonstration with a record press).

        :param timeout_s: how long to wait for the thread
        """
        self.robot.stop(timeout_s)
