"""
Shared fixtures for node tests through real DDS.

- The session runs in a random ROS_DOMAIN_ID (set before any rclpy.init), with
  discovery limited to this host, so parallel runs never cross-talk.
- ``ros``: a fresh rclpy Context, a helper node for test publishers and
  subscriptions, and one spinning thread per node (see :class:`RosHarness`);
  everything is torn down after the test, and an exception raised in a
  callback fails the test.
- ``wait_for``: poll a predicate until it holds or a deadline passes; it stops
  early with :class:`SpinError` when a spinning thread died.

Why one SingleThreadedExecutor per node rather than one MultiThreadedExecutor
for all: each node runs as in production (``run_node``: its own process,
single-threaded spin), callbacks of different nodes cannot delay each other,
and rclpy's MultiThreadedExecutor starves the subscriptions of a node whose
callbacks share one mutually exclusive callback group with a timer that is due
again when its callback ends (a 50 Hz timer taking 12 ms let 87 of 150
messages through, one taking 19 ms let 3 through): on a loaded machine a
policy node then sees its last image age for seconds.
"""

import os
import random
import threading
import time
import traceback

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor

os.environ['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(1, 100))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

SPIN_TIMEOUT_S = 0.1
"""Longest wait of one spin_once, i.e. how long a stop request may go unnoticed."""
JOIN_TIMEOUT_S = 10.0
"""Deadline for a spinning thread to finish its current callback and stop."""

_ACTIVE_HARNESSES = []
"""Harnesses of running tests, so :func:`wait_for` can stop at a dead spinning thread."""


class SpinError(AssertionError):
    """A callback raised (or a spinning thread could not be stopped) during a node test."""


def _raise_spin_errors():
    for harness in list(_ACTIVE_HARNESSES):
        harness.raise_errors()


def wait_for(predicate, timeout_s, interval_s=0.01):
    """
    Poll ``predicate`` until it returns a true value or ``timeout_s`` passes.

    A predicate raising AssertionError (e.g. :attr:`MessageLog.last` before any
    message arrived) counts as not true yet.

    :param predicate: callable without arguments
    :param timeout_s: deadline in seconds
    :param interval_s: polling interval in seconds
    :return: True when the predicate held in time, else False
    :raises SpinError: when a node's spinning thread died (its callback raised)
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if predicate():
                return True
        except SpinError:
            raise
        except AssertionError:
            pass
        _raise_spin_errors()
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)


class MessageLog:
    """
    Messages received on one topic, with their arrival times (thread-safe).

    :param topic: topic name, for messages
    """

    def __init__(self, topic):
        self.topic = topic
        self._lock = threading.Lock()
        self._messages = []
        self._arrivals_s = []

    def append(self, msg):
        """
        Store a message (subscription callback).

        :param msg: the message
        """
        with self._lock:
            self._messages.append(msg)
            self._arrivals_s.append(time.monotonic())

    @property
    def messages(self):
        """:return: a copy of the list of messages received so far."""
        with self._lock:
            return list(self._messages)

    @property
    def arrivals_s(self):
        """:return: a copy of the monotonic arrival times."""
        with self._lock:
            return list(self._arrivals_s)

    def __len__(self):
        with self._lock:
            return len(self._messages)

    @property
    def last(self):
        """:return: the newest message; raises AssertionError when none arrived."""
        with self._lock:
            assert self._messages, f'no message received on {self.topic!r}'
            return self._messages[-1]

    def clear(self):
        """Forget the messages received so far."""
        with self._lock:
            self._messages.clear()
            self._arrivals_s.clear()


class NodeSpinner:
    """
    Spin one node on its own SingleThreadedExecutor in its own thread.

    An exception from a callback stops the spinning (as it would end the node's
    process) and is kept in :attr:`errors`.

    :param node: rclpy Node
    :param context: the node's rclpy Context
    """

    def __init__(self, node, context):
        self.node = node
        self.errors = []
        self.stopped = False
        self._context = context
        self._stop = threading.Event()
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(node)
        self._thread = threading.Thread(
            target=self._spin, name=f'spin-{node.get_name()}', daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            while not self._stop.is_set() and self._context.ok():
                self._executor.spin_once(timeout_sec=SPIN_TIMEOUT_S)
        except rclpy.executors.ExternalShutdownException:
            pass
        except Exception:  # noqa: B902 - kept and raised in the test's thread
            self.errors.append(
                f'callback of node {self.node.get_name()!r} raised:\n{traceback.format_exc()}')

    def stop(self):
        """
        Stop spinning (the running callback finishes first) and release the executor.

        When :attr:`stopped` is True afterwards no callback of the node runs any
        more, so the node can be destroyed safely.
        """
        self._stop.set()
        self._executor.wake()
        self._thread.join(JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            self.errors.append(f'node {self.node.get_name()!r} still in a callback '
                               f'{JOIN_TIMEOUT_S} s after it was asked to stop spinning')
            return
        self._executor.remove_node(self.node)
        self._executor.shutdown()
        self.stopped = True


class RosHarness:
    """
    A fresh rclpy context, a helper node, and one spinning thread per node.

    Teardown order: stop every spinning thread (no callback runs any more), then
    destroy the nodes (nodes under test first, they may publish a last message),
    then shut the context down.

    :param context: initialised rclpy Context
    """

    def __init__(self, context):
        self.context = context
        self.node = rclpy.create_node(f'test_helper_{os.getpid()}', context=context)
        self._spinners = {self.node: NodeSpinner(self.node, context)}
        self._stopped_errors = []

    def add_node(self, node):
        """
        Spin a node under test; it is destroyed at teardown unless the test did it.

        :param node: rclpy Node built with ``context=harness.context``
        :return: the node
        """
        self._spinners[node] = NodeSpinner(node, self.context)
        return node

    def destroy_node(self, node):
        """
        Stop spinning a node and destroy it (to test shutdown behaviour).

        :param node: a node given to :meth:`add_node`
        """
        spinner = self._spinners.pop(node)
        spinner.stop()
        self._stopped_errors.extend(spinner.errors)
        if spinner.stopped:
            node.destroy_node()
        self.raise_errors()

    def collect(self, msg_type, topic, qos=10):
        """
        Subscribe the helper node and log every message.

        :param msg_type: message class
        :param topic: topic name
        :param qos: QoS profile or depth
        :return: :class:`MessageLog`
        """
        log = MessageLog(topic)
        self.node.create_subscription(msg_type, topic, log.append, qos)
        return log

    def publisher(self, msg_type, topic, qos=10):
        """
        Create a publisher on the helper node.

        :param msg_type: message class
        :param topic: topic name
        :param qos: QoS profile or depth
        :return: rclpy Publisher
        """
        return self.node.create_publisher(msg_type, topic, qos)

    def wait_for_subscribers(self, publisher, count=1, timeout_s=5.0):
        """
        Wait until ``publisher`` is matched with ``count`` subscriptions.

        :param publisher: rclpy Publisher
        :param count: number of subscriptions
        :param timeout_s: deadline
        :return: True when matched in time
        """
        return wait_for(lambda: publisher.get_subscription_count() >= count, timeout_s)

    @property
    def errors(self):
        """:return: what went wrong in spinning threads so far (tracebacks as text)."""
        errors = list(self._stopped_errors)
        for spinner in list(self._spinners.values()):
            errors.extend(spinner.errors)
        return errors

    def raise_errors(self):
        """
        Fail the test when a callback raised or a spinning thread would not stop.

        :raises SpinError: with every error seen so far
        """
        errors = self.errors
        if errors:
            raise SpinError('\n'.join(errors))

    def close(self):
        """
        Stop spinning, destroy the nodes, shut the context down.

        :raises SpinError: when a callback raised during the test or teardown
        """
        spinners = list(self._spinners.items())
        self._spinners.clear()
        try:
            for _, spinner in spinners:
                spinner.stop()
                self._stopped_errors.extend(spinner.errors)
            # Nodes under test first (newest first), the helper node last.
            for node, spinner in reversed(spinners):
                if spinner.stopped:
                    node.destroy_node()
        finally:
            self.context.try_shutdown()
        self.raise_errors()


@pytest.fixture
def ros():
    """
    Yield a :class:`RosHarness` on its own context, torn down after the test.

    :return: RosHarness
    """
    context = rclpy.Context()
    rclpy.init(context=context)
    harness = RosHarness(context)
    _ACTIVE_HARNESSES.append(harness)
    try:
        yield harness
    finally:
        _ACTIVE_HARNESSES.remove(harness)
        harness.close()


@pytest.fixture(name='wait_for')
def wait_for_fixture():
    """
    Give tests the :func:`wait_for` helper.

    :return: wait_for function
    """
    return wait_for
