"""Operator console through real DDS: topics into its state, keys into services and estop."""

import json
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import threading
import time

from active_finetune.console_view import render_text
from active_finetune.nodes.command_mux_node import CommandMuxNode
from active_finetune.nodes.operator_console_node import KEY_SERVICES, KeyReader, \
    OperatorConsoleNode
from active_finetune.nodes.qos import COMMAND_QOS, LATCHED_QOS
from active_finetune.payloads import decode_episode_mark, EpisodeMark
import pytest
import rclpy
from rclpy.parameter import Parameter
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

pytestmark = pytest.mark.timeout(60)

NEXT_TASK = {
    'request_id': 3, 'round': 1, 'task': 'drawer-open', 'tasks_this_round': ['drawer-open'],
    'strategy': 'amf', 'scores': {'drawer-open': 0.8, 'reach': 0.3}, 'terms': {},
    'demo_counts': {'drawer-open': 1, 'reach': 4}, 'demos_used': 5, 'budget': 20,
    'budget_remaining': 15, 'policy_version': 1, 'skipped': [], 'done': False,
    'reason': 'amf selection'}


def start_console(ros, **parameters):
    return ros.add_node(OperatorConsoleNode(
        context=ros.context,
        parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()]))


def event_texts(node):
    return [event['text'] for event in node.console_state.snapshot()['events']]


def has_event(node, text):
    return any(text in event for event in event_texts(node))


class FakeTriggerServers:
    """Trigger services on the helper node that count calls and answer as configured."""

    def __init__(self, ros, answers):
        self.calls = dict.fromkeys(answers, 0)
        self._lock = threading.Lock()
        for name, (success, message) in answers.items():
            ros.node.create_service(
                Trigger, name,
                lambda request, response, name=name, success=success, message=message:
                    self._answer(name, response, success, message))

    def _answer(self, name, response, success, message):
        with self._lock:
            self.calls[name] += 1
        response.success = success
        response.message = message
        return response

    def count(self, name):
        with self._lock:
            return self.calls[name]


def test_state_reflects_published_topics(ros, wait_for):
    latched = {topic: ros.publisher(String, topic, LATCHED_QOS) for topic in (
        'operator/next_task', 'recorder/status', 'policy/status', 'trainer/checkpoint',
        'trainer/evaluation', 'mux/status')}
    # Published before the console exists: transient local hands it over on discovery.
    latched['operator/next_task'].publish(String(data=json.dumps(NEXT_TASK)))
    console = start_console(ros, max_events=20)
    assert wait_for(lambda: console.console_state.snapshot()['next_task'] is not None, 5.0)
    state = console.console_state.snapshot()
    assert state['next_task']['task'] == 'drawer-open'
    assert state['next_task']['budget_remaining'] == 15
    assert state['events'][-1]['text'] == 'next task: drawer-open (amf selection)'

    for publisher in latched.values():
        assert ros.wait_for_subscribers(publisher)
    latched['recorder/status'].publish(String(data=json.dumps(
        {'state': 'recording', 'task': 'drawer-open', 'duration_s': 2.5, 'frames': 75,
         'dropped': 0})))
    latched['policy/status'].publish(String(data=json.dumps(
        {'state': 'idle', 'code': 'estop', 'reason': 'estop engaged', 'task': 'drawer-open',
         'version': 1})))
    latched['trainer/checkpoint'].publish(String(data=json.dumps(
        {'path': '/c/v2', 'sha256': 'a' * 64, 'version': 2, 'round': 1, 'demos_used': 5,
         'step': 10, 'metrics': {'train_loss': 0.2}, 'weights_b64': 'QUJD' * 250000})))
    latched['trainer/evaluation'].publish(String(data=json.dumps(
        {'version': 2, 'success': {'drawer-open': 0.9, 'reach': 0.2}, 'mean': 0.55,
         'episodes': 10})))
    latched['mux/status'].publish(String(data=json.dumps(
        {'source': 'none', 'estop': True, 'code': 'estop', 'reason': 'estop engaged'})))
    trainer_status = ros.publisher(String, 'trainer/status', COMMAND_QOS)
    # A volatile estop publisher (as `ros2 topic pub` makes) must reach the console too.
    estop = ros.publisher(Bool, 'estop', COMMAND_QOS)
    assert ros.wait_for_subscribers(trainer_status) and ros.wait_for_subscribers(estop)
    trainer_status.publish(String(data=json.dumps(
        {'state': 'training', 'round': 1, 'progress': 0.4, 'demos_available': 5,
         'demos_needed': 5, 'message': 'round 1 started on 5 demos'})))
    estop.publish(Bool(data=True))

    def complete():
        snapshot = console.console_state.snapshot()
        return all(snapshot[key] is not None for key in (
            'recorder', 'policy', 'trainer', 'checkpoint', 'evaluation', 'mux', 'estop'))

    assert wait_for(complete, 5.0), console.console_state.snapshot()
    state = console.console_state.snapshot()
    assert (state['recorder']['state'], state['recorder']['frames']) == ('recording', 75)
    assert (state['policy']['state'], state['policy']['reason']) == ('idle', 'estop engaged')
    assert state['checkpoint'] == {'version': 2, 'round': 1, 'demos_used': 5,
                                   'metrics': {'train_loss': 0.2},
                                   'received_s': state['checkpoint']['received_s']}
    assert state['evaluation']['success'] == {'drawer-open': 0.9, 'reach': 0.2}
    assert (state['trainer']['state'], state['trainer']['progress']) == ('training', 0.4)
    assert state['mux']['source'] == 'none' and state['estop'] is True
    assert has_event(console, 'ESTOP engaged')
    assert has_event(console, 'recording drawer-open')


