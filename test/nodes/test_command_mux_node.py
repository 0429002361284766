"""Command mux node through real DDS: source selection, timeouts, NaN, limits, estop, shutdown."""

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time

from active_finetune.nodes.command_mux_node import CommandMuxNode
from active_finetune.nodes.conversions import linear_to_twist_stamped, twist_stamped_to_linear
from active_finetune.nodes.qos import COMMAND_QOS, LATCHED_QOS
from geometry_msgs.msg import TwistStamped
import numpy as np
import pytest
from rcl_interfaces.msg import ParameterType
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from std_msgs.msg import Bool, Float64, String

pytestmark = pytest.mark.timeout(60)

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


class Streamer:
    """Publish the current message of a topic at 50 Hz from the helper node (None: silent)."""

    def __init__(self, ros, msg_type, topic):
        self.publisher = ros.publisher(msg_type, topic, COMMAND_QOS)
        self._lock = threading.Lock()
        self._msg = None
        self._timer = ros.node.create_timer(0.02, self._tick)

    def stream(self, msg):
        with self._lock:
            self._msg = msg

    def _tick(self):
        with self._lock:
            msg = self._msg
        if msg is not None:
            self.publisher.publish(msg)


def twist(x=0.0, y=0.0, z=0.0):
    return linear_to_twist_stamped([x, y, z], 0.0, 'base_link')


def linear(msg):
    return twist_stamped_to_linear(msg)


def statuses(log):
    return [json.loads(m.data) for m in log.messages]


@pytest.fixture
def graph(ros):
    """Streams for the mux inputs and logs of its outputs."""
    class Graph:
        policy_twist = Streamer(ros, TwistStamped, 'policy/twist')
        policy_gripper = Streamer(ros, Float64, 'policy/gripper')
        teleop_twist = Streamer(ros, TwistStamped, 'teleop/twist')
        teleop_gripper = Streamer(ros, Float64, 'teleop/gripper')
        cmd_twist = ros.collect(TwistStamped, 'cmd/twist', COMMAND_QOS)
        cmd_gripper = ros.collect(Float64, 'cmd/gripper', COMMAND_QOS)
        status = ros.collect(String, 'mux/status', LATCHED_QOS)
    return Graph


def start_mux(ros, **parameters):
    values = {'max_linear_velocity_mps': 0.25, 'command_timeout_s': 0.2,
              'teleop_hold_s': 0.5, 'teleop_motion_threshold_mps': 0.01}
    values.update(parameters)
    return ros.add_node(CommandMuxNode(
        context=ros.context,
        parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]))


def test_policy_commands_pass_and_stale_policy_gives_zero(ros, wait_for, graph):
    start_mux(ros)
    assert wait_for(lambda: len(graph.status) > 0, 5.0)
    assert statuses(graph.status)[-1]['code'] == 'no_source'
    graph.policy_twist.stream(twist(0.1, -0.05, 0.02))
    graph.policy_gripper.stream(Float64(data=0.5))
    assert wait_for(lambda: len(graph.cmd_twist) > 0
                    and np.allclose(linear(graph.cmd_twist.last), [0.1, -0.05, 0.02]), 5.0)
    assert wait_for(lambda: len(graph.cmd_gripper) > 0 and graph.cmd_gripper.last.data == 0.5,
                    2.0)
    assert wait_for(lambda: statuses(graph.status)[-1]['source'] == 'policy', 2.0)
    graph.policy_twist.stream(None)
    assert wait_for(lambda: np.all(linear(graph.cmd_twist.last) == 0.0), 2.0), 'stale -> zero'
    assert wait_for(lambda: statuses(graph.status)[-1]['code'] == 'no_source', 2.0)
    assert 'stale policy command' in statuses(graph.status)[-1]['reason']
    assert graph.cmd_gripper.last.data == 0.5, 'the gripper holds its position'


@pytest.mark.parametrize('forward_source_stamp', [False, True])
def test_a_new_command_is_forwarded_at_once_stamped_as_configured(ros, wait_for, graph,
                                                                  forward_source_stamp):
    start_mux(ros, rate_hz=1.0, forward_source_stamp=forward_source_stamp)  # a cycle a second
    assert wait_for(lambda: len(graph.status) > 0, 5.0)
    publisher = ros.publisher(TwistStamped, 'policy/twist', COMMAND_QOS)
    issued_s = 1_700_000_000.25
    publisher.publish(linear_to_twist_stamped([0.1, 0.0, 0.0], issued_s, 'base_link'))
    assert wait_for(lambda: any(np.allclose(linear(m), [0.1, 0.0, 0.0])
                                for m in graph.cmd_twist.messages), 0.5), \
        'forwarded on arrival, not at the next 1 Hz cycle'
    forwarded = next(m for m in graph.cmd_twist.messages
                     if np.allclose(linear(m), [0.1, 0.0, 0.0]))
    stamp_s = forwarded.header.stamp.sec + forwarded.header.stamp.nanosec * 1e-9
    if forward_source_stamp:
        assert abs(stamp_s - issued_s) < 1e-6, 'the source stamp'
    else:
        assert abs(stamp_s - time.time()) < 5.0, 'the time of publishing'


