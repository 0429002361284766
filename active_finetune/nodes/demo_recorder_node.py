"""
Demo recorder node: records teleoperated demonstrations into MCAP episode files.

Subscriptions hand each sample to :class:`active_finetune.data.recorder.EpisodeRecorder`
(queued, never blocking; a full queue drops and counts); its writer thread compresses, writes,
fsyncs, renames and indexes.  The task and request id come from the latched
``operator/next_task``.  Start/stop by the ``recorder/*`` services or the SpaceMouse record
button (rising edge of ``teleop/joy`` button ``record_button``).  The operator marks the episode
being recorded a success or a failure with ``recorder/mark_success`` (std_srvs/SetBool) or, with
a note stored in the episode file, ``recorder/mark``
(:class:`active_finetune.payloads.EpisodeMark`, from the console and the dashboard); while
recording, ``recorder/status`` says the mark, the note and the success a stop would save.
``recorder/status`` (latched) says what it is doing; ``recorder/episode`` (latched, depth 10)
announces each episode once its file is renamed and indexed.  See docs/interfaces.md for the
payloads.
"""

import collections
import threading
import time

from active_finetune.data.recorder import EpisodeRecorder, RecorderError
from active_finetune.data.recorder_settings import RecorderSettings
from active_finetune.nodes.conversions import ConversionError, image_to_rgb, joint_positions
from active_finetune.nodes.parameters import declare_config
from active_finetune.nodes.qos import COMMAND_QOS, IMAGE_QOS, LATCHED_QOS, latched_qos, \
    SENSOR_QOS, sensor_subscription_options
from active_finetune.nodes.spin import run_node
from active_finetune.payloads import decode_episode_mark, decode_next_task, encode, \
    EpisodeSaved, PayloadError, RecorderStatus
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState, Joy
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import SetBool, Trigger


def _stamp_ns(msg):
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


