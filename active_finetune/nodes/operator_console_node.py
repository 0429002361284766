"""
Operator console (``af-console``): a terminal UI for the person at the robot.

Subscribes operator/next_task, recorder/status, policy/status, trainer/status,
trainer/checkpoint, trainer/evaluation, estop and mux/status (docs/interfaces.md)
and shows, refreshed with rich's Live display: the next task to demonstrate and
why (every task's score as a bar, budget, round), the recording state, the
policy and trainer, per-task success, the estop, and the newest events.  The
state and its rendering live in :mod:`active_finetune.console_view`.

The estop banner shows what the command mux confirms on ``mux/status``, not
what was sent on ``estop``; every ``GRAPH_CHECK_PERIOD_S`` the console looks at
the ROS graph and says so when no other node runs or the mux does not.

Keys (read only when stdin is a terminal; otherwise the console is display-only
and says so): ``r`` recorder/start, ``s`` recorder/stop, ``d`` recorder/discard,
``k`` operator/skip (std_srvs/Trigger, called asynchronously with a deadline,
results shown as events), ``y``/``n`` mark the episode being recorded a success
or a failure (recorder/mark_success, std_srvs/SetBool; with a note typed after
``t`` and ended with Enter, the note goes first on ``recorder/mark`` as an
EpisodeMark, which the recorder stores in the episode file), ``e`` toggles the
estop (std_msgs/Bool on ``estop``, reliable + transient local), ``q`` quits.
The recorder panel says what a stop would save: the operator's mark, the
simulator's verdict, or UNMARKED with the recorder's ``unmarked_success``.

``af-console --once`` (or the ``once`` parameter) collects the latched topics
for ``once_wait_s``, prints one snapshot and exits.
"""

import argparse
import contextlib
import os
import select
import sys
import termios
import threading
import time
import tty

from active_finetune import payloads
from active_finetune.console_view import ConsoleState, OperatorConsoleConfig, render_console
from active_finetune.nodes.parameters import declare_config
from active_finetune.nodes.qos import COMMAND_QOS, LATCHED_QOS
from active_finetune.nodes.spin import (
    ignore_stop_signals, install_stop_handlers, stop_requested, stopping_on_signal)
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.text import Text
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

KEY_SERVICES = {'r': 'recorder/start', 's': 'recorder/stop', 'd': 'recorder/discard',
                'k': 'operator/skip'}
"""Keys that call a std_srvs/Trigger service, and the service's name."""

MARK_KEYS = {'y': True, 'n': False}
"""Keys that mark the episode being recorded: success (True) or failure (False)."""

MARK_SERVICE = 'recorder/mark_success'
MARK_TOPIC = 'recorder/mark'
NOTE_KEY = 't'

PENDING_CHECK_PERIOD_S = 0.1
"""How often unanswered service calls are checked against their deadline (s)."""

GRAPH_CHECK_PERIOD_S = 1.0
"""How often the console looks at the ROS graph: other nodes, a publisher of mux/status (s)."""


