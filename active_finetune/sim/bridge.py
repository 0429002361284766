"""
The ROS-free core of the simulation bridge: Meta-World run as a robot, plus a scripted operator.

:class:`SimBridge` owns a :class:`~active_finetune.sim.metaworld_env.MetaWorldEnv` on its own
thread (MuJoCo's EGL renderer belongs to the thread that made it) and steps it at ``rate_hz`` (or
as fast as possible) with the newest velocity command from :class:`CommandInbox`.  After every
step it hands a :class:`SimFrame` to its outputs (the node publishes camera, joint states, pose).

Episodes end when success has held for ``success_hold_steps`` steps or after ``max_steps``; the
bridge then resets the current task with the next seed.

Scripted-operator mode (:class:`DemoRequests`): for each new ``operator/next_task`` request the
bridge resets to the requested task (seeded from the request id), presses record button 0, and
every step publishes the Meta-World scripted expert's action as a teleop command, then steps with
the command that comes back (``cmd/*`` through the command mux, so the sim acts only on what
the robot would receive).  When the episode ends it presses button 0 again.  A request that
arrives during a demonstration waits for its end; one that arrives while the policy drives
starts at once.

Pace: with ``rate_hz > 0`` the bridge steps in real time with whatever command is newest.  With
``rate_hz = 0`` it steps as fast as the commands come (tests): before each step it waits, up to
``command_timeout_s``, for a new command (during a demonstration: the one its own teleop message
produced), so it runs lock-step with the policy or the scripted operator and idles at
``1 / command_timeout_s`` steps per second when nobody commands.
"""

from dataclasses import dataclass, field
import logging
import math
import threading
import time

from active_finetune.devices.camera import CameraIntrinsics
from active_finetune.sim.metaworld_env import MetaWorldEnv, SimConfig, validate_tasks
from active_finetune.sim.operators import ScriptedOperator
from active_finetune.sim.rollouts import episode_seed, PURPOSE_DEMO, PURPOSE_EVAL
import numpy as np

_LOG = logging.getLogger(__name__)


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
    """

    kind: str
    task: str
    episode: int
    seed: int
    request_id: int | None = None
    success: bool = False
    steps: int = 0


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
        self._gripper = -1.0
        self._gripper_time_s = None
        self._interrupted = False

    def interrupt(self):
        """Make every current and future :meth:`wait_for_commands_after` return at once."""
        with self._condition:
            self._interrupted = True
            self._condition.notify_all()

    def set_twist(self, linear_mps):
        """
        Store a linear velocity command.

        :param linear_mps: (3,) vx, vy, vz in m/s
        """
        linear = np.asarray(linear_mps, dtype=np.float64).reshape(3)
        with self._condition:
            self._linear_mps = linear
            self._twist_time_s = time.monotonic()
            self._condition.notify_all()

    def set_gripper(self, value):
        """
        Store a gripper command.

        :param value: -1 open .. +1 closed
        """
        with self._condition:
            self._gripper = float(value)
            self._gripper_time_s = time.monotonic()
            self._condition.notify_all()

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

    def wait_for_commands_after(self, since_s, timeout_s, need_gripper=True):
        """
        Wait until a twist (and a gripper command) has arrived after ``since_s``.

        :param since_s: time.monotonic() the request for them was sent
        :param timeout_s: deadline in seconds
        :param need_gripper: also wait for a gripper command
        :return: True when they arrived in time
        """
        def arrived():
            twist = self._twist_time_s is not None and self._twist_time_s >= since_s
            gripper = not need_gripper or (
                self._gripper_time_s is not None and self._gripper_time_s >= since_s)
            return self._interrupted or (twist and gripper)

        with self._condition:
            return self._condition.wait_for(arrived, timeout_s)


class DemoRequests:
    """
    Turn ``operator/next_task`` payloads into demonstrations to run, once per request id.

    Thread-safe: :meth:`offer` from a subscription, :meth:`take` from the stepping thread.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._seen = set()
        self._pending = None

    def offer(self, payload):
        """
        Consider a suggestion; a new request id with a task and ``done`` false becomes pending.

        :param payload: the decoded JSON dict
        :return: what was done with it: 'queued', 'duplicate', 'done' or 'no_task'
        :raises ValueError: for a payload without an int request_id, or an unknown task
        """
        if not isinstance(payload, dict):
            raise ValueError(f'operator/next_task must be a JSON object, got {payload!r}')
        request_id = payload.get('request_id')
        if isinstance(request_id, bool) or not isinstance(request_id, int):
            raise ValueError(f'operator/next_task needs an int request_id, got {request_id!r}')
        task = payload.get('task') or ''
        if payload.get('done'):
            return 'done'
        if not task:
            return 'no_task'
        with self._lock:
            if request_id in self._seen:
                return 'duplicate'
            validate_tasks([task])
            self._seen.add(request_id)
            self._pending = (request_id, task)
            return 'queued'

    def retry(self, request_id, task):
        """
        Queue a request again whose recording was lost (the recorder died during it).

        A newer request that arrived meanwhile wins.

        :param request_id: the lost request's id
        :param task: its task
        """
        with self._lock:
            if self._pending is None:
                self._pending = (request_id, task)

    def take(self):
        """
        Take the pending demonstration, if any.

        :return: (request_id, task) or None
        """
        with self._lock:
            pending, self._pending = self._pending, None
            return pending

    @property
    def has_pending(self):
        """:return: whether a demonstration waits to be run."""
        with self._lock:
            return self._pending is not None


