"""
Operator dashboard node (``dashboard_node``): the loop, live, in a browser.

Serves the page of :mod:`active_finetune.dashboard` (FastAPI + uvicorn on its own thread) on
``host:port`` (``http://127.0.0.1:8080/`` by default; a non-loopback host needs ``token``; when
the port is taken, on a free port with a warning), publishes the URL on ``dashboard/url``
(latched std_msgs/String) and feeds the page from the graph:

- subscribes ``operator/next_task``, ``recorder/status``, ``recorder/episode``,
  ``policy/status``, ``mux/status``, ``trainer/checkpoint``, ``trainer/evaluation``,
  ``sim/status`` (latched), ``trainer/status``, ``policy/twist``, ``policy/gripper``,
  ``camera/status`` and ``camera/image_raw`` (raw bytes, best effort, depth 1: the dashboard
  never back-pressures the camera; frames are decoded and JPEG-encoded on the frame hub's thread,
  at most ``camera_fps`` a second and only while a browser watches);
- every second looks at the ROS graph (missing ``expected_nodes``, whether the command mux
  runs, who subscribes ``recorder/mark``) and at the free disk space of ``dataset_dir``.

The page's buttons act through the package's own interfaces and show the node's answer:
``recorder/start``, ``recorder/stop``, ``recorder/discard``, ``operator/skip``,
``policy/rollback`` (std_srvs/Trigger: the response's success and message),
``recorder/mark_success`` (std_srvs/SetBool; a note goes out on ``recorder/mark`` as
:class:`active_finetune.payloads.EpisodeMark`), and ``estop`` (std_msgs/Bool, latched): an
estop button succeeds only when ``mux/status`` confirms the new value within
``estop_confirm_timeout_s``.
"""

import concurrent.futures
from pathlib import Path
import shutil
import threading
import time

from active_finetune import payloads
from active_finetune.dashboard.app import create_app, DashboardServer
from active_finetune.dashboard.config import DashboardConfig
from active_finetune.dashboard.frames import FrameHub
from active_finetune.dashboard.state import DashboardState
from active_finetune.nodes.conversions import cdr_image_size, header_stamp_s, image_to_rgb, \
    twist_stamped_to_linear
from active_finetune.nodes.parameters import declare_config
from active_finetune.nodes.qos import COMMAND_QOS, LATCHED_QOS, latched_qos, STATUS_QOS
from active_finetune.nodes.spin import run_node
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import SetBool, Trigger

CAMERA_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                        reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
"""The dashboard's camera subscription: matches reliable and best-effort publishers, never
holds the camera back."""

TRIGGER_ACTIONS = {'record_start': 'recorder/start', 'record_stop': 'recorder/stop',
                   'discard': 'recorder/discard', 'skip': 'operator/skip',
                   'rollback': 'policy/rollback'}
"""Buttons that call a std_srvs/Trigger service."""

URL_TOPIC = 'dashboard/url'
"""Latched std_msgs/String: the page's URL as bound (af-main-job prints it)."""
MARK_SERVICE = 'recorder/mark_success'
MARK_TOPIC = 'recorder/mark'
MAX_IMAGE_PIXELS = 16 * 1024 * 1024
GRAPH_PERIOD_S = 1.0
DISK_PERIOD_S = 2.0
PENDING_PERIOD_S = 0.05
DIAGNOSTIC_LEVELS = {0: 'OK', 1: 'WARN', 2: 'ERROR', 3: 'STALE'}


def decode_image(raw):
    """
    Turn a serialised sensor_msgs/Image into an RGB array (on the frame hub's thread).

    :param raw: the raw subscription's bytes
    :return: (rgb array, header stamp s, encoding)
    :raises ValueError: for a malformed, unsupported or oversized image
    """
    size = cdr_image_size(raw)
    if size.width * size.height > MAX_IMAGE_PIXELS:
        raise ValueError(f'image of {size.width}x{size.height} px is larger than '
                         f'{MAX_IMAGE_PIXELS} px')
    msg = deserialize_message(raw, Image)
    return image_to_rgb(msg), header_stamp_s(msg), msg.encoding