def test_nan_gives_zero_and_limits_clamp(ros, wait_for, graph):
    start_mux(ros)
    graph.policy_twist.stream(twist(1.0, -1.0, 0.1))
    assert wait_for(lambda: len(graph.cmd_twist) > 0
                    and np.allclose(linear(graph.cmd_twist.last), [0.25, -0.25, 0.1]), 5.0)
    assert wait_for(lambda: statuses(graph.status)[-1]['code'] == 'clamped', 2.0)
    graph.policy_twist.stream(twist(np.nan, 0.1, 0.1))
    assert wait_for(lambda: statuses(graph.status)[-1]['code'] == 'non_finite', 2.0)
    graph.cmd_twist.clear()
    assert wait_for(lambda: len(graph.cmd_twist) >= 5, 2.0)
    assert all(np.all(linear(m) == 0.0) for m in graph.cmd_twist.messages)


def test_estop_latches_until_released(ros, wait_for, graph):
    start_mux(ros)
    graph.policy_twist.stream(twist(0.1))
    assert wait_for(lambda: len(graph.cmd_twist) > 0 and linear(graph.cmd_twist.last)[0] == 0.1,
                    5.0)
    estop = ros.publisher(Bool, 'estop', COMMAND_QOS)
    assert ros.wait_for_subscribers(estop)
    estop.publish(Bool(data=True))
    assert wait_for(lambda: statuses(graph.status)[-1]['estop'] is True, 2.0)
    graph.cmd_twist.clear()
    assert wait_for(lambda: len(graph.cmd_twist) >= 15, 10.0)
    assert all(np.all(linear(m) == 0.0) for m in graph.cmd_twist.messages), \
        'latched: zero while the policy keeps commanding, without the estop being repeated'
    estop.publish(Bool(data=False))
    assert wait_for(lambda: linear(graph.cmd_twist.last)[0] == 0.1, 2.0), 'released'
    assert statuses(graph.status)[-1]['estop'] is False


def test_estop_latched_before_the_mux_started_is_obeyed(ros, wait_for, graph):
    latched = ros.publisher(Bool, 'estop', LATCHED_QOS)
    latched.publish(Bool(data=True))
    graph.policy_twist.stream(twist(0.1))
    start_mux(ros)
    assert wait_for(lambda: len(graph.status) > 0 and statuses(graph.status)[-1]['estop'], 5.0)
    graph.cmd_twist.clear()
    assert wait_for(lambda: len(graph.cmd_twist) >= 10, 10.0)
    assert all(np.all(linear(m) == 0.0) for m in graph.cmd_twist.messages)


def test_teleop_motion_and_recording_take_priority(ros, wait_for, graph):
    start_mux(ros)
    graph.policy_twist.stream(twist(0.1))
    graph.teleop_twist.stream(twist())
    assert wait_for(lambda: len(graph.cmd_twist) > 0 and linear(graph.cmd_twist.last)[0] == 0.1,
                    5.0), 'a resting SpaceMouse leaves the policy in control'
    graph.teleop_twist.stream(twist(0.0, 0.05))
    assert wait_for(lambda: linear(graph.cmd_twist.last)[1] == 0.05, 2.0)
    assert wait_for(lambda: statuses(graph.status)[-1]['source'] == 'teleop', 2.0)
    graph.teleop_twist.stream(twist())
    assert wait_for(lambda: linear(graph.cmd_twist.last)[0] == 0.1, 3.0), \
        'policy again teleop_hold_s after the last motion'
    recorder = ros.publisher(String, 'recorder/status', LATCHED_QOS)
    recorder.publish(String(data=json.dumps({'state': 'recording', 'task': 'reach'})))
    assert wait_for(lambda: statuses(graph.status)[-1]['source'] == 'teleop', 2.0), \
        'teleop has priority while recording, even at rest'
    # Status and twist are separate topics: the zero twist of that cycle may arrive just after.
    assert wait_for(lambda: np.all(linear(graph.cmd_twist.last) == 0.0), 2.0), \
        linear(graph.cmd_twist.last)
    recorder.publish(String(data='not json'))
    recorder.publish(String(data=json.dumps({'state': 'idle'})))
    assert wait_for(lambda: statuses(graph.status)[-1]['source'] == 'policy', 2.0)


