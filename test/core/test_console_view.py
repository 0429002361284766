"""Operator console view: payload checks, events, and the rendered text (no ROS)."""

import json
import math
import os
from pathlib import Path
import subprocess
import sys
import time

from active_finetune.console_view import ConsoleState, OperatorConsoleConfig, parse_payload
from active_finetune.console_view import PayloadError, render_text
import pytest

SNAPSHOT_PATH = Path(__file__).resolve().parents[2] / 'docs' / 'console_snapshot.txt'
SNAPSHOT_RECORD_PATH = SNAPSHOT_PATH.with_suffix('.json')

TASKS = ['reach', 'push', 'pick-place', 'door-open', 'drawer-open', 'drawer-close',
         'button-press-topdown', 'peg-insert-side', 'window-open', 'window-close']


class FakeClock:
    """Wall and monotonic clocks that advance only when told."""

    def __init__(self):
        self.wall_s = 1764072000.0  # 2025-11-25 12:00:00 UTC
        self.monotonic = 100.0

    def wall(self):
        return self.wall_s

    def mono(self):
        return self.monotonic

    def advance(self, seconds):
        self.wall_s += seconds
        self.monotonic += seconds


def make_state(clock=None, max_events=5):
    clock = clock or FakeClock()
    return ConsoleState(max_events=max_events, clock_s=clock.wall, monotonic_s=clock.mono)


def next_task_payload(**overrides):
    payload = {
        'request_id': 13, 'round': 2, 'task': 'pick-place',
        'tasks_this_round': ['pick-place', 'peg-insert-side', 'reach'], 'strategy': 'amf',
        'scores': dict(zip(TASKS, [0.412, 0.388, 0.951, 0.020, 0.015, 0.011, 0.050, 0.733,
                                   0.008, 0.004])),
        'terms': {'pick-place': {'reach': 0.1}},
        'demo_counts': dict(zip(TASKS, [2, 3, 1, 0, 0, 0, 1, 2, 1, 2])),
        'demos_used': 12, 'budget': 30, 'budget_remaining': 18, 'policy_version': 2,
        'skipped': [], 'done': False,
        'reason': 'amf selection: largest information gain about the expert on the target tasks'}
    payload.update(overrides)
    return json.dumps(payload)


def recorder_payload(state='recording', task='pick-place', duration_s=8.4, frames=252, dropped=0):
    return json.dumps({'state': state, 'task': task, 'duration_s': duration_s, 'frames': frames,
                       'dropped': dropped})


def lines_with(text, needle):
    return [line for line in text.splitlines() if needle in line]


def task_table(text):
    """Return the rendered text from the tasks table on."""
    return text[text.index('tasks ('):]


def test_render_shows_chosen_task_bars_budget_recording_and_estop():
    clock = FakeClock()
    state = make_state(clock)
    state.on_next_task(next_task_payload())
    state.on_recorder_status(recorder_payload(duration_s=8.4, frames=252))
    state.on_estop(True)
    clock.advance(0.5)
    text = render_text(state.snapshot(), width=100, now_s=clock.monotonic)
    assert 'DEMONSTRATE' in text and 'pick-place' in text
    assert 'largest information gain' in text
    assert '12 / 30 demos used' in text and '18 remaining' in text
    assert 'round 2' in text
    assert 'RECORDING' in text
    assert '8.9 s' in text  # 8.4 s reported + 0.5 s since the message arrived
    assert '252 frames' in text
    # Sent, but no mux/status confirms it: not shown as engaged.
    assert 'ESTOP SENT, NOT CONFIRMED: no mux/status yet' in text
    assert 'ESTOP ENGAGED' not in text
    state.on_mux_status(json.dumps({'source': 'none', 'estop': True, 'code': 'estop',
                                    'reason': 'estop engaged'}))
    text = render_text(state.snapshot(), width=100, now_s=clock.monotonic)
    assert 'ESTOP ENGAGED: robot commands held at zero (confirmed by the command mux)' in text
    chosen = lines_with(text, ' pick-place ')
    chosen_rows = [line for line in chosen if '0.951' in line]
    assert len(chosen_rows) == 1 and '>' in chosen_rows[0] and '\u2588' in chosen_rows[0]
    # Bars are proportional: the best task has the longest bar, window-close (0.004) almost none.
    best = chosen_rows[0].count('\u2588')
    push = lines_with(text, '0.388')[0].count('\u2588')
    assert best > push > 0
    assert lines_with(text, '0.004')[0].count('\u2588') == 0