class DemoRecorderNode(Node):
    """
    Record demonstrations on request and announce each saved episode.

    :param kwargs: passed to rclpy Node (e.g. context, parameter_overrides)
    """

    def __init__(self, **kwargs):
        super().__init__('demo_recorder', **kwargs)
        self.settings = declare_config(self, RecorderSettings)
        topics = {
            'image': self.resolve_topic_name('camera/image_raw'),
            'joint_states': self.resolve_topic_name('joint_states'),
            'ee_pose': self.resolve_topic_name('ee_pose'),
            'twist': self.resolve_topic_name('teleop/twist'),
            'gripper': self.resolve_topic_name('teleop/gripper'),
            'joy': self.resolve_topic_name('teleop/joy'),
            'sim_success': self.resolve_topic_name('sim/success'),
        }
        self._finished = collections.deque()
        self._suggestion_lock = threading.Lock()
        self._suggestion = {}
        self._button_was_pressed = False
        self._stop_reason = ''
        self.recorder = EpisodeRecorder(self.settings, topics=topics,
                                        on_finished=self._finished.append)
        for item in self.recorder.recovered:
            self.get_logger().warning(
                f"leftover {item['partial']}: {item['outcome']} as {item['path']} "
                f"({item['frames']} frames; {item['reason']})")
        self._status_pub = self.create_publisher(String, 'recorder/status', LATCHED_QOS)
        self._episode_pub = self.create_publisher(String, 'recorder/episode', latched_qos(10))
        # QoS overridable (qos_overrides.<topic>.subscription.*) to match a lab's drivers.
        for msg_type, topic, callback, qos in (
                (Image, 'camera/image_raw', self._on_image, IMAGE_QOS),
                (JointState, 'joint_states', self._on_joint_state, SENSOR_QOS),
                (PoseStamped, 'ee_pose', self._on_pose, SENSOR_QOS)):
            self.create_subscription(msg_type, topic, callback,
                                     **sensor_subscription_options(self, topic, qos))
        self.create_subscription(TwistStamped, 'teleop/twist', self._on_twist, COMMAND_QOS)
        self.create_subscription(Float64, 'teleop/gripper', self._on_gripper, COMMAND_QOS)
        self.create_subscription(Joy, 'teleop/joy', self._on_joy, COMMAND_QOS)
        self.create_subscription(Bool, 'sim/success', self._on_sim_success, COMMAND_QOS)
        self.create_subscription(String, 'operator/next_task', self._on_next_task, LATCHED_QOS)
        self.create_subscription(String, 'recorder/mark', self._on_mark, COMMAND_QOS)
        self.create_service(Trigger, 'recorder/start', self._on_start)
        self.create_service(Trigger, 'recorder/stop', self._on_stop)
        self.create_service(Trigger, 'recorder/discard', self._on_discard)
        self.create_service(SetBool, 'recorder/mark_success', self._on_mark_success)
        self._last_status_s = 0.0
        self.create_timer(0.05, self._on_timer)
        recovered = [item for item in self.recorder.recovered if item['outcome'] == 'recovered']
        message = 'ready' + (f'; {len(recovered)} crashed episode(s) set aside as recovered'
                             if recovered else '')
        if self.recorder.recovery_pending:  # e.g. a full disk: keep running, refuse to record
            self.get_logger().error(self.recorder.status()['message'])
            self._publish_status(self.recorder.status())
        else:
            self._publish_status({**self.recorder.status(), 'message': message})
        self.get_logger().info(f'recording into {self.settings.dataset_dir}')

    # --- status -----------------------------------------------------------------------------
    def _publish_status(self, status):
        payload = {key: status.get(key) for key in ('state', 'task', 'request_id', 'duration_s',
                                                    'frames', 'dropped', 'path', 'message')}
        if status.get('state') == 'recording':
            payload.update({key: status.get(key) for key in (
                'marked', 'note', 'success_if_stopped', 'success_source')})
            payload['note'] = payload['note'] or ''
        self._status_pub.publish(String(data=encode(RecorderStatus.from_dict(payload))))
        self._last_status_s = self.get_clock().now().nanoseconds * 1e-9

    def _retry_recovery(self):
        """Retry a failed leftover recovery every recovery_retry_period_s; report a change."""
        recorder = self.recorder
        if (not recorder.recovery_pending or recorder.active is not None
                or time.monotonic() - recorder.recovery_checked_s
                < self.settings.recovery_retry_period_s):
            return
        before = recorder.status()['message']
        results = recorder.retry_recovery()
        if recorder.recovery_pending:
            if recorder.status()['message'] != before:
                self._publish_status(recorder.status())
            return
        done = [item for item in results if item['outcome'] != 'kept']
        for item in done:
            self.get_logger().warning(
                f"leftover {item['partial']}: {item['outcome']} as {item['path']} "
                f"({item['frames']} frames; {item['reason']})")
        self._publish_status({**recorder.status(), 'message': (
            f'ready; {len(done)} leftover partial episode(s) recovered after the earlier '
            'failure')})

    def _on_timer(self):
        try:
            while self._finished:
                self._report(self._finished.popleft())
            self._retry_recovery()
            session = self.recorder.active
            if session is not None and session.duration_s > self.settings.max_duration_s:
                self._stop_reason = f'max_duration_s {self.settings.max_duration_s} s reached'
                self.get_logger().warning(f'stopping episode {session.number}: '
                                          f'{self._stop_reason}')
                self.recorder.stop()
                self._publish_status(self.recorder.status())
            elif session is not None:
                now_s = self.get_clock().now().nanoseconds * 1e-9
                if now_s - self._last_status_s >= self.settings.status_period_s:
                    self._publish_status(self.recorder.status())
        except Exception as exc:  # noqa: B902 - a timer exception would stop spin
            self.get_logger().error(f'recorder timer failed: {exc!r}')

    def _report(self, result):
        if self._stop_reason and result['state'] == 'saved':
            result = {**result, 'message': f"{result['message']} ({self._stop_reason})"}
        self._stop_reason = ''
        if result['state'] == 'saved':
            self._episode_pub.publish(String(data=encode(EpisodeSaved(
                path=result['path'], task=result['task'], success=result['success'],
                steps=result['steps'], frames=result['frames'], sha256=result['sha256'],
                request_id=result['request_id'], dropped=result['dropped'],
                duration_s=result['duration_s'], bag_path=result['bag_path']))))
            self.get_logger().info(result['message'])
        elif result['state'] == 'error':
            self.get_logger().error(result['message'])
        else:
            self.get_logger().info(result['message'])
        status = self.recorder.status()
        if status['state'] in ('recording', 'saving'):
            return
        self._publish_status(result)

    # --- services -----------------------------------------------------------------------------
    def start_recording(self):
        """
        Start an episode of the suggested task (or default_task).

        :return: (success, message)
        """
        with self._suggestion_lock:
            suggestion = dict(self._suggestion)
        task = suggestion.get('task') or self.settings.default_task
        request_id = suggestion.get('request_id') if suggestion.get('task') else None
        try:
            session = self.recorder.start(task, request_id=request_id)
        except (RecorderError, OSError) as exc:
            self.get_logger().warning(f'start refused: {exc}')
            return False, str(exc)
        self._stop_reason = ''
        message = f'recording {task} as {session.final_path.name}'
        self.get_logger().info(message)
        self._publish_status(self.recorder.status())
        return True, message

    def stop_recording(self, discard=False):
        """
        Stop the episode: save it (in the background) or discard it.

        :param discard: delete instead of saving
        :return: (success, message)
        """
        try:
            session = self.recorder.discard() if discard else self.recorder.stop()
        except RecorderError as exc:
            return False, str(exc)
        if discard:
            message = f'discarding episode {session.number} ({session.task})'
        else:
            message = (f'saving episode {session.number} ({session.task}, {session.frames} '
                       f'frames, success {session.success}) as {session.final_path.name}')
        self._publish_status({**self.recorder.status(), 'message': message})
        return True, message

    def _on_start(self, request, response):
        response.success, response.message = self.start_recording()
        return response

    def _on_stop(self, request, response):
        response.success, response.message = self.stop_recording()
        return response

    def _on_discard(self, request, response):
        response.success, response.message = self.stop_recording(discard=True)
        return response

    def _on_mark_success(self, request, response):
        response.success, response.message = self.mark_episode(request.data)
        return response

    def mark_episode(self, success, note=None):
        """
        Mark the episode being recorded a success or a failure, with an optional note.

        :param success: bool
        :param note: stored in the episode's metadata (None or blank: keep an earlier note)
        :return: (accepted, message)
        """
        try:
            session = self.recorder.mark(success, note)
        except RecorderError as exc:
            self.get_logger().warning(f'mark refused: {exc}')
            return False, str(exc)
        message = (f'episode {session.number} marked {"success" if success else "failure"}'
                   + (f' (note: {session.mark_note})' if session.mark_note else ''))
        self.get_logger().info(message)
        self._publish_status({**self.recorder.status(), 'message': message})
        return True, message

    def _on_mark(self, msg):
        try:
            mark = decode_episode_mark(msg.data)
        except PayloadError as error:
            self.get_logger().warning(f'ignoring malformed recorder/mark: {error}',
                                      throttle_duration_sec=10.0)
            return
        self.mark_episode(mark.success, mark.note)

    # --- subscriptions --------------------------------------------------------------------------
    def _on_next_task(self, msg):
        try:
            payload = decode_next_task(msg.data)
        except PayloadError as error:
            self.get_logger().warning(f'ignoring malformed operator/next_task: {error}',
                                      throttle_duration_sec=10.0)
            return
        with self._suggestion_lock:
            self._suggestion = {'task': '' if payload.done else payload.task,
                                'request_id': payload.request_id}

    def _on_image(self, msg):
        if self.recorder.active is None:
            return
        try:
            rgb = image_to_rgb(msg)
        except ConversionError as exc:
            self.get_logger().error(f'camera frame not recorded: {exc}', throttle_duration_sec=5.0)
            return
        self.recorder.add_image(rgb, _stamp_ns(msg), msg.header.frame_id)

    def _on_joint_state(self, msg):
        if self.recorder.active is None:
            return
        try:
            joint_positions(msg)
        except ConversionError as exc:
            self.get_logger().error(f'joint state not recorded: {exc}', throttle_duration_sec=5.0)
            return
        self.recorder.add_joint_state(msg.name, msg.position, msg.velocity, msg.effort,
                                      _stamp_ns(msg), msg.header.frame_id)

    def _on_pose(self, msg):
        if self.recorder.active is None:
            return
        p, q = msg.pose.position, msg.pose.orientation
        self.recorder.add_ee_pose((p.x, p.y, p.z), (q.x, q.y, q.z, q.w), _stamp_ns(msg),
                                  msg.header.frame_id)

    def _on_twist(self, msg):
        if self.recorder.active is None:
            return
        v, w = msg.twist.linear, msg.twist.angular
        self.recorder.add_twist((v.x, v.y, v.z), (w.x, w.y, w.z), _stamp_ns(msg),
                                msg.header.frame_id)

    def _on_gripper(self, msg):
        self.recorder.add_gripper(msg.data)

    def _on_sim_success(self, msg):
        self.recorder.add_sim_success(msg.data)

    def _on_joy(self, msg):
        self.recorder.add_joy(msg.axes, msg.buttons, _stamp_ns(msg), msg.header.frame_id)
        button = self.settings.record_button
        pressed = 0 <= button < len(msg.buttons) and bool(msg.buttons[button])
        rising = pressed and not self._button_was_pressed
        self._button_was_pressed = pressed
        if rising:
            if self.recorder.active is None:
                ok, message = self.start_recording()
            else:
                ok, message = self.stop_recording()
            self.get_logger().info(f'record button: {message}' if ok
                                   else f'record button refused: {message}')

    def destroy_node(self):
        """Set an episode being recorded aside as recovered, finish writing, then destroy."""
        interrupted = self.recorder.active is not None
        done = self.recorder.close(timeout_s=10.0)
        if not done:
            self.get_logger().error('episode writer did not finish within 10 s')
        try:
            while self._finished:
                self._report(self._finished.popleft())
            if interrupted or done:
                self._publish_status(self.recorder.status())
        except Exception as exc:  # noqa: B902 - the context may already be shut down
            self.get_logger().warning(f'final status not published: {exc!r}')
        super().destroy_node()


def main(args=None):
    """Run the demo recorder node until Ctrl-C or SIGTERM."""
    run_node(DemoRecorderNode, args=args)


if __name__ == '__main__':
    main()