class OperatorConsoleNode(Node):
    """
    Collect the graph's status topics into a :class:`ConsoleState` and act on the operator's keys.

    :param kwargs: passed to rclpy Node (context, parameter_overrides, ...)
    """

    def __init__(self, **kwargs):
        super().__init__('operator_console', **kwargs)
        self.config = declare_config(self, OperatorConsoleConfig)
        self.console_state = ConsoleState(max_events=self.config.max_events)
        self.quit_requested = threading.Event()
        self._pending_lock = threading.Lock()
        self._pending = []
        self._trigger_clients = {
            name: self.create_client(Trigger, name) for name in KEY_SERVICES.values()}
        self._trigger_clients[MARK_SERVICE] = self.create_client(SetBool, MARK_SERVICE)
        self._mark_pub = self.create_publisher(String, MARK_TOPIC, COMMAND_QOS)
        self._estop_pub = self.create_publisher(Bool, 'estop', LATCHED_QOS)
        state = self.console_state
        latched = {'operator/next_task': state.on_next_task,
                   'recorder/status': state.on_recorder_status,
                   'policy/status': state.on_policy_status,
                   'trainer/checkpoint': state.on_trainer_checkpoint,
                   'trainer/evaluation': state.on_trainer_evaluation,
                   'mux/status': state.on_mux_status}
        for topic, handler in latched.items():
            self.create_subscription(String, topic, self._guarded(topic, handler), LATCHED_QOS)
        # trainer/status is volatile; a transient-local subscription would not match it.
        self.create_subscription(String, 'trainer/status',
                                 self._guarded('trainer/status', state.on_trainer_status),
                                 COMMAND_QOS)
        # estop: transient local gets a latched value, volatile matches `ros2 topic pub`.
        for qos in (LATCHED_QOS, COMMAND_QOS):
            self.create_subscription(Bool, 'estop', self._guarded('estop', state.on_estop), qos)
        self.create_timer(PENDING_CHECK_PERIOD_S, self._expire_pending_calls)
        self.create_timer(GRAPH_CHECK_PERIOD_S, self.check_graph)

    def check_graph(self):
        """Tell the console state which other nodes run and whether the command mux does."""
        own = (self.get_name(), self.get_namespace())
        nodes = [name for name, namespace in self.get_node_names_and_namespaces()
                 if (name, namespace) != own]
        self.console_state.on_graph(nodes, self.count_publishers('mux/status') > 0)

    def _guarded(self, topic, handler):
        """Wrap a state handler so that nothing a message does can stop the executor."""
        def callback(msg):
            try:
                handler(msg.data)
            except Exception as error:  # noqa: B902 - an exception here would stop spin
                self.console_state.add_event(f'{topic}: message not handled: {error!r}', 'error')
                self.get_logger().error(f'{topic}: message not handled: {error!r}',
                                        throttle_duration_sec=10.0)
        return callback

    def handle_key(self, key):
        """
        Act on one key press (called from the key-reading thread, or from tests).

        :param key: a one-character string
        :return: True when the key means something to the console, else False
        """
        if self.console_state.editing_note:
            self.console_state.note_key(key)
            return True
        key = key.lower()
        try:
            if key in MARK_KEYS:
                self.mark_episode(MARK_KEYS[key])
            elif key == NOTE_KEY:
                self.console_state.begin_note()
            elif key in KEY_SERVICES:
                self.call_trigger(KEY_SERVICES[key])
            elif key == 'e':
                self.toggle_estop()
            elif key == 'q':
                self.console_state.add_event('quitting')
                self.quit_requested.set()
            else:
                return False
        except Exception as error:  # noqa: B902 - a key must never kill the console
            self.console_state.add_event(f'key {key!r} failed: {error!r}', 'error')
            self.get_logger().error(f'key {key!r} failed: {error!r}')
        return True

    def service_ready(self, service):
        """
        Say whether a key's service has a server right now.

        :param service: one of the names in :data:`KEY_SERVICES`
        :return: True when a server is discovered
        :raises KeyError: for a service the console has no client for
        """
        return self._trigger_clients[service].service_is_ready()

    def mark_episode(self, success):
        """
        Mark the episode being recorded a success or a failure, with the note typed for it.

        The note (if any) goes on ``recorder/mark`` (an EpisodeMark the recorder stores in the
        episode file), then the verdict through ``recorder/mark_success``, whose answer (or
        refusal: not recording) is an event; the recorder's status then shows the mark.

        :param success: True for success, False for failure
        """
        note = self.console_state.take_note()
        if note:
            receivers = self.count_subscribers(MARK_TOPIC)
            self._mark_pub.publish(String(data=payloads.encode(
                payloads.EpisodeMark(success=bool(success), note=note))))
            if receivers:
                self.console_state.add_event(f'{MARK_TOPIC}: note sent: {note}')
            else:
                self.console_state.add_event(
                    f'{MARK_TOPIC}: note NOT stored, no recorder subscribes: {note}', 'error')
        self.call_trigger(MARK_SERVICE, SetBool.Request(data=bool(success)))

    def call_trigger(self, service, request=None):
        """
        Call a recorder/operator service asynchronously; its answer, or its absence, is an event.

        :param service: one of the names in :data:`KEY_SERVICES`, or :data:`MARK_SERVICE`
        :param request: the request (default: an empty std_srvs/Trigger request)
        :raises KeyError: for a service the console has no client for
        """
        client = self._trigger_clients[service]
        if not self.service_ready(service):
            self.console_state.add_event(f'{service}: service not available', 'error')
            return
        future = client.call_async(Trigger.Request() if request is None else request)
        deadline_s = time.monotonic() + self.config.service_timeout_s
        with self._pending_lock:
            self._pending.append((future, client, service, deadline_s))
        future.add_done_callback(lambda done: self._on_trigger_done(service, done))
        self.console_state.add_event(f'{service}: called')

    def _on_trigger_done(self, service, future):
        with self._pending_lock:
            self._pending = [p for p in self._pending if p[0] is not future]
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.console_state.add_event(f'{service} failed: {error!r}', 'error')
            return
        response = future.result()
        text = f'{service}: {"ok" if response.success else "refused"}' \
            + (f': {response.message}' if response.message else '')
        self.console_state.add_event(text, 'info' if response.success else 'warning')

    def _expire_pending_calls(self):
        now_s = time.monotonic()
        with self._pending_lock:
            expired = [p for p in self._pending if p[3] <= now_s]
            self._pending = [p for p in self._pending if p[3] > now_s]
        for future, client, service, _ in expired:
            client.remove_pending_request(future)
            future.cancel()
            self.console_state.add_event(
                f'{service}: no answer within {self.config.service_timeout_s:g} s', 'error')

    def toggle_estop(self):
        """
        Publish the opposite of the newest estop value (engage when none is known yet).

        :return: the value published
        """
        engage = not self.console_state.estop
        self._estop_pub.publish(Bool(data=engage))
        self.console_state.add_event(f'estop {"engage" if engage else "release"} sent',
                                     'warning')
        self.get_logger().warning(f'operator {"engaged" if engage else "released"} the estop')
        return engage

    def render(self):
        """
        Build the current view (never raises: a rendering failure is shown instead).

        :return: rich renderable
        """
        try:
            return render_console(self.console_state.snapshot())
        except Exception as error:  # noqa: B902 - the display thread must survive
            return Panel(Text(f'console rendering failed: {error!r}', style='bold red'))