def recording_status(**fields):
    payload = {'state': 'recording', 'task': 'push', 'duration_s': 3.0, 'frames': 90,
               'dropped': 0}
    payload.update(fields)
    return json.dumps(payload)


def test_recorder_panel_says_what_a_stop_would_save_and_who_decides():
    state = make_state()
    state.set_input_mode(True, '')
    state.on_recorder_status(recording_status(marked=None, success_if_stopped=True,
                                              success_source='unmarked'))
    text = render_text(state.snapshot(), width=100, now_s=0.0)
    assert 'UNMARKED: stop saves it as SUCCESS' in text
    assert '(unmarked_success); y/n to mark it' in text
    assert ' y  mark success' in text and ' n  mark failure' in text and ' t  type a note' in text
    state.on_recorder_status(recording_status(marked=False, note='cube slipped',
                                              success_if_stopped=False,
                                              success_source='operator'))
    text = render_text(state.snapshot(), width=100, now_s=0.0)
    assert 'marked FAILURE by the operator' in text and 'note: cube slipped' in text
    assert 'UNMARKED' not in text
    events = [e['text'] for e in state.snapshot()['events']]
    assert 'episode marked failure (recorder confirms): cube slipped' in events
    state.on_recorder_status(recording_status(success_if_stopped=True, success_source='sim'))
    text = render_text(state.snapshot(), width=100, now_s=0.0)
    assert 'stop saves it as SUCCESS (sim/success)' in text
    # An older recorder that does not report its verdict is not shown as unmarked.
    state.on_recorder_status(recording_status())
    text = render_text(state.snapshot(), width=100, now_s=0.0)
    assert 'no verdict reported; y/n to mark it' in text and 'UNMARKED' not in text
    state.on_recorder_status(json.dumps({'state': 'saved', 'task': 'push'}))
    text = render_text(state.snapshot(), width=100, now_s=0.0)
    assert 'stop saves' not in text and 'by the operator' not in text


def test_note_typing_keeps_erases_and_drops():
    state = make_state()
    state.set_input_mode(True, '')
    assert not state.editing_note
    state.begin_note()
    for key in 'slow grasp!\x7f\x01':  # Backspace erases, other control keys are ignored
        state.note_key(key)
    assert state.snapshot()['note'] == {'text': 'slow grasp', 'editing': True}
    text = render_text(state.snapshot(), width=100, now_s=0.0)
    assert 'note: slow grasp_' in text and 'Enter: keep it for the next y/n mark' in text
    state.note_key('\r')
    assert not state.editing_note
    text = render_text(state.snapshot(), width=100, now_s=0.0)
    assert 'note for the next mark: slow grasp' in text and ' r  record' in text
    assert state.take_note() == 'slow grasp' and state.take_note() == ''
    state.begin_note()
    state.note_key('x')
    state.note_key('\x1b')
    assert state.snapshot()['note'] == {'text': '', 'editing': False}
    events = [e['text'] for e in state.snapshot()['events']]
    assert events[-2:] == ['note kept for the next mark: slow grasp', 'note dropped']
    state.begin_note()
    for _ in range(300):
        state.note_key('a')
    assert len(state.take_note()) == 200 and not state.editing_note


def test_tasks_are_sorted_by_score_and_show_demos_and_success():
    state = make_state()
    state.on_next_task(next_task_payload())
    state.on_trainer_evaluation(json.dumps({'version': 2, 'success': {'pick-place': 0.25,
                                                                      'reach': 1.0}}))
    text = task_table(render_text(state.snapshot(), width=100, now_s=0.0))
    order = sorted(TASKS, key=lambda t: -json.loads(next_task_payload())['scores'][t])
    positions = [text.index(f' {task} ') for task in order]
    assert positions == sorted(positions)
    assert 'success v2' in text.splitlines()[1]
    pick_row = [line for line in lines_with(text, ' pick-place ') if '0.951' in line][0]
    assert pick_row.split()[-3:-1] == ['1', '25%']
    reach_row = [line for line in lines_with(text, ' reach ') if '0.412' in line][0]
    assert reach_row.split()[-3:-1] == ['2', '100%']
    door_row = lines_with(text, ' door-open ')[0]
    assert door_row.split()[-3:-1] == ['0', '-']


