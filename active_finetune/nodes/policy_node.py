"""
Policy node: runs the camera-based multi-task policy and hot-swaps its weights without a restart.

Subscribes ``image_topic`` (default ``camera/image_policy``: the camera node's and sim bridge's
frames resized at the source to the policy's input size; image QoS) and, only while that has no
publisher, ``fallback_image_topic`` (default ``camera/image_raw``, full resolution: a lab's own
driver, Gazebo), ``joint_states`` and ``ee_pose`` (sensor QoS),
``policy/task`` (std_msgs/String, latched or volatile), ``trainer/checkpoint`` (JSON, latched) and
``estop``.  Every control cycle (``cycle_trigger``: each ``1 / control_rate_hz`` on the newest
inputs, or once per new image) it publishes ``policy/twist`` (m/s, header stamp = the source stamp
of the image the action was computed from) and ``policy/gripper`` (-1 open .. +1 closed), and
``policy/status`` (JSON, latched, on change: state running|idle|stale|error, code, reason, task,
tasks, version, sha256, refused, rollback_versions, device).

Safety (:class:`active_finetune.safety.CommandGate`): an image, joint state or pose older than
``max_input_age_s`` (by header stamp), an image larger than ``max_image_pixels`` (refused in
its callback from the serialised header: the image subscription is raw, and only accepted
images are deserialised), an end-effector position outside the workspace box
(``workspace_min_m`` .. ``workspace_max_m``) or more than ``max_proprio_std`` standard deviations
from the checkpoint's training data (:func:`active_finetune.safety.check_proprio`), a non-finite
action, an unknown task or an engaged estop give a zero twist and no gripper command (the mux
holds the gripper), with the reason in the status and a throttled log.  Actions are clamped to
[-1, 1] before scaling.  Zero on shutdown.

New checkpoints are loaded and verified by :class:`active_finetune.policy.hot_swap.PolicyHotSwap`
on its own thread and swapped in between two cycles; a bad one (failed verification, a version
lower than the running one, another task list) is refused (logged, and the newest refusal in the
status) and the old weights keep running.  ``trainer/checkpoint`` is subscribed raw: the callback
only hands the serialised bytes to the loader thread, which parses and decodes them.  Weights
that are not on this machine (no shared disk) are fetched from the trainer on the loader thread
(``trainer/checkpoint_request`` / ``trainer/checkpoint_data``,
:mod:`active_finetune.nodes.checkpoint_transfer`) into ``checkpoint_cache_dir``, verified by
sha256 before anything loads them.  Service
``policy/rollback`` (std_srvs/Trigger) goes back to the previous good version.

Threading: the control timer has a callback group of its own and every other callback is in a
second one, so on a multi-threaded executor a timer that is due again as soon as its cycle ends
(a loaded machine) cannot starve the inputs, the estop or the rollback service (rclpy never hands
a subscription of a busy mutually exclusive group to a thread, and skips it while the timer runs).
Control cycles, task changes, estops and rollbacks are serialised by one lock.
"""

from collections import deque
from dataclasses import dataclass
import threading
import time

from active_finetune.nodes.checkpoint_transfer import CheckpointFetcher
from active_finetune.nodes.conversions import cdr_image_size, cdr_string_data, \
    check_image_dimensions, ConversionError, header_stamp_s, image_to_rgb, joint_positions, \
    linear_to_twist_stamped, pose_position
from active_finetune.nodes.parameters import declare_config
from active_finetune.nodes.qos import COMMAND_QOS, IMAGE_QOS, LATCHED_QOS, SENSOR_QOS, \
    sensor_subscription_options
from active_finetune.nodes.spin import run_node
from active_finetune.payloads import encode, PolicyStatus
from active_finetune.policy.hot_swap import CheckpointRefusedError, fetching_loader, \
    load_initial, PolicyHotSwap, RollbackError
from active_finetune.policy.inference import select_device
from active_finetune.policy.inputs import proprio_from_robot
from active_finetune.policy.node_settings import PolicyNodeSettings
from active_finetune.safety import Check, check_fresh, check_proprio, CLAMPED, CommandGate, \
    ESTOP, FUTURE, MISSING, NON_FINITE, OK, STALE
from geometry_msgs.msg import PoseStamped, TwistStamped
import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger
import torch

