"""
The simulated robot: Meta-World stepped with the command stream, giving sensor frames.

:class:`SimRobot` owns a :class:`~active_finetune.sim.metaworld_env.MetaWorldEnv` on its own
thread (MuJoCo's EGL renderer belongs to the thread that made it) and steps it at ``rate_hz`` (or
as fast as possible) with the newest velocity command from :class:`CommandInbox`.  After every
step it hands a :class:`SimFrame` to its outputs (the node publishes camera, joint states, pose),
and every episode start and end as an :class:`EpisodeEvent`.

Episodes end when success has held for ``success_hold_steps`` steps or after ``max_steps``; the
robot then resets the current task with the next seed.

An attached ``operator`` (the scripted operator of :mod:`active_finetune.sim.demonstrator`) may
take the robot over between steps: while it demonstrates, task and reset requests wait, and
before each step it sends its command (which comes back through the command stream).

Pace: with ``rate_hz > 0`` the robot steps in real time with whatever command is newest.  With
``rate_hz = 0`` it steps as fast as the commands come (tests): before each step it waits, up to
``command_timeout_s``, for a new command, so it runs lock-step with the policy and idles at
``1 / command_timeout_s`` steps per second when nobody commands.

During a demonstration, at either pace, the robot steps with the command the scripted operator
issued for the frame it last published: it waits (up to ``command_timeout_s``) until the newest
twist carries that command's header stamp, i.e. the command has come back through the command
stream (the command mux hands the teleop stamp on; the policy's commands and the zeros the mux
makes itself carry other stamps), as the in-process rollout executes the expert's action for each
observation.  Without that wait a command still in flight when the step came executed one
step late, which made the ROS-recorded demonstrations longer than and different from the
in-process ones.  Steps that still ran on an older command (the wait timed out) are counted in the
episode's end event (``late_commands``).
"""

from dataclasses import dataclass
import logging
import math
import threading
import time

from active_finetune.devices.camera import CameraIntrinsics
from active_finetune.sim.metaworld_env import MetaWorldEnv, SimConfig, validate_tasks
from active_finetune.sim.rollouts import episode_seed, PURPOSE_EVAL
import numpy as np

_LOG = logging.getLogger(__name__)

STAMP_TOLERANCE_S = 1e-6
"""Slack when comparing header stamps (a float-seconds stamp survives the message's sec/nanosec
only to about a microsecond)."""


@dataclass(frozen=True)
class SimFrame:
    """
    What the simulated robot's sensors give after one step (or a reset).

    :param stamp_s: time of the frame (the caller's clock)
    :param image: (H, W, 3) uint8 RGB
    :param ee_position_m: (3,) end-effector position in the base frame
    :param joint_positions: joint name -> position (rad or m), gripper joint included
    :param success: whether the task has succeeded in this episode
    :param task: the task running
    :param episode: episode counter (demonstrations included)
    :param step: steps taken in this episode (0 right after a reset)
    """

    stamp_s: float
    image: np.ndarray
    ee_position_m: np.ndarray
    joint_positions: dict
    success: bool
    task: str
    episode: int
    step: int


@dataclass(frozen=True)
class EpisodeEvent:
    """
    An episode starting or ending (for the node's status topic and logs).

    :param kind: 'start' or 'end'
    :param task: the task
    :param episode: episode counter
    :param seed: its reset seed
    :param request_id: the operator request it demonstrates, or None
    :param success: for 'end': whether it succeeded
    :param steps: for 'end': steps taken
    :param late_commands: for 'end' of a demonstration: steps that executed a command older than
        the one the operator issued for the step's frame
    """

    kind: str
    task: str
    episode: int
    seed: int
    request_id: int | None = None
    success: bool = False
    steps: int = 0
    late_commands: int = 0