def test_malformed_payload_over_dds_is_an_error_event(ros, wait_for):
    console = start_console(ros, max_events=10)
    publisher = ros.publisher(String, 'recorder/status', LATCHED_QOS)
    assert ros.wait_for_subscribers(publisher)
    publisher.publish(String(data='{"state": "recording", "frames": '))
    assert wait_for(lambda: has_event(console, 'malformed recorder/status: not JSON'), 5.0)
    publisher.publish(String(data=json.dumps({'state': 'saved', 'task': 'reach',
                                              'duration_s': 3.0, 'frames': 90})))
    assert wait_for(lambda: has_event(console, 'episode saved: reach, 3.0 s, 90 frames'), 5.0)
    assert console.console_state.snapshot()['recorder']['state'] == 'saved'


def test_keys_call_the_trigger_services_and_show_the_answers(ros, wait_for):
    answers = {'recorder/start': (True, 'recording drawer-open'),
               'recorder/stop': (True, 'saved episode 6'),
               'recorder/discard': (False, 'nothing to discard'),
               'operator/skip': (True, 'skipped drawer-open')}
    servers = FakeTriggerServers(ros, answers)
    console = start_console(ros, max_events=20)
    assert wait_for(lambda: all(console.service_ready(name) for name in answers), 5.0)
    for key, service in KEY_SERVICES.items():
        assert console.handle_key(key) is True
        assert wait_for(lambda service=service: servers.count(service) == 1, 5.0), service
    assert wait_for(lambda: has_event(console, 'operator/skip: ok: skipped drawer-open'), 5.0)
    texts = event_texts(console)
    assert 'recorder/start: ok: recording drawer-open' in texts
    assert 'recorder/stop: ok: saved episode 6' in texts
    assert 'recorder/discard: refused: nothing to discard' in texts
    assert console.handle_key('R') is True  # upper case works too
    assert wait_for(lambda: servers.count('recorder/start') == 2, 5.0)