RUNNING, IDLE, STALE_STATE, ERROR = 'running', 'idle', 'stale', 'error'
NO_POLICY, NO_TASK, UNKNOWN_TASK, BAD_INPUT = 'no_policy', 'no_task', 'unknown_task', 'bad_input'
IMAGE_TOO_LARGE = 'image_too_large'
_STATE_OF_CODE = {OK: RUNNING, CLAMPED: RUNNING, MISSING: IDLE, NO_TASK: IDLE, ESTOP: IDLE,
                  STALE: STALE_STATE, FUTURE: STALE_STATE}
CYCLE_HISTORY = 10000
"""Control cycles whose timings are kept (:attr:`PolicyNode.recent_cycles`)."""
FINAL_ZERO_ACK_TIMEOUT_S = 0.5
"""Longest wait at shutdown for subscribers to acknowledge the final zero twist."""
IMAGE_SOURCE_CHECK_PERIOD_S = 0.5
"""How often the node checks whether ``image_topic`` has a publisher (fallback on or off)."""


@dataclass(frozen=True)
class CycleTiming:
    """
    Timings of one control cycle that ran the model.

    :param image_stamp_s: source stamp of the image used
    :param image_arrival_s: node clock time the image arrived
    :param published_s: node clock time the action was published
    :param forward_s: time spent in the model (resize, batch, forward)
    :param version: checkpoint version that acted
    """

    image_stamp_s: float
    image_arrival_s: float
    published_s: float
    forward_s: float
    version: int