def test_narrow_console_stacks_everything_in_one_column():
    state = make_state()
    state.on_next_task(next_task_payload())
    state.on_recorder_status(recorder_payload(state='idle'))
    text = render_text(state.snapshot(), width=70, now_s=0.0)
    assert max(len(line) for line in text.splitlines()) <= 70
    assert text.index('next task to demonstrate') < text.index('recorder') < text.index('tasks (')
    assert 'pick-place' in text and '12 / 30 demos used' in text


def test_empty_state_renders_waiting_messages():
    text = render_text(make_state().snapshot(), width=100, now_s=0.0)
    assert 'waiting for operator/next_task' in text
    assert 'no recorder/status yet' in text
    assert 'estop: no mux/status yet, state unknown' in text
    assert 'no events yet' in text
    assert 'display only: keys not read yet' in text


def banner(state):
    return render_text(state.snapshot(), width=140, now_s=0.0).splitlines()[1]


def test_estop_banner_trusts_only_the_command_mux_and_says_when_nothing_runs():
    state = ConsoleState()
    state.on_estop(True)  # the console's own publish comes back on the estop topic
    assert 'ESTOP SENT, NOT CONFIRMED: no mux/status yet' in banner(state)
    state.on_graph([], mux_running=False)
    assert 'NO NODES FOUND' in banner(state) and 'estop engage sent' in banner(state)
    assert 'no nodes found' in state.snapshot()['events'][-1]['text']
    state.on_graph(['policy', 'trainer'], mux_running=False)
    assert 'COMMAND MUX NOT RUNNING: the estop is not confirmed' in banner(state)
    state.on_graph(['command_mux', 'policy', 'trainer'], mux_running=True)
    assert 'ESTOP SENT, NOT CONFIRMED' in banner(state)
    state.on_mux_status(json.dumps({'source': 'none', 'estop': True, 'code': 'estop',
                                    'reason': 'estop engaged'}))
    assert 'ESTOP ENGAGED' in banner(state) and 'confirmed by the command mux' in banner(state)
    state.on_estop(False)
    assert 'command mux still latched' in banner(state)
    state.on_mux_status(json.dumps({'source': 'none', 'estop': False, 'code': 'ok',
                                    'reason': ''}))
    assert 'estop released' in banner(state) and 'ESTOP' not in banner(state)
    # The mux dies: its last (latched) status is no confirmation any more.
    state.on_mux_status(json.dumps({'source': 'none', 'estop': True, 'code': 'estop',
                                    'reason': 'estop engaged'}))
    state.on_graph(['policy', 'trainer'], mux_running=False)
    assert 'COMMAND MUX NOT RUNNING' in banner(state) and 'ENGAGED' not in banner(state)
    events = [e['text'] for e in state.snapshot()['events']]
    assert events[-1] == 'command mux not running: nothing confirms the estop'


def test_footer_shows_keys_or_why_it_is_display_only():
    state = make_state()
    state.set_input_mode(True, '')
    text = render_text(state.snapshot(), width=100, now_s=0.0)
    assert ' r  record' in text and ' e  estop on/off' in text and ' q  quit' in text
    state.set_input_mode(False, 'stdin is not a terminal, keys are off')
    text = render_text(state.snapshot(), width=100, now_s=0.0)
    assert 'display only: stdin is not a terminal, keys are off' in text
    assert ' r  record' not in text


def test_budget_spent_and_no_task_states():
    state = make_state()
    state.on_next_task(next_task_payload(task='', done=True, scores={}, budget_remaining=0,
                                         demos_used=30, reason='budget of 30 demos spent'))
    text = render_text(state.snapshot(), width=100, now_s=0.0)
    assert 'BUDGET SPENT' in text and '30 / 30 demos used, 0 remaining' in text
    assert state.snapshot()['events'][-1]['text'] == 'budget spent: budget of 30 demos spent'
    state = make_state()
    state.on_next_task(next_task_payload(task='', scores={}, reason='waiting for the checkpoint'))
    text = render_text(state.snapshot(), width=100, now_s=0.0)
    assert 'no task right now' in text and 'waiting for the checkpoint' in text
    assert state.snapshot()['events'][-1]['level'] == 'warning'


def test_dropped_frames_and_task_mismatch_warnings():
    state = make_state()
    state.on_next_task(next_task_payload())
    state.on_recorder_status(recorder_payload(task='reach', dropped=4))
    text = render_text(state.snapshot(), width=100, now_s=100.0)
    assert 'WARNING: 4 frames dropped' in text
    assert 'recording reach, but pick-place is suggested' in text


