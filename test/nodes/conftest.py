"""
Shared fixtures for node tests through real DDS.

- The session runs in a random ROS_DOMAIN_ID (set before any rclpy.init), with
  discovery limited to this host, so parallel runs never cross-talk.
- ``ros``: a fresh rclpy Context with a MultiThreadedExecutor spun in a thread
  and a helper node for test publishers and subscriptions; everything is torn
  down after the test.
- ``wait_for``: poll a predicate until it holds or a deadline passes.
"""

import os
import random
import threading
import time

import pytest
import rclpy
from rclpy.executors import MultiThreadedExecutor

os.environ['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(1, 100))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')


def wait_for(predicate, timeout_s, interval_s=0.01):
    """
    Poll ``predicate`` until it returns a true value or ``timeout_s`` passes.

    A predicate raising AssertionError (e.g. :attr:`MessageLog.last` before any
    message arrived) counts as not true yet.

    :param predicate: callable without arguments
    :param timeout_s: deadline in seconds
    :param interval_s: polling interval in seconds
    :return: True when the predicate held in time, else False
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if predicate():
                return True
        except AssertionError:
            pass
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


class RosHarness:
    """
    A fresh rclpy context with a spinning executor and a helper node.

    :param context: initialised rclpy Context
    """

    def __init__(self, context):
        self.context = context
        self.executor = MultiThreadedExecutor(num_threads=2, context=context)
        self.node = rclpy.create_node(f'test_helper_{os.getpid()}', context=context)
        self.executor.add_node(self.node)
        self._nodes = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except rclpy.executors.ExternalShutdownException:
            pass

    def add_node(self, node):
        """
        Spin a node under test; it is destroyed at teardown unless the test did it.

        :param node: rclpy Node built with ``context=harness.context``
        :return: the node
        """
        self._nodes.append(node)
        self.executor.add_node(node)
        return node

    def destroy_node(self, node):
        """
        Stop spinning a node and destroy it (to test shutdown behaviour).

        :param node: a node given to :meth:`add_node`
        """
        self.executor.remove_node(node)
        self._nodes.remove(node)
        # Let callbacks already handed to executor threads finish before their
        # entities go away (else rclpy reports an unretrieved InvalidHandle).
        time.sleep(0.1)
        node.destroy_node()

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

    def close(self):
        """Destroy the nodes and shut the context down."""
        self.executor.shutdown(timeout_sec=2.0)
        for node in reversed(self._nodes):
            node.destroy_node()
        self._nodes.clear()
        self.node.destroy_node()
        self._thread.join(timeout=2.0)
        self.context.try_shutdown()


@pytest.fixture
def ros():
    """
    Yield a :class:`RosHarness` on its own context, torn down after the test.

    :return: RosHarness
    """
    context = rclpy.Context()
    rclpy.init(context=context)
    harness = RosHarness(context)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture(name='wait_for')
def wait_for_fixture():
    """
    Give tests the :func:`wait_for` helper.

    :return: wait_for function
    """
    return wait_for