def test_mark_keys_send_the_verdict_and_the_typed_note_to_the_recorder(ros, wait_for):
    """Key t types a note (Enter keeps it); y/n send it on recorder/mark, call mark_success."""
    verdicts = []

    def mark_success(request, response):
        verdicts.append(request.data)
        response.success, response.message = True, 'episode 4 marked'
        return response

    ros.node.create_service(SetBool, 'recorder/mark_success', mark_success)
    marks = ros.collect(String, 'recorder/mark', COMMAND_QOS)
    console = start_console(ros, max_events=20)
    assert wait_for(lambda: console.service_ready('recorder/mark_success'), 5.0)
    assert wait_for(lambda: console.count_subscribers('recorder/mark') >= 1, 5.0)
    assert console.handle_key('y') is True  # no note: only the service
    assert wait_for(lambda: verdicts == [True], 5.0)
    assert wait_for(lambda: has_event(console, 'recorder/mark_success: ok: episode 4 marked'),
                    5.0)
    for key in 'tcube fell!\x7f\r':  # q, y and n typed into the note are text, not commands
        assert console.handle_key(key) is True
    assert console.console_state.snapshot()['note'] == {'text': 'cube fell', 'editing': False}
    assert console.handle_key('n') is True
    assert wait_for(lambda: verdicts == [True, False], 5.0)
    assert wait_for(lambda: len(marks) == 1, 5.0)
    assert decode_episode_mark(marks.last.data) == EpisodeMark(success=False, note='cube fell')
    assert console.console_state.snapshot()['note'] == {'text': '', 'editing': False}
    for key in 'tquit\x1b':  # Esc drops the note; q inside it did not quit
        console.handle_key(key)
    assert not console.quit_requested.is_set()
    console.handle_key('y')
    assert wait_for(lambda: verdicts == [True, False, True], 5.0)
    assert len(marks) == 1 and has_event(console, 'note dropped')


def test_missing_and_silent_services_are_reported(ros, wait_for):
    console = start_console(ros, service_timeout_s=0.3)
    console.handle_key('k')
    assert has_event(console, 'operator/skip: service not available')
    # A server whose node nobody spins is discovered but never answers.
    silent = rclpy.create_node('silent_recorder', context=ros.context)
    try:
        silent.create_service(Trigger, 'recorder/start', lambda request, response: response)
        assert wait_for(lambda: console.service_ready('recorder/start'), 5.0)
        console.handle_key('r')
        assert wait_for(lambda: has_event(console, 'recorder/start: no answer within 0.3 s'),
                        5.0)
        errors = [e for e in console.console_state.snapshot()['events'] if e['level'] == 'error']
        assert len(errors) == 2
    finally:
        silent.destroy_node()


def test_estop_key_toggles_a_latched_estop(ros, wait_for):
    received = ros.collect(Bool, 'estop', LATCHED_QOS)
    console = start_console(ros)
    assert wait_for(lambda: console.count_subscribers('estop') >= 3, 5.0)
    assert console.handle_key('e') is True  # unknown so far: engage
    assert wait_for(lambda: len(received) == 1, 5.0)
    assert received.last.data is True
    assert wait_for(lambda: console.console_state.estop is True, 5.0)
    console.handle_key('e')
    assert wait_for(lambda: len(received) == 2, 5.0)
    assert received.last.data is False
    assert wait_for(lambda: console.console_state.estop is False, 5.0)
    # Latched: a subscriber that joins now still gets the newest value.
    late = ros.collect(Bool, 'estop', LATCHED_QOS)
    assert wait_for(lambda: len(late) == 1, 5.0)
    assert late.last.data is False
    assert has_event(console, 'estop engage sent') and has_event(console, 'estop released')


def banner(console):
    return render_text(console.console_state.snapshot(), width=140, now_s=0.0).splitlines()[1]