def test_policy_zero_output_shows_reason_and_swap_events():
    clock = FakeClock()
    state = make_state(clock, max_events=10)
    state.on_policy_status(json.dumps({'state': 'running', 'task': 'reach', 'version': 1}))
    state.on_policy_status(json.dumps({'state': 'stale', 'reason': 'stale image: 0.40 s old',
                                       'task': 'reach', 'version': 1}))
    text = render_text(state.snapshot(), width=100, now_s=0.0)
    assert 'ZERO OUTPUT (stale)' in text and 'stale image: 0.40 s old' in text
    state.on_policy_status(json.dumps({'state': 'running', 'task': 'reach', 'version': 2}))
    events = [(e['level'], e['text']) for e in state.snapshot()['events']]
    assert events == [
        ('info', 'policy runs checkpoint version 1'),
        ('error', 'policy output zero (stale): stale image: 0.40 s old'),
        ('info', 'policy swapped to checkpoint version 2'),
        ('info', 'policy output back to normal')]
    assert 'v2 ok' in render_text(state.snapshot(), width=100, now_s=0.0)


def test_events_for_suggestions_episodes_checkpoints_estop_keep_the_newest():
    clock = FakeClock()
    state = make_state(clock, max_events=5)
    state.on_next_task(next_task_payload())
    state.on_next_task(next_task_payload())  # same request: no new event
    state.on_recorder_status(recorder_payload(state='recording'))
    state.on_recorder_status(recorder_payload(state='recording', duration_s=9.0))  # no event
    state.on_recorder_status(recorder_payload(state='saved', duration_s=12.5, frames=375))
    state.on_next_task(next_task_payload(task='reach', request_id=14, reason='amf selection'))
    state.on_trainer_checkpoint(json.dumps({'version': 3, 'sha256': 'cd' * 32, 'round': 2,
                                            'demos_used': 18}))
    state.on_estop(True)
    state.on_estop(True)  # repeated (two subscriptions): no new event
    state.on_recorder_status(recorder_payload(state='discarded', task='reach'))
    events = state.snapshot()['events']
    assert [e['text'] for e in events] == [
        'episode saved: pick-place, 12.5 s, 375 frames',
        'next task: reach (amf selection)',
        'checkpoint version 3 announced (round 2, 18 demos)',
        'ESTOP engaged: robot commands held at zero',
        'episode discarded: reach, 8.4 s, 252 frames']
    assert [e['level'] for e in events] == ['info', 'info', 'info', 'error', 'warning']
    state.on_estop(False)
    assert state.snapshot()['events'][-1]['text'] == 'estop released'
    assert state.estop is False


@pytest.mark.parametrize('handler, text, message', [
    ('on_next_task', '{not json', 'operator/next_task: not JSON'),
    ('on_next_task', '[1, 2]', 'expected a JSON object, got list'),
    ('on_next_task', json.dumps({'budget': 3}), "missing field 'task'"),
    ('on_next_task', next_task_payload(scores='high'), "'scores' must be an object of numbers"),
    ('on_next_task', next_task_payload(scores={'reach': 'high'}),
     "'scores.reach' must be a number, got 'high'"),
    ('on_next_task', next_task_payload(budget=3.5), "'budget' must be an integer, got 3.5"),
    ('on_next_task', next_task_payload(skipped='reach'), "'skipped' must be a list of strings"),
    ('on_recorder_status', json.dumps({'state': None}), "'state' must be a string, not null"),
    ('on_recorder_status', json.dumps({'task': 'reach'}),
     "recorder/status: missing field 'state'"),
    ('on_recorder_status', json.dumps({'state': 'recording', 'frames': 'many'}),
     "'frames' must be an integer, got 'many'"),
    ('on_recorder_status', json.dumps({'state': 'dancing'}), "'state' must be one of idle"),
    ('on_policy_status', '', 'policy/status: not JSON'),
    ('on_policy_status', json.dumps({'state': 'running', 'version': '2'}),
     "'version' must be an integer, got '2'"),
    ('on_policy_status', json.dumps({'state': 'ok'}), "'state' must be one of running"),
    ('on_trainer_status', json.dumps({'state': 'training', 'progress': 'half'}),
     "'progress' must be a number, got 'half'"),
    ('on_trainer_checkpoint', json.dumps({'version': 2, 'sha256': 'ab' * 32, 'metrics': [1]}),
     "'metrics' must be an object"),
    ('on_trainer_checkpoint', json.dumps({'path': '/x'}), "missing field 'version'"),
    ('on_trainer_evaluation', json.dumps({'version': 1, 'success': {'reach': True}}),
     "'success.reach' must be a number, got True"),
    ('on_mux_status', json.dumps({'source': 3}), "'source' must be a string, got 3"),
])
def test_malformed_payloads_become_error_events_and_keep_the_previous_value(
        handler, text, message):
    state = make_state()
    state.on_next_task(next_task_payload())
    before = state.snapshot()
    getattr(state, handler)(text)
    after = state.snapshot()
    event = after['events'][-1]
    assert event['level'] == 'error'
    assert event['text'].startswith('malformed ') and message in event['text']
    for key in ('next_task', 'recorder', 'policy', 'trainer', 'checkpoint', 'evaluation', 'mux'):
        assert after[key] == before[key]
    assert 'malformed' in render_text(after, width=100, now_s=0.0)