class KeyReader:
    """
    Read key presses from a terminal in cbreak mode, in a thread; restore the terminal on exit.

    :param on_key: callable(str), called with each character typed
    :param fd: terminal file descriptor (stdin's by default)
    :param poll_s: how often the thread checks whether it should stop (s)
    """

    def __init__(self, on_key, fd=None, poll_s=0.1):
        self._on_key = on_key
        self._fd = sys.stdin.fileno() if fd is None else fd
        self._poll_s = poll_s
        self._saved = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='console-keys', daemon=True)

    def __enter__(self):
        """Switch the terminal to cbreak mode and start reading."""
        self._saved = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        """Stop reading and restore the terminal's previous settings."""
        self._stop.set()
        self._thread.join(timeout=2.0 * self._poll_s + 1.0)
        self.restore()

    def restore(self):
        """Restore the terminal settings saved on entry (idempotent)."""
        if self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def _run(self):
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], self._poll_s)
            if not ready:
                continue
            data = os.read(self._fd, 64)
            if not data:
                return
            for key in data.decode(errors='ignore'):
                self._on_key(key)


def _spin(executor):
    with contextlib.suppress(ExternalShutdownException):
        executor.spin()


def run_console(node, console=None, stdin=None):
    """
    Show the console until ``q``, Ctrl-C or SIGTERM (or print one snapshot with ``once``).

    The node is spun by an executor in a background thread; the display runs here.

    :param node: :class:`OperatorConsoleNode`
    :param console: rich Console (a new one on stdout by default)
    :param stdin: file whose terminal gives the keys (sys.stdin by default)
    """
    console = Console() if console is None else console
    stdin = sys.stdin if stdin is None else stdin
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    spinner = threading.Thread(target=_spin, args=(executor,), name='console-spin', daemon=True)
    spinner.start()
    try:
        if node.config.once:
            node.console_state.set_input_mode(False, 'one snapshot (--once)')
            node.quit_requested.wait(node.config.once_wait_s)
            console.print(node.render())
            return
        with contextlib.ExitStack() as stack:
            if stdin.isatty():
                stack.enter_context(KeyReader(node.handle_key, fd=stdin.fileno()))
                node.console_state.set_input_mode(True, '')
            else:
                note = 'stdin is not a terminal, keys are off'
                node.console_state.set_input_mode(False, note)
                node.get_logger().info(f'display only: {note}')
            stack.enter_context(Live(
                get_renderable=node.render, console=console,
                refresh_per_second=node.config.refresh_hz, screen=console.is_terminal,
                redirect_stderr=False))
            while not (node.quit_requested.wait(0.1) or stop_requested()):
                pass
    finally:
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=2.0)


def main(args=None):
    """
    Run the operator console: ``af-console [--once] [--ros-args ...]``.

    :param args: command line (sys.argv by default), ROS arguments included
    """
    args = sys.argv if args is None else args
    parser = argparse.ArgumentParser(prog='af-console', description=__doc__.split('\n\n')[0])
    parser.add_argument('--once', action='store_true',
                        help='print one snapshot after the once_wait_s parameter and exit')
    options = parser.parse_args(remove_ros_args(args)[1:])
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    install_stop_handlers()
    node = None
    try:
        with stopping_on_signal():
            overrides = [Parameter('once', value=True)] if options.once else []
            node = OperatorConsoleNode(parameter_overrides=overrides)
            run_console(node)
    finally:
        ignore_stop_signals()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