def test_zero_on_shutdown(ros, wait_for, graph):
    node = start_mux(ros)
    graph.policy_twist.stream(twist(0.2))
    assert wait_for(lambda: len(graph.cmd_twist) > 0 and linear(graph.cmd_twist.last)[0] == 0.2,
                    5.0)
    ros.destroy_node(node)
    assert wait_for(lambda: np.all(linear(graph.cmd_twist.last) == 0.0), 2.0)


def test_parameters_through_the_parameter_service(ros, wait_for):
    node = start_mux(ros)
    client = AsyncParameterClient(ros.node, node.get_fully_qualified_name())
    assert client.wait_for_services(timeout_sec=5.0)
    described = client.describe_parameters(['rate_hz', 'max_linear_velocity_mps'])
    assert wait_for(described.done, 5.0)
    rate, limit = described.result().descriptors
    assert rate.read_only and '(Hz)' in rate.description
    assert limit.type == ParameterType.PARAMETER_DOUBLE and '(m/s)' in limit.description
    assert limit.floating_point_range[0].to_value == 5.0
    future = client.set_parameters([Parameter('max_linear_velocity_mps', value=0.0),
                                    Parameter('rate_hz', value=10.0),
                                    Parameter('command_timeout_s', value=0.5)])
    assert wait_for(future.done, 5.0)
    zero_limit, rate_change, timeout_change = future.result().results
    assert not zero_limit.successful and 'max_linear_velocity_mps' in zero_limit.reason
    assert not rate_change.successful and 'read-only' in rate_change.reason
    assert timeout_change.successful
    assert wait_for(lambda: node.config.command_timeout_s == 0.5, 2.0)
    assert node.config.max_linear_velocity_mps == 0.25


def test_zero_and_no_forwarding_when_every_command_source_vanishes(ros, wait_for, graph):
    node = start_mux(ros)
    graph.policy_twist.stream(twist(0.1))
    assert wait_for(lambda: len(graph.cmd_twist) > 0 and linear(graph.cmd_twist.last)[0] == 0.1,
                    5.0)
    # The policy process dies: its publisher is gone (no teleop publisher either).
    graph.policy_twist.stream(None)
    for streamer in (graph.policy_twist, graph.teleop_twist):
        ros.node.destroy_publisher(streamer.publisher)
    assert wait_for(lambda: node.count_publishers('policy/twist') == 0
                    and node.count_publishers('teleop/twist') == 0, 10.0)
    assert wait_for(lambda: np.all(linear(graph.cmd_twist.last) == 0.0), 5.0)
    assert wait_for(lambda: statuses(graph.status)[-1]['code'] == 'no_source', 5.0)
    graph.cmd_twist.clear()
    assert wait_for(lambda: len(graph.cmd_twist) > 5, 5.0), 'zero keeps coming at rate_hz'
    assert all(np.all(linear(m) == 0.0) for m in graph.cmd_twist.messages)


# Started with SIGINT ignored, as a process started in the background by a script is.
IGNORE_SIGINT_THEN_EXEC = ('import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); '
                           'os.execv(sys.executable, [sys.executable] + sys.argv[1:])')


@pytest.mark.timeout(300)
@pytest.mark.parametrize('signal_number, sigint_ignored', [
    (signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGHUP, False),
    (signal.SIGINT, True)])
def test_main_publishes_zero_when_signalled(ros, wait_for, graph, process_groups, signal_number,
                                            sigint_ignored):
    command = [sys.executable, '-m', 'active_finetune.nodes.command_mux_node',
               '--ros-args', '-p', 'command_timeout_s:=1.0']
    if sigint_ignored:
        command = [sys.executable, '-c', IGNORE_SIGINT_THEN_EXEC] + command[1:]
    # Its own process group, killed at teardown whatever failed (process_groups).
    process = process_groups.popen(command, cwd=REPOSITORY_ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
    graph.policy_twist.stream(twist(0.1))
    assert wait_for(lambda: len(graph.cmd_twist) > 0
                    and linear(graph.cmd_twist.last)[0] == 0.1, 120.0)
    os.killpg(process.pid, signal_number)
    output, _ = process.communicate(timeout=60.0)
    assert process.returncode == 0, output
    assert 'Traceback' not in output, output
    assert wait_for(lambda: np.all(linear(graph.cmd_twist.last) == 0.0), 10.0), \
        'the last command of a signalled mux is zero, though the policy still streams'