class PolicyNode(Node):
    """
    Camera-based policy with stale-input protection, hot-swapped weights and rollback.

    :param kwargs: passed to rclpy Node (context, parameter_overrides, ...)
    """

    def __init__(self, **kwargs):
        super().__init__('policy', **kwargs)
        self.config = declare_config(self, PolicyNodeSettings, on_change=self._on_config)
        self.device = select_device(self.config.device)
        if self.device.type == 'cpu':
            torch.set_num_threads(self.config.torch_threads)
        self._gate = CommandGate(np.ones(4))
        self._task = self.config.task
        # (message, node clock arrival time): one attribute, so a cycle reads a consistent pair.
        self._image = (None, None)
        # Why the newest image was refused (too large), or '' after a good one.
        self._image_refused = ''
        self._joint_msg = None
        self._pose_msg = None
        self._status_key = None
        self._last_cycle_s = -1.0
        self.recent_cycles = deque(maxlen=CYCLE_HISTORY)
        """:class:`CycleTiming` of recent cycles that ran the model (diagnostics, benchmarks)."""
        self.status = {}
        """The newest status dict (also published on policy/status)."""

        initial = None
        self._load_error = ''
        try:
            initial = load_initial(self.config.checkpoint_path, self.device)
            self.get_logger().info(
                f'loaded checkpoint {self.config.checkpoint_path} version {initial.version} '
                f'(sha256 {initial.sha256[:12]}) on {self.device}; tasks {list(initial.tasks)}')
        except CheckpointRefusedError as error:
            self._load_error = f'start-up checkpoint refused: {error}'
            self.get_logger().error(f'{self._load_error}; waiting for trainer/checkpoint')
        # Announced weights not on this machine are fetched from the trainer on the loader
        # thread (the chunk callbacks only queue bytes), verified, then loaded.
        self._fetcher = CheckpointFetcher(self, self.config.checkpoint_cache_dir,
                                          callback_group=MutuallyExclusiveCallbackGroup())
        self._hot_swap = PolicyHotSwap(self.device, initial, loader=fetching_loader(
            self.config.checkpoint_cache_dir, self._fetcher.fetch,
            self.config.checkpoint_fetch_timeout_s))

        # Held by a control cycle, a task change, an estop and a rollback (see the module doc).
        self._control_lock = threading.Lock()
        events = self._events = MutuallyExclusiveCallbackGroup()
        self._twist_pub = self.create_publisher(TwistStamped, 'policy/twist', COMMAND_QOS)
        self._gripper_pub = self.create_publisher(Float64, 'policy/gripper', COMMAND_QOS)
        self._status_pub = self.create_publisher(String, 'policy/status', LATCHED_QOS)
        self._image_sub = self._subscribe_image(self.config.image_topic)
        self._fallback_sub = None
        if self.config.fallback_image_topic:
            # Until discovery shows a publisher of image_topic (checked every half second).
            self._fallback_sub = self._subscribe_image(self.config.fallback_image_topic)
            self.create_timer(IMAGE_SOURCE_CHECK_PERIOD_S, self._check_image_source,
                              callback_group=events)
        self.create_subscription(JointState, 'joint_states', self._on_joint_state,
                                 callback_group=events, **sensor_subscription_options(
                                     self, 'joint_states', SENSOR_QOS))
        self.create_subscription(PoseStamped, 'ee_pose', self._on_pose,
                                 callback_group=events, **sensor_subscription_options(
                                     self, 'ee_pose', SENSOR_QOS))
        # Latched to get the task set before start, volatile to match `ros2 topic pub`.
        for qos in (LATCHED_QOS, COMMAND_QOS):
            self.create_subscription(String, 'policy/task', self._on_task, qos,
                                     callback_group=events)
        # Raw: megabytes of weights are never turned into a Python string on this thread.
        self.create_subscription(String, 'trainer/checkpoint', self._on_checkpoint, LATCHED_QOS,
                                 callback_group=events, raw=True)
        for qos in (LATCHED_QOS, COMMAND_QOS):
            self.create_subscription(Bool, 'estop', self._on_estop, qos, callback_group=events)
        self.create_service(Trigger, 'policy/rollback', self._on_rollback, callback_group=events)
        self._period_s = 1.0 / self.config.control_rate_hz
        self._timer = self.create_timer(self._period_s, self._on_timer,
                                        callback_group=MutuallyExclusiveCallbackGroup())
        if self._task:
            self._check_task_known(self._task)

    # ---------------------------------------------------------------- inputs

    def _now_s(self):
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_config(self, config):
        self.config = config

    def _subscribe_image(self, topic):
        # Raw: an oversize image is refused from its serialised header, never deserialised
        # (85 ms for 4000x4000 rgb8, on the thread that runs the control cycles).
        # QoS overridable (qos_overrides.<topic>.subscription.*) to match a lab's drivers.
        return self.create_subscription(Image, topic, self._on_image, raw=True,
                                        callback_group=self._events,
                                        **sensor_subscription_options(self, topic, IMAGE_QOS))

    def _check_image_source(self):
        """Subscribe the fallback image topic only while image_topic has no publisher."""
        if self._image_sub.get_publisher_count() > 0:
            if self._fallback_sub is not None:
                self.destroy_subscription(self._fallback_sub)
                self._fallback_sub = None
                self.get_logger().info(f'acting on {self._image_sub.topic_name}')
        elif self._fallback_sub is None:
            self._fallback_sub = self._subscribe_image(self.config.fallback_image_topic)
            self.get_logger().warning(
                f'no publisher on {self._image_sub.topic_name}: acting on '
                f'{self._fallback_sub.topic_name} (resized here) until one appears')

    @property
    def newest_image_size(self):
        """:return: (width, height) of the newest frame the node would act on, or None."""
        image_msg = self._image[0]
        return None if image_msg is None else (image_msg.width, image_msg.height)

    @property
    def image_topics(self):
        """:return: resolved names of the image topics subscribed now (fallback last)."""
        subscriptions = [self._image_sub, self._fallback_sub]
        return [s.topic_name for s in subscriptions if s is not None]

    def _on_image(self, raw):
        arrival_s = self._now_s()
        try:
            size = cdr_image_size(raw)
            check_image_dimensions(size.width, size.height, size.data_bytes,
                                   self.config.max_image_pixels)
        except ConversionError as error:
            # Not kept: the bytes are freed when this callback returns.
            self._image_refused = str(error)
            return
        msg = deserialize_message(raw, Image)
        self._image_refused = ''
        self._image = (msg, arrival_s)
        if self.config.cycle_trigger == 'image':
            self._cycle_at_edge()

    def _on_joint_state(self, msg):
        self._joint_msg = msg

    def _on_pose(self, msg):
        self._pose_msg = msg

    def _on_estop(self, msg):
        with self._control_lock:
            changed = self._gate.set_estop(msg.data)
        if changed:
            if msg.data:
                self.get_logger().error('estop engaged: output held at zero until released')
            else:
                self.get_logger().warning('estop released')

    def _on_task(self, msg):
        task = msg.data.strip()
        with self._control_lock:
            if task == self._task:
                return
            self._task = task
            if not task:
                self.get_logger().info('task cleared: idle')
                return
            if self._check_task_known(task):
                self.get_logger().info(f'task set to {task!r}')

    def _check_task_known(self, task):
        active = self._hot_swap.active
        if active is not None and task not in active.tasks:
            self.get_logger().error(
                f'refusing task {task!r}: policy version {active.version} knows '
                f'{list(active.tasks)}; output held at zero until a known task is set')
            return False
        return True

    def _on_checkpoint(self, raw):
        # Parsing and base64-decoding megabytes of weights happen on the loader thread, in pieces.
        try:
            text = cdr_string_data(raw)
        except ConversionError as error:
            self.get_logger().error(f'ignoring trainer/checkpoint: {error}')
            return
        self.get_logger().info(f'checkpoint announced ({len(text)} bytes); verifying it in the '
                               'background')
        self._hot_swap.submit(text)

    def _on_rollback(self, request, response):
        with self._control_lock:
            try:
                loaded = self._hot_swap.rollback()
            except RollbackError as error:
                response.success, response.message = False, str(error)
                self.get_logger().warning(f'rollback refused: {error}')
                return response
            response.success = True
            response.message = \
                f'rolled back to version {loaded.version} (sha256 {loaded.sha256[:12]})'
            self.get_logger().warning(response.message)
            if self._task:
                self._check_task_known(self._task)
        return response

    # ---------------------------------------------------------------- control

    def _on_timer(self):
        if self.config.cycle_trigger == 'image' and \
                time.monotonic() - self._last_cycle_s < self._period_s:
            return
        self._cycle_at_edge()

    def _cycle_at_edge(self):
        with self._control_lock:
            self._last_cycle_s = time.monotonic()
            try:
                self._cycle()
            except Exception as error:  # noqa: B902 - an exception would stop spin
                self.get_logger().error(f'control cycle failed: {error!r}; publishing zero',
                                        throttle_duration_sec=2.0)
                self.publish_zero()
                self._announce(ERROR, 'exception', f'control cycle failed: {error!r}')

    def _apply_swap(self):
        event = self._hot_swap.swap_if_ready()
        if event.refusal is not None:
            self.get_logger().error(
                f'refused checkpoint version {event.refusal.version}: {event.refusal.reason}; '
                f'keeping version {self._version()}')
        if event.swapped is not None:
            self._load_error = ''
            self.get_logger().info(
                f'swapped in checkpoint version {event.swapped.version} '
                f'(sha256 {event.swapped.sha256[:12]}) from {event.swapped.source}')
            if self._task:
                self._check_task_known(self._task)

    def _version(self):
        active = self._hot_swap.active
        return None if active is None else active.version

    def _input_checks(self, now_s, image_msg, joint_msg, pose_msg):
        max_age_s = self.config.max_input_age_s
        refused = self._image_refused
        checks = [Check(False, IMAGE_TOO_LARGE, refused)] if refused else []
        checks += [check_fresh(name, None if msg is None else header_stamp_s(msg), now_s,
                               max_age_s)
                   for name, msg in (('image', image_msg), ('joint state', joint_msg),
                                     ('end-effector pose', pose_msg))]
        active = self._hot_swap.active
        if pose_msg is not None and active is not None:
            limits = self.config.proprio_limits(active.proprio_stats)
            checks.append(check_proprio(pose_position(pose_msg), limits))
        return checks

    def _proprio(self, joint_msg, pose_msg):
        positions = joint_positions(joint_msg)
        name = self.config.gripper_joint_name
        if name not in positions:
            raise ConversionError(f'joint_states has no joint {name!r} (gripper_joint_name); '
                                  f'it has {sorted(positions)}')
        return proprio_from_robot(pose_position(pose_msg), positions[name],
                                  self.config.gripper_open_position)

    def _cycle(self):
        self._apply_swap()
        # Inputs arrive on another callback group: read each once, before the clock (a message
        # read after ``now_s`` could look as if it came from the future).
        (image_msg, image_arrival_s), joint_msg, pose_msg = \
            self._image, self._joint_msg, self._pose_msg
        now_s = self._now_s()
        active = self._hot_swap.active
        if active is None:
            self._block(ERROR, NO_POLICY, self._load_error or 'no checkpoint loaded')
            return
        if not self._task:
            self._block(IDLE, NO_TASK, 'no task set (publish a task name on policy/task)')
            return
        if self._task not in active.tasks:
            self._block(ERROR, UNKNOWN_TASK,
                        f'unknown task {self._task!r}; version {active.version} knows '
                        f'{list(active.tasks)}')
            return
        checks = [c for c in self._input_checks(now_s, image_msg, joint_msg, pose_msg)
                  if not c.ok]
        if self._gate.estop.engaged or checks:
            decision = self._gate.decide(np.zeros(4), checks)
            self._block(_STATE_OF_CODE.get(decision.code, ERROR), decision.code, decision.reason)
            return
        try:
            image = image_to_rgb(image_msg)
            proprio = self._proprio(joint_msg, pose_msg)
        except ConversionError as error:
            self._block(ERROR, BAD_INPUT, str(error))
            return
        started_s = time.perf_counter()
        action = active.runner.act(self._task, proprio, image=image)
        forward_s = time.perf_counter() - started_s
        decision = self._gate.decide(action, [Check(True)])
        if decision.blocked:
            self._block(ERROR if decision.code == NON_FINITE else _STATE_OF_CODE.get(
                decision.code, ERROR), decision.code, decision.reason)
            return
        image_stamp_s = header_stamp_s(image_msg)
        self._twist_pub.publish(linear_to_twist_stamped(
            decision.command[:3] * self.config.max_linear_velocity_mps, image_stamp_s,
            self.config.frame_id))
        self._gripper_pub.publish(Float64(data=float(decision.command[3])))
        self.recent_cycles.append(CycleTiming(
            image_stamp_s=image_stamp_s, image_arrival_s=image_arrival_s,
            published_s=self._now_s(), forward_s=forward_s, version=active.version))
        self._announce(RUNNING, OK, '')

    def _block(self, state, code, reason):
        self.publish_zero()
        if state == ERROR:
            self.get_logger().error(f'output zero: {reason}', throttle_duration_sec=2.0)
        else:
            self.get_logger().warning(f'output zero: {reason}', throttle_duration_sec=2.0)
        self._announce(state, code, reason)

    def _announce(self, state, code, reason):
        active = self._hot_swap.active
        refusal = self._hot_swap.last_refusal
        status = {
            'state': state, 'code': code, 'reason': reason, 'task': self._task,
            'tasks': [] if active is None else list(active.tasks),
            'version': None if active is None else active.version,
            'sha256': '' if active is None else active.sha256,
            'refused': None if refusal is None else {
                'version': refusal.version, 'sha256': refusal.sha256, 'reason': refusal.reason,
                'number': refusal.number},
            'rollback_versions': self._hot_swap.history_versions,
            'device': str(self.device),
        }
        key = (state, code, status['task'], status['sha256'],
               None if refusal is None else refusal.number, tuple(status['rollback_versions']))
        self.status = status
        if key != self._status_key:
            self._status_key = key
            self._status_pub.publish(String(data=encode(PolicyStatus.from_dict(status))))

    def publish_zero(self):
        """Publish a zero twist (the gripper is left to the mux, which holds it)."""
        self._twist_pub.publish(
            linear_to_twist_stamped(np.zeros(3), self._now_s(), self.config.frame_id))

    def destroy_node(self):
        """Publish a zero twist (and await its acknowledgement briefly), stop loader, destroy."""
        try:
            self.publish_zero()
            # Destroyed at once, a reliable writer may drop its last sample before any
            # subscriber received it (seen when a signalled process exits right after).
            if not self._twist_pub.wait_for_all_acked(Duration(seconds=FINAL_ZERO_ACK_TIMEOUT_S)):
                self.get_logger().warning(
                    f'final zero twist not acknowledged within {FINAL_ZERO_ACK_TIMEOUT_S} s')
        except Exception as error:  # noqa: B902 - shutting down whatever happens
            self.get_logger().error(f'could not publish the final zero twist: {error!r}')
        self._hot_swap.close()
        super().destroy_node()


def main(args=None):
    """
    Run the policy node until Ctrl-C or SIGTERM; its last twist is zero.

    :param args: ROS command-line arguments
    """
    run_node(PolicyNode, args)


if __name__ == '__main__':
    main()