class CommandInbox:
    """
    The newest velocity and gripper commands, with their arrival times (thread-safe).

    Twists are stored in m/s and read back normalised; a twist older than the timeout reads as
    zero.  The gripper is a position command and is held (open, -1, until one arrives).
    """

    def __init__(self):
        self._condition = threading.Condition()
        self._linear_mps = np.zeros(3)
        self._twist_time_s = None
        self._twist_stamp_s = None
        self._gripper = -1.0
        self._interrupted = False

    def interrupt(self):
        """Make every current and future wait for a twist return at once."""
        with self._condition:
            self._interrupted = True
            self._condition.notify_all()

    def set_twist(self, linear_mps, stamp_s=None):
        """
        Store a linear velocity command.

        :param linear_mps: (3,) vx, vy, vz in m/s
        :param stamp_s: its header stamp (when it was issued; None: unstamped)
        """
        linear = np.asarray(linear_mps, dtype=np.float64).reshape(3)
        with self._condition:
            self._linear_mps = linear
            self._twist_time_s = time.monotonic()
            self._twist_stamp_s = stamp_s
            self._condition.notify_all()

    def has_twist_issued_at(self, stamp_s):
        """
        Check that the newest twist is the command issued at ``stamp_s`` (by its header stamp).

        :param stamp_s: issue time of that command (the stamps' clock)
        :return: bool (False for an unstamped twist or none)
        """
        with self._condition:
            return self._issued_at(stamp_s)

    def _issued_at(self, stamp_s):
        return self._twist_stamp_s is not None and \
            abs(self._twist_stamp_s - stamp_s) <= STAMP_TOLERANCE_S

    def wait_for_twist_issued_at(self, stamp_s, timeout_s):
        """
        Wait until the newest twist is the command issued at ``stamp_s`` (by its header stamp).

        Another command meanwhile (the policy's, or a zero the command mux makes while the
        operator's stream is stale) does not end the wait.

        :param stamp_s: issue time of the command waited for (the stamps' clock)
        :param timeout_s: deadline in seconds
        :return: True when it arrived in time
        """
        with self._condition:
            return self._condition.wait_for(
                lambda: self._interrupted or self._issued_at(stamp_s), timeout_s)

    def set_gripper(self, value):
        """
        Store a gripper command.

        :param value: -1 open .. +1 closed
        """
        with self._condition:
            self._gripper = float(value)

    def action(self, max_linear_velocity_mps, timeout_s):
        """
        Read the command as a normalised Meta-World action.

        :param max_linear_velocity_mps: m/s of a normalised action of 1
        :param timeout_s: a twist older than this reads as zero
        :return: (4,) float64 action in [-1, 1]; NaN reads as zero
        """
        now_s = time.monotonic()
        with self._condition:
            fresh = self._twist_time_s is not None and now_s - self._twist_time_s <= timeout_s
            linear = self._linear_mps / max_linear_velocity_mps if fresh else np.zeros(3)
            gripper = self._gripper
        action = np.append(linear, gripper)
        return np.clip(np.nan_to_num(action, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)

    def wait_for_twist_after(self, since_s, timeout_s):
        """
        Wait until a twist has arrived after ``since_s``.

        :param since_s: time.monotonic() from which on a twist counts
        :param timeout_s: deadline in seconds
        :return: True when one arrived in time
        """
        def arrived():
            return self._interrupted or (
                self._twist_time_s is not None and self._twist_time_s >= since_s)

        with self._condition:
            return self._condition.wait_for(arrived, timeout_s)


class SimRobot:
    """
    Run Meta-World as a robot on a thread of its own.

    ``outputs`` receives everything to publish; it needs these methods, called from the stepping
    thread: ``publish_frame(frame)`` and ``episode_event(event)``.

    ``operator`` (None, or set before :meth:`start`) may take the robot over between steps; it
    is called from the stepping thread and needs: ``active`` (whether it is demonstrating),
    ``request_id`` (the request it demonstrates, or None), ``start_next()`` (start a waiting
    demonstration; return whether it took one), ``act(state)`` (send its command for this
    Meta-World state; return the command's header stamp, its issue time on the clock of the
    stamps, or None when unknown) and ``end(success)`` (the
    demonstration's episode ended, or the robot stopped during it).

    :param config: :class:`~active_finetune.sim.bridge.SimBridgeConfig` (the robot reads
        ``task``, ``seed``, ``image_size``, ``camera``, ``rate_hz``, ``max_steps``,
        ``success_hold_steps``, ``max_linear_velocity_mps``, ``command_timeout_s``,
        ``gripper_joint_name`` and ``gripper_open_position``)
    :param outputs: the publisher side (the node)
    :param now_s: clock for frame stamps (the node's clock)
    :param env_factory: callable(SimConfig) -> MetaWorldEnv (tests may inject one)
    """

    def __init__(self, config, outputs, now_s=time.time, env_factory=MetaWorldEnv):
        self.config = config
        self.commands = CommandInbox()
        self.operator = None
        """Who takes the robot over between steps (the scripted operator), or None."""
        self.stopping = threading.Event()
        """Set by :meth:`stop`; the operator's waits end on it too."""

        self._outputs = outputs
        self._now_s = now_s
        self._env_factory = env_factory
        self._lock = threading.Lock()
        self._wanted_task = None
        self._reset_wanted = False
        self._ready = threading.Event()
        self._thread = None
        self._env = None
        self._last_observation = None
        self.task = config.task
        self.episode = -1
        self.seed = None
        self.steps = 0
        self.success_steps = 0
        self.late_commands = 0
        """Steps of this episode that executed an older command than the operator issued."""
        self.error = None
        """repr of the exception that stopped the stepping thread, or None."""
        self.intrinsics = None
        """:class:`CameraIntrinsics` of the rendered camera, set once the env is built."""

    # ------------------------------------------------------------- requests (any thread)

    def request_task(self, task):
        """
        Switch to ``task`` (reset now, or after a running demonstration).

        :param task: Meta-World v3 task name
        :raises UnknownTaskError: for a task Meta-World does not have
        """
        validate_tasks([task])
        with self._lock:
            self._wanted_task = task

    def request_reset(self):
        """Reset the current task with the next seed (after a running demonstration)."""
        with self._lock:
            self._reset_wanted = True

    # ------------------------------------------------------------- thread

    def start(self, ready_timeout_s=30.0):
        """
        Start the stepping thread and wait until the first frame is out.

        :param ready_timeout_s: how long to wait for the environment to build
        :raises RuntimeError: when the environment failed or took too long
        """
        self._thread = threading.Thread(target=self._run, name='sim-bridge', daemon=True)
        self._thread.start()
        if not self._ready.wait(ready_timeout_s):
            raise RuntimeError(f'simulation not ready after {ready_timeout_s} s: {self.error}')
        if self.error is not None:
            raise RuntimeError(f'simulation failed to start: {self.error}')

    def stop(self, timeout_s=5.0):
        """
        Stop stepping and release the environment (a running demonstration is ended).

        :param timeout_s: how long to wait for the thread
        """
        self.stopping.set()
        self.commands.interrupt()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _operator_active(self):
        return self.operator is not None and self.operator.active

    def _run(self):
        config = self.config
        try:
            env_config = SimConfig(image_size=config.image_size, camera=config.camera,
                                   max_steps=config.max_steps + config.success_hold_steps + 1)
            with self._env_factory(env_config) as env:
                self._env = env
                self.reset(self.task, PURPOSE_EVAL)
                self._ready.set()
                self._loop()
                if self._operator_active():
                    self.operator.end(success=False)
        except Exception as error:  # noqa: B902 - report whatever stopped the simulation
            self.error = repr(error)
            _LOG.exception('simulation stopped')
        finally:
            self._env = None
            self._ready.set()

    def _loop(self):
        period_s = 1.0 / self.config.rate_hz if self.config.rate_hz > 0 else 0.0
        next_tick_s = last_step_s = time.monotonic()
        while not self.stopping.is_set():
            self._handle_requests()
            if self.stopping.is_set():
                break
            issued_s = None
            if self._operator_active():
                issued_s = self.operator.act(self._env.current_state())
            if period_s > 0:
                next_tick_s += period_s
                delay_s = next_tick_s - time.monotonic()
                if delay_s < -period_s:
                    next_tick_s = time.monotonic()
                elif delay_s > 0 and self.stopping.wait(delay_s):
                    break
            if issued_s is not None:
                # The command the operator issued for this frame, back through the command
                # stream (at real-time pace it is usually in already).
                self.commands.wait_for_twist_issued_at(issued_s, self.config.command_timeout_s)
            elif period_s == 0:
                # Lock-step with whoever commands; idles at 1 / command_timeout_s steps per
                # second without commands.
                self.commands.wait_for_twist_after(last_step_s, self.config.command_timeout_s)
            last_step_s = time.monotonic()
            if issued_s is not None and not self.commands.has_twist_issued_at(issued_s):
                self.late_commands += 1
            self._step()

    def _step(self):
        action = self.commands.action(self.config.max_linear_velocity_mps,
                                      self.config.command_timeout_s)
        observation, success, _ = self._env.step(action)
        self.steps += 1
        if success:
            self.success_steps += 1
        self._publish(observation, success)
        if self.success_steps >= self.config.success_hold_steps \
                or self.steps >= self.config.max_steps:
            self._end_episode(success)

    # ------------------------------------------------------------- episodes

    def _handle_requests(self):
        if self.operator is not None and self.operator.start_next():
            return
        if self._operator_active():
            return
        with self._lock:
            task, self._wanted_task = self._wanted_task, None
            reset, self._reset_wanted = self._reset_wanted, False
        if task is not None and task != self.task:
            self.reset(task, PURPOSE_EVAL)
        elif reset or task is not None:
            self.reset(self.task, PURPOSE_EVAL)

    def reset(self, task, purpose, request_id=None):
        """
        Start an episode now (stepping thread only): seed, reset, announce, publish a frame.

        :param task: Meta-World v3 task name
        :param purpose: PURPOSE_EVAL, or PURPOSE_DEMO for a demonstration
        :param request_id: the operator request it demonstrates (its seed index), or None
        """
        self.episode += 1
        index = self.episode if request_id is None else request_id
        self.seed = episode_seed(self.config.seed, purpose, task, index)
        observation = self._env.reset(task, self.seed)
        if self.intrinsics is None:
            self.intrinsics = self._camera_intrinsics()
        self.task = task
        self.steps = 0
        self.success_steps = 0
        self.late_commands = 0
        self._outputs.episode_event(EpisodeEvent(
            kind='start', task=task, episode=self.episode, seed=self.seed,
            request_id=request_id))
        self._publish(observation, False)

    def _end_episode(self, success):
        self._outputs.episode_event(EpisodeEvent(
            kind='end', task=self.task, episode=self.episode, seed=self.seed,
            request_id=None if self.operator is None else self.operator.request_id,
            success=bool(success), steps=self.steps, late_commands=self.late_commands))
        if self._operator_active():
            self.operator.end(success)
        with self._lock:
            self._reset_wanted = True

    # ------------------------------------------------------------- sensors

    def republish(self):
        """Publish the newest observation again with a fresh stamp (stepping thread only)."""
        self._publish(self._last_observation, False)

    def _publish(self, observation, success):
        self._last_observation = observation
        positions = self._env.joint_positions()
        positions[self.config.gripper_joint_name] = \
            float(observation.proprio[3]) * self.config.gripper_open_position
        self._outputs.publish_frame(SimFrame(
            stamp_s=self._now_s(), image=observation.image,
            ee_position_m=observation.proprio[:3].astype(np.float64),
            joint_positions=positions, success=bool(success), task=self.task,
            episode=self.episode, step=self.steps))

    def _camera_intrinsics(self):
        size = self.config.image_size
        fovy_deg = self._env.camera_fovy_deg()
        focal_px = 0.5 * size / math.tan(math.radians(fovy_deg) / 2.0)
        return CameraIntrinsics(width=size, height=size, fx=focal_px, fy=focal_px,
                                cx=(size - 1) / 2.0, cy=(size - 1) / 2.0)
