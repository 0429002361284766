"""
The shared ``main`` body of every node: init, build, spin, clean shutdown on SIGINT/SIGTERM/SIGHUP.

:func:`install_stop_handlers` is also used by the mains that do not spin through
:func:`run_node` (the operator console).
"""

import contextlib
import signal
import threading

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, \
    SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Signals that stop a node cleanly (its destroy_node runs: final zero, flushed files)."""


_STOP_REQUESTED = threading.Event()

SPIN_PERIOD_S = 0.25
"""Longest wait of one executor turn: how late a stop that raised nothing is noticed."""


def _in_finalizer(frame):
    while frame is not None:
        if frame.f_code.co_name == '__del__':
            return True
        frame = frame.f_back
    return False


def _stop(signum, frame):
    _STOP_REQUESTED.set()
    # An exception raised inside a finalizer (e.g. rclpy's Future.__del__) is printed as
    # "Exception ignored" and dropped; the spin loop sees the flag within SPIN_PERIOD_S instead.
    if not _in_finalizer(frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)


def stop_requested():
    """
    Tell whether a stop signal has arrived since the handlers were installed.

    :return: bool
    """
    return _STOP_REQUESTED.is_set()


def install_stop_handlers():
    """
    Make SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread.

    Installed explicitly for SIGINT too: a process started in the background by a
    non-interactive shell inherits SIGINT ignored, and Python then leaves it ignored, so Ctrl-C
    (or a supervisor's SIGINT) would never reach the node.  SIGHUP (terminal closed, SSH
    dropped) would otherwise kill the process without its final zero.
    """
    _STOP_REQUESTED.clear()
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop)


def ignore_stop_signals():
    """
    Ignore further stop signals while the node shuts down, so its final zero goes out.

    A node started by ``af-runner`` gets SIGTERM when the runner dies, once for each runner
    thread that exits (the kernel re-sends the parent-death signal at every reparenting); a
    second KeyboardInterrupt must not cut ``destroy_node`` short.  SIGKILL still ends it.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def stopping_on_signal():
    """
    End the ``with`` block quietly when a stop signal or an external shutdown ends it.

    A KeyboardInterrupt raised while rclpy's C++ layer converts a taken message reaches Python as
    pybind11's "Unable to convert call argument" RuntimeError; after a stop signal it is that
    stop, any other RuntimeError is a real error and propagates.
    """
    try:
        yield
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        if not stop_requested():
            raise


def spin_until_stopped(node, threads=1):
    """
    Spin ``node`` until a stop signal or an external shutdown.

    The stop flag is checked at least every :data:`SPIN_PERIOD_S`, so a stop signal whose
    KeyboardInterrupt was not raised (or was swallowed) still ends the spin.

    :param node: the node
    :param threads: executor threads (1: single-threaded)
    """
    executor = MultiThreadedExecutor(num_threads=threads, context=node.context) if threads > 1 \
        else SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        while not stop_requested():
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
    finally:
        executor.remove_node(node)


def run_node(node_factory, args=None, threads=1):
    """
    Build a node, spin it until Ctrl-C, SIGTERM or SIGHUP, destroy it (it flushes and zeroes).

    rclpy's own signal handlers would shut the context down before the node can publish a final
    zero or flush a file, so the stop signals raise KeyboardInterrupt instead
    (:func:`install_stop_handlers`).

    :param node_factory: callable() -> Node
    :param args: ROS command-line arguments
    :param threads: executor threads (1: single-threaded spin)
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    install_stop_handlers()
    node = None
    try:
        with stopping_on_signal():
            node = node_factory()
            spin_until_stopped(node, threads)
    finally:
        ignore_stop_signals()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