def test_non_finite_scores_render_without_a_bar():
    state = make_state()
    state.on_next_task(next_task_payload(scores={'reach': float('nan'), 'push': 0.5,
                                                 'pick-place': float('inf')}))
    assert math.isnan(state.snapshot()['next_task']['scores']['reach'])
    text = task_table(render_text(state.snapshot(), width=100, now_s=0.0))
    assert lines_with(text, ' push ')[0].count('\u2588') > 0
    assert '\u2588' not in lines_with(text, ' reach ')[0]
    assert text.index(' push ') < text.index(' reach ')


def test_checkpoint_keeps_only_the_summary_not_the_weights():
    state = make_state()
    state.on_trainer_checkpoint(json.dumps({
        'path': '/c', 'sha256': 'f' * 64, 'version': 4, 'round': 3, 'demos_used': 24,
        'step': 100, 'metrics': {'train_loss': 0.5, 'note': 'text', 'nested': {'a': 1}},
        'config': {'tasks': TASKS}, 'weights_b64': 'QUJD' * 10000}))
    checkpoint = state.snapshot()['checkpoint']
    assert set(checkpoint) == {'version', 'round', 'demos_used', 'metrics', 'received_s'}
    assert checkpoint['metrics'] == {'train_loss': 0.5}
    assert 'checkpoint v4: round 3, 24 demos; train_loss 0.5' in render_text(
        state.snapshot(), width=80, now_s=0.0)


def test_trainer_error_and_mux_estop_are_shown():
    state = make_state()
    state.on_trainer_status(json.dumps({'state': 'error', 'round': 1, 'message': 'CUDA OOM'}))
    state.on_mux_status(json.dumps({'source': 'none', 'estop': True, 'code': 'estop',
                                    'reason': 'estop engaged'}))
    state.on_estop(False)
    text = render_text(state.snapshot(), width=100, now_s=0.0)
    assert 'trainer error' in text and 'CUDA OOM' in text
    assert 'ESTOP ENGAGED' in text and 'command mux still latched' in text
    assert 'trainer error: CUDA OOM' in [e['text'] for e in state.snapshot()['events']]


def test_parse_payload_and_add_event_validate():
    assert parse_payload('mux/status', '{"source": "policy"}') == {
        'source': 'policy', 'estop': False, 'code': '', 'reason': ''}
    with pytest.raises(PayloadError, match="mux/status: field 'estop' must be a boolean"):
        parse_payload('mux/status', '{"source": "policy", "estop": null}')
    with pytest.raises(ValueError, match="'fatal'"):
        make_state().add_event('x', level='fatal')
    with pytest.raises(ValueError, match='max_events must be >= 1, got 0'):
        ConsoleState(max_events=0)