class DashboardNode(Node):
    """
    Collect the loop's state for the page, run its buttons, serve it.

    :param kwargs: passed to rclpy Node (context, parameter_overrides, ...)
    """

    def __init__(self, **kwargs):
        super().__init__('dashboard', **kwargs)
        self.config = declare_config(self, DashboardConfig)
        config = self.config
        self.state = DashboardState(expected_nodes=config.expected_nodes,
                                    stale_camera_s=config.stale_camera_s,
                                    min_free_disk_mb=config.min_free_disk_mb)
        self._pending_lock = threading.Lock()
        self._pending_calls = []
        self._pending_estops = []
        state = self.state
        latched = {'operator/next_task': state.on_next_task,
                   'recorder/status': state.on_recorder_status,
                   'policy/status': state.on_policy_status,
                   'mux/status': self._on_mux_status,
                   'trainer/checkpoint': state.on_checkpoint,
                   'trainer/evaluation': state.on_evaluation,
                   'sim/status': state.on_sim_status}
        for topic, handler in latched.items():
            self.create_subscription(String, topic, self._guarded(topic, handler), LATCHED_QOS)
        self.create_subscription(String, 'recorder/episode',
                                 self._guarded('recorder/episode', state.on_episode),
                                 latched_qos(10))
        # trainer/status is volatile; a transient-local subscription would not match it.
        self.create_subscription(String, 'trainer/status',
                                 self._guarded('trainer/status', state.on_trainer_status),
                                 COMMAND_QOS)
        self.create_subscription(TwistStamped, 'policy/twist', self._on_policy_twist,
                                 COMMAND_QOS)
        self.create_subscription(Float64, 'policy/gripper', self._on_policy_gripper,
                                 COMMAND_QOS)
        self.create_subscription(DiagnosticStatus, 'camera/status', self._on_camera_status,
                                 STATUS_QOS)
        self.create_subscription(Image, 'camera/image_raw', self._on_image, CAMERA_QOS, raw=True)
        self._triggers = {action: self.create_client(Trigger, service)
                          for action, service in TRIGGER_ACTIONS.items()}
        self._mark_client = self.create_client(SetBool, MARK_SERVICE)
        self._estop_pub = self.create_publisher(Bool, 'estop', LATCHED_QOS)
        self._mark_pub = self.create_publisher(String, MARK_TOPIC, COMMAND_QOS)
        self.create_timer(PENDING_PERIOD_S, self._check_pending)
        self.create_timer(GRAPH_PERIOD_S, self.check_graph)
        self.create_timer(DISK_PERIOD_S, self.check_disk)

        app, self.broadcaster = create_app(
            state, self.perform, token=config.token, state_rate_hz=config.state_rate_hz,
            max_clients=config.max_clients,
            command_timeout_s=max(config.service_timeout_s, config.estop_confirm_timeout_s) + 5)
        self.hub = FrameHub(decode_image, self.broadcaster.publish_frame,
                            self.broadcaster.watching, fps=config.camera_fps,
                            jpeg_quality=config.jpeg_quality,
                            policy_image_size=config.policy_image_size,
                            full_max_width=config.full_max_width,
                            on_frame=state.on_camera_frame, on_error=state.on_camera_error)
        try:
            self.server, self.port = self._serve(app)
        except RuntimeError:
            self.hub.close()
            raise
        self.url = config.url(self.port)
        self._url_pub = self.create_publisher(String, URL_TOPIC, LATCHED_QOS)
        self._url_pub.publish(String(data=self.url))
        self.check_disk()
        self.get_logger().info(f'dashboard at {self.url}')

    def _serve(self, app):
        """Start the web server on ``port``, or on a free port when that one is taken."""
        server = DashboardServer(app, self.config.host, self.config.port)
        try:
            return server, server.start()
        except RuntimeError as error:
            if self.config.port == 0:
                raise
            self.get_logger().warning(f'{error}; serving on a free port instead (see '
                                      f'{URL_TOPIC} or the next line for the URL)')
        server = DashboardServer(app, self.config.host, 0)
        return server, server.start()

    # ------------------------------------------------------------------ inputs
    def _guarded(self, topic, handler):
        """Wrap a handler so that nothing a message does can stop the executor."""
        def callback(msg):
            try:
                handler(msg.data)
            except Exception as error:  # noqa: B902 - an exception here would stop spin
                self.state.add_event(f'{topic}: message not handled: {error!r}', 'error')
                self.get_logger().error(f'{topic}: message not handled: {error!r}',
                                        throttle_duration_sec=10.0)
        return callback

    def _on_mux_status(self, text):
        self.state.on_mux_status(text)
        self._check_estops()

    def _on_policy_twist(self, msg):
        self.state.on_action(twist_stamped_to_linear(msg), stamp_s=header_stamp_s(msg))

    def _on_policy_gripper(self, msg):
        self.state.on_action(None, gripper=msg.data)

    def _on_camera_status(self, msg):
        level = msg.level if isinstance(msg.level, int) else int.from_bytes(msg.level, 'little')
        self.state.on_camera_status(DIAGNOSTIC_LEVELS.get(level, str(level)), msg.message,
                                    {v.key: v.value for v in msg.values})

    def _on_image(self, raw):
        self.hub.offer(raw)

    def check_graph(self):
        """Tell the state which other nodes run, whether the mux does, who takes notes."""
        own = (self.get_name(), self.get_namespace())
        nodes = [name for name, namespace in self.get_node_names_and_namespaces()
                 if (name, namespace) != own]
        self.state.on_graph(nodes, self.count_publishers('mux/status'),
                            self.count_subscribers(MARK_TOPIC))

    def check_disk(self):
        """Measure the free space of dataset_dir (or of its nearest existing parent)."""
        path = Path(self.config.dataset_dir or '.').absolute()
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            free_mb = shutil.disk_usage(probe).free / 1e6
        except OSError as error:
            self.state.on_disk(path, None, str(error))
            return
        self.state.on_disk(path, free_mb)

    # ------------------------------------------------------------------ commands
    def perform(self, action, args):
        """
        Run a page command through the graph (called from the web server's thread).

        :param action: one of active_finetune.dashboard.app.ACTIONS
        :param args: its checked arguments
        :return: concurrent.futures.Future of (ok, message): the node's own answer
        """
        result = concurrent.futures.Future()
        try:
            if action in self._triggers:
                self._call(self._triggers[action], TRIGGER_ACTIONS[action], Trigger.Request(),
                           result)
            elif action == 'mark':
                self._mark(args['success'], args['note'], result)
            elif action == 'estop':
                self._estop(args['engage'], result)
            else:
                result.set_result((False, f'unknown action {action!r}'))
        except Exception as error:  # noqa: B902 - report to the page, never raise into it
            if not result.done():
                result.set_result((False, f'{type(error).__name__}: {error}'))
        return result

    def _call(self, client, service, request, result, suffix=''):
        if not client.service_is_ready():
            result.set_result((False, f'{service}: service not available (is its node '
                                      'running?)'))
            return
        deadline_s = time.monotonic() + self.config.service_timeout_s
        future = client.call_async(request)
        with self._pending_lock:
            self._pending_calls.append((future, client, service, result, deadline_s))

        def done(finished):
            with self._pending_lock:
                self._pending_calls = [p for p in self._pending_calls if p[0] is not finished]
            if result.done() or finished.cancelled():
                return
            error = finished.exception()
            if error is not None:
                result.set_result((False, f'{service} failed: {error!r}'))
                return
            response = finished.result()
            text = f'{service}: {response.message or ("ok" if response.success else "refused")}'
            result.set_result((bool(response.success), text + suffix))
        future.add_done_callback(done)

    def _mark(self, success, note, result):
        suffix = ''
        if note:
            receivers = self.count_subscribers(MARK_TOPIC)
            self._mark_pub.publish(String(data=payloads.encode(
                payloads.EpisodeMark(success=success, note=note))))
            suffix = (f'; note published on {MARK_TOPIC} ({receivers} subscriber(s))'
                      if receivers else
                      f'; note NOT stored: no node subscribes {MARK_TOPIC}')
        self._call(self._mark_client, MARK_SERVICE, SetBool.Request(data=bool(success)), result,
                   suffix)

    def _estop(self, engage, result):
        self._estop_pub.publish(Bool(data=bool(engage)))
        self.state.on_estop_sent(engage)
        self.state.add_event(f'estop {"ENGAGE" if engage else "release"} sent by the dashboard',
                             'warning')
        deadline_s = time.monotonic() + self.config.estop_confirm_timeout_s
        with self._pending_lock:
            self._pending_estops.append((bool(engage), result, deadline_s))
        self._check_estops()

    def _check_estops(self):
        confirmed = self.state.estop_confirmed()
        now_s = time.monotonic()
        with self._pending_lock:
            waiting = list(self._pending_estops)
            self._pending_estops = []
        keep = []
        for engage, result, deadline_s in waiting:
            word = 'ENGAGED' if engage else 'released'
            if confirmed is engage:
                result.set_result((True, f'command mux confirms estop {word} (mux/status)'))
            elif now_s >= deadline_s:
                why = ('no mux/status received: is the command mux running?'
                       if confirmed is None else f'mux/status still says estop '
                       f'{"ENGAGED" if confirmed else "released"}')
                result.set_result((False, f'estop {word} sent, NOT confirmed within '
                                          f'{self.config.estop_confirm_timeout_s:g} s: {why}'))
            else:
                keep.append((engage, result, deadline_s))
        with self._pending_lock:
            self._pending_estops = keep + self._pending_estops

    def _check_pending(self):
        now_s = time.monotonic()
        with self._pending_lock:
            expired = [p for p in self._pending_calls if p[4] <= now_s]
            self._pending_calls = [p for p in self._pending_calls if p[4] > now_s]
        for future, client, service, result, _ in expired:
            client.remove_pending_request(future)
            future.cancel()
            if not result.done():
                result.set_result((False, f'{service}: no answer within '
                                          f'{self.config.service_timeout_s:g} s'))
        self._check_estops()

    def destroy_node(self):
        """Stop the web server and the frame thread, then destroy the node."""
        self.server.stop()
        self.hub.close()
        super().destroy_node()


def main(args=None):
    """
    Run the dashboard node until Ctrl-C or SIGTERM.

    :param args: ROS command-line arguments
    """
    run_node(DashboardNode, args)


if __name__ == '__main__':
    main()