def test_estop_banner_shows_what_the_command_mux_confirms(ros, wait_for):
    console = start_console(ros, max_events=20)
    # Only the console and the test's helper node: no mux, so an estop is not confirmed.
    assert wait_for(lambda: (console.console_state.snapshot()['graph'] or {}).get('nodes'), 5.0)
    assert 'COMMAND MUX NOT RUNNING' in banner(console)
    assert wait_for(lambda: console.count_subscribers('estop') >= 2, 5.0)
    console.handle_key('e')
    assert wait_for(lambda: console.console_state.estop is True, 5.0)
    assert 'COMMAND MUX NOT RUNNING' in banner(console) and 'ENGAGED' not in banner(console)
    ros.add_node(CommandMuxNode(context=ros.context))
    assert wait_for(lambda: 'ESTOP ENGAGED' in banner(console), 10.0), banner(console)
    assert 'confirmed by the command mux' in banner(console)
    assert has_event(console, 'command mux running')


def test_console_alone_says_no_nodes_found(process_groups):
    """af-console --once with nothing else in the graph (discovery off: nobody can be seen)."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='OFF')
    result = process_groups.run(
        [sys.executable, '-m', 'active_finetune.nodes.operator_console_node', '--once',
         '--ros-args', '-p', 'once_wait_s:=2.5'], timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert 'NO NODES FOUND' in result.stdout, result.stdout
    assert 'ESTOP ENGAGED' not in result.stdout


def test_quit_and_unknown_keys(ros):
    console = start_console(ros)
    assert console.handle_key('x') is False
    assert not console.quit_requested.is_set()
    assert console.handle_key('q') is True
    assert console.quit_requested.is_set()


def test_once_prints_a_snapshot_and_exits(ros, process_groups):
    publisher = ros.publisher(String, 'operator/next_task', LATCHED_QOS)
    publisher.publish(String(data=json.dumps(NEXT_TASK)))
    env = dict(os.environ, COLUMNS='100')
    result = process_groups.run(
        [sys.executable, '-m', 'active_finetune.nodes.operator_console_node', '--once',
         '--ros-args', '-p', 'once_wait_s:=8.0'], timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert 'DEMONSTRATE' in result.stdout and 'drawer-open' in result.stdout
    assert '5 / 20 demos used' in result.stdout
    assert 'display only: one snapshot (--once)' in result.stdout


def test_key_reader_reads_keys_and_restores_the_terminal():
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        keys = []
        with KeyReader(keys.append, fd=slave, poll_s=0.02):
            assert not termios.tcgetattr(slave)[3] & termios.ICANON  # cbreak: no line buffering
            os.write(master, b'rk')
            deadline = time.monotonic() + 5.0
            while len(keys) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert keys == ['r', 'k']
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def _read_until(fd, needle, timeout_s):
    output = b''
    deadline = time.monotonic() + timeout_s
    while needle not in output and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            output += os.read(fd, 65536)
    return output


def test_console_in_a_terminal_sends_estop_and_restores_the_terminal_on_sigterm(
        ros, wait_for, process_groups):
    received = ros.collect(Bool, 'estop', LATCHED_QOS)
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    env = dict(os.environ, COLUMNS='100', LINES='50', TERM='xterm')
    process = process_groups.popen(
        [sys.executable, '-m', 'active_finetune.nodes.operator_console_node'],
        stdin=slave, stdout=slave, stderr=slave, env=env)
    try:
        assert b'estop on/off' in _read_until(master, b'estop on/off', 30.0)
        assert not termios.tcgetattr(slave)[3] & termios.ICANON
        os.write(master, b'e')
        assert wait_for(lambda: len(received) == 1, 10.0)
        assert received.last.data is True
        # No command mux runs here: the banner says so, it does not claim ESTOP ENGAGED.
        shown = _read_until(master, b'COMMAND MUX NOT RUNNING', 10.0)
        assert b'COMMAND MUX NOT RUNNING' in shown and b'ESTOP ENGAGED' not in shown
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert termios.tcgetattr(slave) == before
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        os.close(master)
        os.close(slave)