@pytest.mark.parametrize('overrides, message', [
    ({'refresh_hz': 0.0}, 'refresh_hz must be a number in \\[0.5, 30.0\\], got 0.0'),
    ({'service_timeout_s': 100.0}, 'service_timeout_s .* got 100.0'),
    ({'max_events': 0}, 'max_events .* got 0'),
    ({'once': 'yes'}, "once must be a bool, got 'yes'"),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        OperatorConsoleConfig(**overrides)
    assert OperatorConsoleConfig().refresh_hz == 4.0


def test_console_view_imports_no_ros():
    code = ('import sys, active_finetune.console_view; '
            'bad = [m for m in sys.modules if m.startswith("rclpy") or m.endswith("_msgs")]; '
            'print(bad); sys.exit(1 if bad else 0)')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def utc():
    """Render event times in UTC so the snapshot does not depend on the machine's zone."""
    saved = os.environ.get('TZ')
    os.environ['TZ'] = 'UTC'
    time.tzset()
    yield
    if saved is None:
        del os.environ['TZ']
    else:
        os.environ['TZ'] = saved
    time.tzset()


def test_docs_snapshot_is_the_console_of_a_real_run(utc):
    """
    docs/console_snapshot.txt is what the console made of the payloads a real sim run sent.

    scripts/console_snapshot.py wrote it with docs/console_snapshot.json: the console's state
    and the newest payload of each topic as the nodes sent it.  The text must be the rendering
    of that state, every payload must be valid, and feeding those payloads to a fresh console
    must give the same state (so nothing in the snapshot is made up).
    """
    record = json.loads(SNAPSHOT_RECORD_PATH.read_text())
    state = record['state']
    text = render_text(state, width=record['width'], now_s=record['now_s'])
    assert SNAPSHOT_PATH.read_text() == text, (
        'docs/console_snapshot.txt is not the rendering of docs/console_snapshot.json: rerun '
        'scripts/console_snapshot.py')
    received = record['payloads']
    assert set(received) >= {'operator/next_task', 'recorder/status', 'policy/status',
                             'trainer/status', 'trainer/checkpoint', 'trainer/evaluation',
                             'mux/status'}
    fresh = make_state(max_events=50)
    handlers = {'operator/next_task': fresh.on_next_task,
                'recorder/status': fresh.on_recorder_status,
                'policy/status': fresh.on_policy_status, 'trainer/status': fresh.on_trainer_status,
                'trainer/checkpoint': fresh.on_trainer_checkpoint,
                'trainer/evaluation': fresh.on_trainer_evaluation,
                'mux/status': fresh.on_mux_status}
    keys = {'operator/next_task': 'next_task', 'recorder/status': 'recorder',
            'policy/status': 'policy', 'trainer/status': 'trainer',
            'trainer/checkpoint': 'checkpoint', 'trainer/evaluation': 'evaluation',
            'mux/status': 'mux'}
    for topic, payload in received.items():
        parse_payload(topic, payload)  # raises for an invalid payload
        handlers[topic](payload)
    rebuilt = fresh.snapshot()
    assert not [e for e in rebuilt['events'] if 'malformed' in e['text']]
    for topic, key in keys.items():
        assert {k: v for k, v in rebuilt[key].items() if k != 'received_s'} == \
            {k: v for k, v in state[key].items() if k != 'received_s'}, topic
    # The trainer's own metrics and progress are shown, not made-up ones.
    metrics = json.loads(received['trainer/checkpoint'])['metrics']
    one_column = render_text(state, width=90, now_s=record['now_s'])
    flat = ' '.join(one_column.replace('\u2502', ' ').split())
    assert f'val_mse {metrics["val_mse"]:.4g} (start {metrics["val_mse_start"]:.4g})' in flat
    assert f'loss {metrics["loss"]:.4g}' in flat
    trainer = json.loads(received['trainer/status'])
    assert trainer['state'] == 'training' and 0 < trainer['progress'] < 1
    assert f'{trainer["progress"]:.0%} round {trainer["round"]}' in text


JUNK_PAYLOADS = ['null', '0', '"text"', '{}', '{"state": {}}', '{"state": "x", "task": 5}',
                 '{"task": "", "budget": -1, "demos_used": 99, '
                 '"scores": {"a": 1e308, "b": -1e308}}',
                 '{"version": 1e400, "success": {"a": NaN}}', '{"source": "", "estop": "yes"}',
                 '\udcff', '{"state": "recording", "duration_s": -5, "frames": 10000000000000}']


@pytest.mark.parametrize('text', JUNK_PAYLOADS)
def test_junk_never_raises_and_always_renders(text):
    state = make_state(max_events=50)
    for handler in ('on_next_task', 'on_recorder_status', 'on_policy_status', 'on_trainer_status',
                    'on_trainer_checkpoint', 'on_trainer_evaluation', 'on_mux_status'):
        getattr(state, handler)(text)
    snapshot = state.snapshot()
    assert render_text(snapshot, width=100, now_s=200.0).count('\n') > 10
    assert render_text(snapshot, width=60, now_s=200.0).count('\n') > 10


def test_budget_remaining_is_derived_when_absent():
    state = make_state()
    payload = json.loads(next_task_payload(demos_used=7, budget=10))
    del payload['budget_remaining']
    state.on_next_task(json.dumps(payload))
    assert state.snapshot()['next_task']['budget_remaining'] == 3
    assert '7 / 10 demos used, 3 remaining' in render_text(state.snapshot(), width=100, now_s=0.0)