class _Demo:
    """A demonstration in progress: its request and the scripted expert acting it."""

    def __init__(self, request_id, task, operator):
        self.request_id = request_id
        self.task = task
        self.operator = operator


class SimBridge:
    """
    Run Meta-World as a robot on a thread of its own.

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
        self.commands = CommandInbox()
        self.demos = DemoRequests()
        self._outputs = outputs
        self._now_s = now_s
        self._env_factory = env_factory
        self._lock = threading.Lock()
        self._wanted_task = None
        self._reset_wanted = False
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = None
        self._env = None
        self._demo = None
        self._last_observation = None
        self.task = config.task
        self.episode = -1
        self.seed = None
        self.steps = 0
        self.success_steps = 0
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

    @property
    def demo_request_id(self):
        """:return: the request id being demonstrated, or None."""
        demo = self._demo
        return None if demo is None else demo.request_id

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
        Stop stepping and release the environment (ends a demonstration with a record press).

        :param timeout_s: how long to wait for the thread
        """
        self._stop.set()
        self.commands.interrupt()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self):
        config = self.config
        try:
            env_config = SimConfig(image_size=config.image_size, camera=config.camera,
                                   max_steps=config.max_steps + config.success_hold_steps + 1)
            with self._env_factory(env_config) as env:
                self._env = env
                self._reset(self.task, PURPOSE_EVAL)
                self._ready.set()
                self._loop()
                if self._demo is not None:
                    self._end_demo(success=False)
        except Exception as error:  # noqa: B902 - report whatever stopped the simulation
            self.error = repr(error)
            _LOG.exception('simulation stopped')
        finally:
            self._env = None
            self._ready.set()

    def _loop(self):
        period_s = 1.0 / self.config.rate_hz if self.config.rate_hz > 0 else 0.0
        next_tick_s = last_step_s = time.monotonic()
        while not self._stop.is_set():
            self._handle_requests()
            if self._stop.is_set():
                break
            sent_s = None
            if self._demo is not None:
                action = self._demo.operator.act(self._env.current_state())
                sent_s = time.monotonic()
                self._outputs.publish_teleop(
                    action[:3].astype(np.float64) * self.config.max_linear_velocity_mps,
                    float(action[3]))
            if period_s > 0:
                next_tick_s += period_s
                delay_s = next_tick_s - time.monotonic()
                if delay_s < -period_s:
                    next_tick_s = time.monotonic()
                elif delay_s > 0 and self._stop.wait(delay_s):
                    break
            else:
                # Lock-step with whoever commands (during a demonstration: with the twist its own
                # teleop message produced; the mux forwards the gripper only when it changes);
                # idles at 1 / command_timeout_s steps per second without commands.
                self.commands.wait_for_commands_after(
                    last_step_s if sent_s is None else sent_s, self.config.command_timeout_s,
                    need_gripper=False)
            last_step_s = time.monotonic()
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
        if self._demo is None and self.config.scripted_operator:
            pending = self.demos.take()
            if pending is not None:
                self._start_demo(*pending)
                return
        if self._demo is not None:
            return
        with self._lock:
            task, self._wanted_task = self._wanted_task, None
            reset, self._reset_wanted = self._reset_wanted, False
        if task is not None and task != self.task:
            self._reset(task, PURPOSE_EVAL)
        elif reset or task is not None:
            self._reset(self.task, PURPOSE_EVAL)

    def _reset(self, task, purpose, request_id=None):
        self.episode += 1
        index = self.episode if request_id is None else request_id
        self.seed = episode_seed(self.config.seed, purpose, task, index)
        observation = self._env.reset(task, self.seed)
        if self.intrinsics is None:
            self.intrinsics = self._camera_intrinsics()
        self.task = task
        self.steps = 0
        self.success_steps = 0
        self._outputs.episode_event(EpisodeEvent(
            kind='start', task=task, episode=self.episode, seed=self.seed,
            request_id=request_id))
        self._publish(observation, False)

    def _start_demo(self, request_id, task):
        self._reset(task, PURPOSE_DEMO, request_id)
        self._demo = _Demo(request_id, task, ScriptedOperator(
            task, noise_std=self.config.operator_noise_std, seed=self.seed))
        _LOG.info('demonstrating %s for request %d (seed %d)', task, request_id, self.seed)
        if not self._press_until(lambda state: state[0] == 'recording' and state[1] == task,
                                 f'start recording {task}'):
            _LOG.error('the recorder did not start recording %s for request %d; skipping it',
                       task, request_id)
            self._demo = None
            return
        if self.config.record_start_delay_s > 0:
            self._stop.wait(self.config.record_start_delay_s)
        # A fresh frame right before the first action, for the recorder and the policy node.
        self._publish(self._last_observation, False)

    def _press_until(self, confirmed, what, tries=3):
        """
        Press the record button and wait for recorder/status to show ``confirmed``.

        A person at the console presses again when nothing happened; so does this operator.

        :param confirmed: predicate on (state, task)
        :param what: for the log
        :param tries: presses before giving up
        :return: True when confirmed (always True with recorder_timeout_s 0)
        """
        timeout_s = self.config.recorder_timeout_s
        for attempt in range(tries):
            self._outputs.press_record_button()
            if timeout_s <= 0:
                return True
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not self._stop.is_set():
                state = self._outputs.recorder_state()
                if state is not None and confirmed(state):
                    return True
                self._stop.wait(0.05)
            _LOG.warning('press %d to %s not confirmed by recorder/status within %.1f s',
                         attempt + 1, what, timeout_s)
        return False

    def _end_episode(self, success):
        self._outputs.episode_event(EpisodeEvent(
            kind='end', task=self.task, episode=self.episode, seed=self.seed,
            request_id=self.demo_request_id, success=bool(success), steps=self.steps))
        if self._demo is not None:
            self._end_demo(success)
        with self._lock:
            self._reset_wanted = True

    def _end_demo(self, success):
        demo, self._demo = self._demo, None
        self._outputs.publish_teleop(np.zeros(3), 0.0)
        state = self._outputs.recorder_state()
        if self.config.recorder_timeout_s <= 0 or state is None or state[0] == 'recording':
            self._press_until(lambda st: st[0] != 'recording', f'stop recording {demo.task}')
            state = self._outputs.recorder_state()
            # Only a recorder that has finished no episode since it started shows 'idle': it
            # restarted during the demo (the 'recording' seen was the old process's last word
            # and the stop press reached nobody), so nothing of this demo was saved.
            lost = state is not None and state[0] == 'idle'
        else:
            lost = True  # the recorder stopped or restarted before the demo ended
        if self.config.recorder_timeout_s > 0 and lost and not self._stop.is_set():
            # Like a person who sees the recorder restarted mid-demo: the demo is redone.
            _LOG.warning('recording of request %d (%s) was lost (recorder now %r); '
                         'demonstrating it again', demo.request_id, demo.task, state[0])
            self.demos.retry(demo.request_id, demo.task)
        _LOG.info('demonstration of %s for request %d ended after %d steps (success %s)',
                  demo.task, demo.request_id, self.steps, success)

    # ------------------------------------------------------------- sensors

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
