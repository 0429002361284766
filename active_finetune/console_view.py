"""
Operator console, ROS-free part: its state, fed from topic payloads, and its rich rendering.

The operator console (``af-console``, :mod:`active_finetune.nodes.operator_console_node`)
subscribes to the JSON status topics of the graph (docs/interfaces.md) and hands
each payload's text to a :class:`ConsoleState` method.  The state decodes every
payload with :mod:`active_finetune.payloads` (the loop's one contract), keeps
a copy of the newest one per topic, and turns changes into events (suggestion
changed, episode saved or discarded, checkpoint swapped, errors; the newest few
are kept).  A malformed payload never raises out of an
``on_*`` method: it becomes an error event and the previous value stays.

:meth:`ConsoleState.snapshot` returns a plain dict; :func:`render_console`
turns such a dict into a rich renderable (one column below
:data:`TWO_COLUMN_MIN_WIDTH` characters, two above), and :func:`render_text`
into plain text, for logs, tests and docs/console_snapshot.txt (written by
scripts/console_snapshot.py from a run of the sim graph).
"""

import collections
import copy
from dataclasses import dataclass, field
import io
import logging
import math
import threading
import time

from active_finetune import payloads
from active_finetune.payloads import PayloadError
from rich.bar import Bar
from rich.console import Console, Group
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

logger = logging.getLogger(__name__)

TWO_COLUMN_MIN_WIDTH = 96
"""Narrowest console (characters) that gets the two-column layout."""

SCORE_BAR_WIDTH = 16
"""Narrowest score bar, in characters (wider consoles get wider bars)."""

KEY_HELP = (('r', 'record'), ('s', 'stop'), ('d', 'discard'), ('y', 'mark success'),
            ('n', 'mark failure'), ('t', 'type a note'), ('k', 'skip task'),
            ('e', 'estop on/off'), ('q', 'quit'))
"""The console's keys and what they do, in display order."""

NOTE_MAX_CHARS = 200
"""Longest note the console takes for a mark (characters)."""

NOTE_END_KEYS = ('\r', '\n')
NOTE_CANCEL_KEY = '\x1b'
NOTE_ERASE_KEYS = ('\x7f', '\b')

POLICY_RUNNING = 'running'
"""The policy/status state in which the policy's actions reach the mux (else: zero output)."""

RECORDER_STYLES = {'recording': 'bold white on red', 'saved': 'bold green',
                   'discarded': 'bold yellow', 'idle': 'bold'}
"""Style of each recorder state; other states show in bold magenta."""


@dataclass
class OperatorConsoleConfig:
    """
    Settings of the operator console (ROS parameters of ``af-console``).

    :param refresh_hz: screen refresh rate
    :param service_timeout_s: how long a service call may take before it is reported as failed
    :param once: print one snapshot after ``once_wait_s`` and exit
    :param once_wait_s: time to collect the latched topics before the ``once`` snapshot
    :param max_events: how many recent events the console shows
    """

    refresh_hz: float = field(default=4.0, metadata={
        'description': 'screen refresh rate (Hz)', 'range': (0.5, 30.0)})
    service_timeout_s: float = field(default=2.0, metadata={
        'description': 'deadline of a recorder/operator service call before it is reported '
                       'as failed (s)', 'range': (0.1, 60.0)})
    once: bool = field(default=False, metadata={
        'description': 'print one snapshot after once_wait_s and exit (for logs and tests; '
                       'unitless flag)'})
    once_wait_s: float = field(default=2.0, metadata={
        'description': 'time spent collecting the latched topics before the once snapshot (s)',
        'range': (0.1, 60.0)})
    max_events: int = field(default=5, metadata={
        'description': 'number of recent events shown (count)', 'range': (1, 100)})

    def __post_init__(self):
        checks = (('refresh_hz', 0.5, 30.0), ('service_timeout_s', 0.1, 60.0),
                  ('once_wait_s', 0.1, 60.0), ('max_events', 1, 100))
        for name, low, high in checks:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not low <= value <= high:
                raise ValueError(f'{name} must be a number in [{low}, {high}], got {value!r}')
        if not isinstance(self.once, bool):
            raise ValueError(f'once must be a bool, got {self.once!r}')


def parse_payload(topic, text):
    """
    Decode a loop payload into a plain dict, through :mod:`active_finetune.payloads`.

    :param topic: topic name (one of :data:`active_finetune.payloads.PAYLOADS`)
    :param text: the String message's data
    :return: dict with every field of the payload (defaults filled in)
    :raises PayloadError: when the text is not a valid payload of that topic
    """
    return payloads.decode_dict(topic, text)


class ConsoleState:
    """
    Thread-safe state of the operator console, fed with topic payloads.

    The ``on_*`` methods take the raw text of a std_msgs/String (or a bool for
    estop); they never raise for a bad payload, they record it as an error event.

    :param max_events: how many recent events to keep
    :param clock_s: wall-clock time source for event time stamps (s since the epoch)
    :param monotonic_s: monotonic time source for arrival times (s)
    """

    def __init__(self, max_events=5, clock_s=time.time, monotonic_s=time.monotonic):
        if max_events < 1:
            raise ValueError(f'max_events must be >= 1, got {max_events!r}')
        self._clock_s = clock_s
        self._monotonic_s = monotonic_s
        self._lock = threading.Lock()
        self._events = collections.deque(maxlen=max_events)
        self._values = {'next_task': None, 'recorder': None, 'policy': None, 'trainer': None,
                        'checkpoint': None, 'evaluation': None, 'estop': None, 'mux': None,
                        'graph': None}
        self._keys_enabled = False
        self._input_note = 'keys not read yet'
        self._note = {'text': '', 'editing': False}
        self._payloads = {}

    def latest_payloads(self):
        """
        Give the newest valid payload text of every topic (what the state was built from).

        :return: dict topic -> JSON text
        """
        with self._lock:
            return dict(self._payloads)

    def begin_note(self):
        """Start typing a note for the next mark (keys go to the note until Enter or Esc)."""
        with self._lock:
            self._note['editing'] = True

    @property
    def editing_note(self):
        """:return: True while the operator types a note."""
        with self._lock:
            return self._note['editing']

    def note_key(self, key):
        """
        Feed one key to the note being typed.

        Enter keeps the note for the next mark (``y``/``n``), Esc drops it, Backspace erases a
        character; other control characters are ignored, printable ones are appended (up to
        :data:`NOTE_MAX_CHARS`).

        :param key: a one-character string
        """
        with self._lock:
            note = self._note
            if key in NOTE_END_KEYS:
                note['editing'] = False
                note['text'] = note['text'].strip()
            elif key == NOTE_CANCEL_KEY:
                note.update(text='', editing=False)
            elif key in NOTE_ERASE_KEYS:
                note['text'] = note['text'][:-1]
            elif key.isprintable() and len(note['text']) < NOTE_MAX_CHARS:
                note['text'] += key
            else:
                return
            finished, text = not note['editing'], note['text']
        if finished and key in NOTE_END_KEYS:
            self.add_event(f'note kept for the next mark: {text}' if text else 'empty note')
        elif key == NOTE_CANCEL_KEY:
            self.add_event('note dropped')

    def take_note(self):
        """
        Take the note typed for the next mark (and clear it; a note being typed is finished).

        :return: str ('' when none)
        """
        with self._lock:
            text = self._note['text'].strip()
            self._note.update(text='', editing=False)
        return text

    def set_input_mode(self, keys_enabled, note):
        """
        Say whether the console reads keys, and why not when it does not.

        :param keys_enabled: True when key presses are handled
        :param note: shown instead of the key help when keys are off ("stdin is not a terminal")
        """
        with self._lock:
            self._keys_enabled = bool(keys_enabled)
            self._input_note = str(note)

    def add_event(self, text, level='info'):
        """
        Record an event for the operator.

        :param text: what happened
        :param level: 'info', 'warning' or 'error'
        :raises ValueError: for another level
        """
        if level not in ('info', 'warning', 'error'):
            raise ValueError(f"level must be 'info', 'warning' or 'error', got {level!r}")
        with self._lock:
            self._events.append({'time_s': self._clock_s(), 'level': level, 'text': str(text)})
        logger.debug('console event (%s): %s', level, text)

    def _update(self, topic, key, text, parse):
        """Decode ``text``, keep what ``parse`` picks under ``key``; return (old, new) or None."""
        try:
            new = parse(parse_payload(topic, text))
        except PayloadError as error:
            self.add_event(f'malformed {error}', 'error')
            return None
        new['received_s'] = self._monotonic_s()
        with self._lock:
            old = self._values[key]
            self._values[key] = new
            self._payloads[topic] = text.decode() if isinstance(text, bytes) else str(text)
        return old, new

    def on_next_task(self, text):
        """
        Take an ``operator/next_task`` payload.

        :param text: JSON text
        """
        topic = 'operator/next_task'

        def parse(p):
            parsed = {k: p[k] for k in (
                'task', 'tasks_this_round', 'strategy', 'scores', 'demo_counts', 'demos_used',
                'budget', 'budget_remaining', 'round', 'policy_version', 'request_id', 'skipped',
                'done', 'reason')}
            if parsed['budget_remaining'] is None:
                parsed['budget_remaining'] = max(0, parsed['budget'] - parsed['demos_used'])
            return parsed

        change = self._update(topic, 'next_task', text, parse)
        if change is None:
            return
        old, new = change
        identity = ('task', 'request_id', 'done')
        if old is not None and all(old[k] == new[k] for k in identity):
            return
        if new['done']:
            self.add_event(f'budget spent: {new["reason"] or "no more demos needed"}')
        elif new['task']:
            self.add_event(f'next task: {new["task"]}'
                           + (f' ({new["reason"]})' if new['reason'] else ''))
        else:
            self.add_event(f'no task suggested: {new["reason"] or "no reason given"}', 'warning')

    def on_recorder_status(self, text):
        """
        Take a ``recorder/status`` payload.

        :param text: JSON text
        """
        topic = 'recorder/status'

        def parse(p):
            return {k: p[k] for k in ('state', 'task', 'duration_s', 'frames', 'dropped',
                                      'marked', 'note', 'success_if_stopped', 'success_source')}

        change = self._update(topic, 'recorder', text, parse)
        if change is None:
            return
        old, new = change
        if new['state'] == 'recording' and new['marked'] is not None and (
                old is None or (old['marked'], old['note']) != (new['marked'], new['note'])):
            self.add_event(f'episode marked {"success" if new["marked"] else "failure"} '
                           f'(recorder confirms)' + (f': {new["note"]}' if new['note'] else ''))
        if old is not None and old['state'] == new['state'] and old['task'] == new['task']:
            return
        summary = f'{new["task"] or "no task"}, {new["duration_s"]:.1f} s, {new["frames"]} frames'
        dropped = f', {new["dropped"]} dropped' if new['dropped'] else ''
        if new['state'] == 'recording':
            self.add_event(f'recording {new["task"] or "(no task)"}')
        elif new['state'] == 'saved':
            self.add_event(f'episode saved: {summary}{dropped}',
                           'warning' if new['dropped'] else 'info')
        elif new['state'] == 'discarded':
            self.add_event(f'episode discarded: {summary}', 'warning')

    def on_policy_status(self, text):
        """
        Take a ``policy/status`` payload.

        :param text: JSON text
        """
        topic = 'policy/status'

        def parse(p):
            return {k: p[k] for k in ('state', 'code', 'reason', 'task', 'version')}

        change = self._update(topic, 'policy', text, parse)
        if change is None:
            return
        old, new = change
        if old is None or old['version'] != new['version']:
            verb = 'runs' if old is None else 'swapped to'
            self.add_event(f'policy {verb} checkpoint version {_version(new["version"])}')
        if (old is None or old['state'] != new['state']) and new['state'] != POLICY_RUNNING:
            self.add_event(f'policy output zero ({new["state"]}): {new["reason"] or "no reason"}',
                           'error')
        elif old is not None and old['state'] != POLICY_RUNNING and new['state'] == POLICY_RUNNING:
            self.add_event('policy output back to normal')

    def on_trainer_status(self, text):
        """
        Take a ``trainer/status`` payload.

        :param text: JSON text
        """
        topic = 'trainer/status'

        def parse(p):
            return {k: p[k] for k in ('state', 'round', 'progress', 'demos_available',
                                      'demos_needed', 'version', 'message')}

        change = self._update(topic, 'trainer', text, parse)
        if change is None:
            return
        old, new = change
        if old is not None and old['state'] == new['state'] and old['round'] == new['round'] \
                and new['state'] != 'error':
            return
        if new['state'] == 'error':
            if old is None or old['message'] != new['message'] or old['state'] != 'error':
                self.add_event(f'trainer error: {new["message"]}', 'error')
        elif new['state'] in ('training', 'evaluating'):
            self.add_event(f'trainer {new["state"]} round {new["round"]}')

    def on_trainer_checkpoint(self, text):
        """
        Take a ``trainer/checkpoint`` payload (keeps version, round, demos_used and metrics).

        :param text: JSON text
        """
        topic = 'trainer/checkpoint'

        def parse(p):
            return {'version': p['version'], 'round': p['round'], 'demos_used': p['demos_used'],
                    'metrics': {str(k): float(v) for k, v in p['metrics'].items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)}}

        change = self._update(topic, 'checkpoint', text, parse)
        if change is None:
            return
        old, new = change
        if old is None or old['version'] != new['version']:
            self.add_event(f'checkpoint version {new["version"]} announced (round {new["round"]}, '
                           f'{new["demos_used"]} demos)')

    def on_trainer_evaluation(self, text):
        """
        Take a ``trainer/evaluation`` payload (per-task success of a checkpoint).

        :param text: JSON text
        """
        topic = 'trainer/evaluation'

        def parse(p):
            return {k: p[k] for k in ('version', 'success', 'mean', 'episodes')}

        change = self._update(topic, 'evaluation', text, parse)
        if change is None:
            return
        old, new = change
        if old is None or old['version'] != new['version']:
            mean = f'{new["mean"]:.0%}' if new['mean'] is not None else 'unknown'
            self.add_event(
                f'evaluation of version {_version(new["version"])}: mean success {mean}')

    def on_estop(self, engaged):
        """
        Take an ``estop`` message's value.

        :param engaged: True when the estop is engaged
        """
        engaged = bool(engaged)
        with self._lock:
            old = self._values['estop']
            self._values['estop'] = engaged
        if old != engaged:
            if engaged:
                self.add_event('ESTOP engaged: robot commands held at zero', 'error')
            elif old is not None:
                self.add_event('estop released', 'warning')

    def on_mux_status(self, text):
        """
        Take a ``mux/status`` payload.

        :param text: JSON text
        """
        topic = 'mux/status'

        def parse(p):
            return {k: p[k] for k in ('source', 'estop', 'code', 'reason')}

        change = self._update(topic, 'mux', text, parse)
        if change is None:
            return
        old, new = change
        if old is None or old['source'] != new['source']:
            self.add_event(f'robot commands from {new["source"]}')

    def on_graph(self, nodes, mux_running):
        """
        Take a look at the ROS graph: which other nodes run, and whether the command mux does.

        The estop banner trusts only the command mux's own ``mux/status``; these tell it when
        there is nobody to confirm anything (no graph, or no mux).

        :param nodes: names of the other nodes the console sees (itself excluded)
        :param mux_running: True when ``mux/status`` has a publisher
        """
        graph = {'nodes': sorted(str(n) for n in nodes), 'mux_running': bool(mux_running)}
        with self._lock:
            old = self._values['graph']
            self._values['graph'] = graph
        if not graph['nodes'] and (old is None or old['nodes']):
            self.add_event('no nodes found: is the graph running (ros2 launch, af-runner) in '
                           'this ROS_DOMAIN_ID?', 'error')
        elif graph['nodes'] and old is not None and not old['nodes']:
            self.add_event(f'{len(graph["nodes"])} nodes found')
        if graph['nodes'] and not graph['mux_running'] and (old is None or old['mux_running']):
            self.add_event('command mux not running: nothing confirms the estop', 'error')
        elif graph['mux_running'] and old is not None and not old['mux_running']:
            self.add_event('command mux running')

    @property
    def estop(self):
        """:return: the newest estop value (None before any estop message)."""
        with self._lock:
            return self._values['estop']

    def snapshot(self):
        """
        Copy the state into a plain dict for rendering.

        :return: dict with keys next_task, recorder, policy, trainer, checkpoint,
            evaluation (each a dict or None), estop (bool or None), mux, graph (None before
            the first look, else nodes and mux_running), events
            (oldest first), keys_enabled, input_note and note (text, editing: the note for
            the next mark)
        """
        with self._lock:
            state = copy.deepcopy(self._values)
            state['events'] = [dict(event) for event in self._events]
            state['keys_enabled'] = self._keys_enabled
            state['input_note'] = self._input_note
            state['note'] = dict(self._note)
        return state


def _version(version):
    return '?' if version is None else str(version)


def render_console(state, now_s=None):
    """
    Build the console's rich renderable from a :meth:`ConsoleState.snapshot` dict.

    :param state: snapshot dict
    :param now_s: monotonic time (s) used to advance the recording clock between
        recorder messages; None: now
    :return: rich renderable
    """
    return ConsoleView(state, time.monotonic() if now_s is None else now_s)


def render_text(state, width=100, now_s=None):
    """
    Render a snapshot dict as plain text (no colours).

    :param state: snapshot dict
    :param width: console width in characters
    :param now_s: see :func:`render_console`
    :return: str
    """
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None,
                      force_terminal=False)
    console.print(render_console(state, now_s))
    return console.export_text()


class ConsoleView:
    """
    The console as a rich renderable: one column on narrow consoles, two on wide ones.

    :param state: snapshot dict
    :param now_s: monotonic time (s)
    """

    def __init__(self, state, now_s):
        self.state = state
        self.now_s = now_s

    def __rich_console__(self, console, options):
        state = self.state
        suggestion = _next_task_panel(state)
        side = Group(_recorder_panel(state, self.now_s), _robot_panel(state))
        if options.max_width >= TWO_COLUMN_MIN_WIDTH:
            grid = Table.grid(expand=True, padding=(0, 1))
            grid.add_column(ratio=1)
            grid.add_column(ratio=1)
            grid.add_row(suggestion, side)
            middle = [grid]
        else:
            middle = [suggestion, side]
        yield Group(_estop_banner(state), *middle, _tasks_panel(state), _events_panel(state),
                    _footer(state))


def _banner(text, style, panel_style):
    return Panel(Text(text, style=style, justify='center'), style=panel_style)


def _estop_banner(state):
    """
    Show the estop as the command mux confirms it (mux/status), never as merely requested.

    ``estop`` is the newest value on the estop topic (the console's own key press included);
    only the mux holds the robot's commands at zero, so only its ``mux/status`` says ENGAGED.
    """
    requested = state.get('estop')
    mux = state.get('mux')
    graph = state.get('graph')
    sent = {True: 'estop engage sent', False: 'estop release sent', None: 'no estop sent'}[
        requested]
    if graph is not None and not graph['nodes']:
        return _banner(f'NO NODES FOUND: no command mux confirms the estop ({sent}); is the '
                       'graph running in this ROS_DOMAIN_ID?', 'bold white on red', 'red')
    if graph is not None and not graph['mux_running']:
        return _banner(f'COMMAND MUX NOT RUNNING: the estop is not confirmed ({sent})',
                       'bold white on red', 'red')
    if mux is not None and mux['estop']:
        detail = ('release sent, command mux still latched' if requested is False
                  else 'confirmed by the command mux')
        return _banner(f'ESTOP ENGAGED: robot commands held at zero ({detail})',
                       'bold white on red', 'red')
    if requested:
        waiting = 'no mux/status yet' if mux is None else 'the mux reports it released'
        return _banner(f'ESTOP SENT, NOT CONFIRMED: {waiting}', 'bold white on red', 'red')
    if mux is None:
        return _banner('estop: no mux/status yet, state unknown', 'yellow', 'yellow')
    return _banner('estop released', 'bold green', 'green')


def _next_task_panel(state):
    suggestion = state.get('next_task')
    if suggestion is None:
        body = Text('waiting for operator/next_task ...', style='dim')
        return Panel(body, title='next task to demonstrate', border_style='cyan')
    if suggestion['done']:
        headline = Text(' BUDGET SPENT: no more demonstrations needed ',
                        style='bold black on green')
    elif suggestion['task']:
        headline = Text.assemble(('DEMONSTRATE  ', 'bold'),
                                 (f' {suggestion["task"]} ', 'bold black on bright_yellow'))
    else:
        headline = Text(' no task right now ', style='bold black on yellow')
    headline.justify = 'center'
    lines = [headline, Text('')]
    why = suggestion['reason'] or 'no reason given'
    lines.append(Text.assemble(('why: ', 'bold'), why))
    if len(suggestion['tasks_this_round']) > 1:
        lines.append(Text.assemble(('this round: ', 'bold'),
                                   ', '.join(suggestion['tasks_this_round'])))
    if suggestion['skipped']:
        lines.append(Text.assemble(('skipped: ', 'bold'), ', '.join(suggestion['skipped'])))
    budget, used = suggestion['budget'], suggestion['demos_used']
    lines.append(Text.assemble(('budget ', 'bold'), f'{used} / {budget} demos used, ',
                               (f'{suggestion["budget_remaining"]} remaining', 'bold')))
    lines.append(Bar(size=max(budget, 1), begin=0.0, end=min(used, max(budget, 1)),
                     color='cyan', bgcolor='grey23'))
    details = [f'round {_version(suggestion["round"])}',
               f'scored with policy v{_version(suggestion["policy_version"])}']
    if suggestion['strategy']:
        details.append(f'strategy {suggestion["strategy"]}')
    if suggestion['request_id'] is not None:
        details.append(f'request {suggestion["request_id"]}')
    lines.append(Text(', '.join(details), style='dim'))
    return Panel(Group(*lines), title='next task to demonstrate', border_style='cyan')


def _tasks_panel(state):
    suggestion = state.get('next_task') or {}
    evaluation = state.get('evaluation') or {}
    scores = suggestion.get('scores', {})
    counts = suggestion.get('demo_counts', {})
    success = evaluation.get('success', {})
    chosen = suggestion.get('task', '')
    this_round = set(suggestion.get('tasks_this_round', []))
    tasks = sorted(set(scores) | set(counts) | set(success),
                   key=lambda t: (-_finite(scores.get(t), -math.inf), t))
    if not tasks:
        return Panel(Text('no task scores yet', style='dim'), title='tasks', border_style='blue')
    finite = [s for s in scores.values() if math.isfinite(s)]
    low, high = min([0.0] + finite), max([0.0] + finite)
    success_title = f'success v{_version(evaluation.get("version"))}' if evaluation else 'success'
    table = Table(expand=True, box=None, padding=(0, 1), pad_edge=False)
    table.add_column('', width=1, no_wrap=True)
    table.add_column('task', no_wrap=True, overflow='ellipsis', ratio=1)
    table.add_column('score', min_width=SCORE_BAR_WIDTH, ratio=1, no_wrap=True)
    table.add_column('', justify='right', no_wrap=True)
    table.add_column('demos', justify='right', no_wrap=True)
    table.add_column(success_title, justify='right', no_wrap=True)
    for task in tasks:
        score = scores.get(task)
        is_chosen = task == chosen and not suggestion.get('done')
        colour = 'bright_yellow' if is_chosen else ('cyan' if task in this_round else 'blue')
        fraction = _bar_fraction(score, low, high)
        bar = Text('') if fraction is None else Bar(size=1.0, begin=0.0, end=fraction,
                                                    color=colour)
        marker = '>' if is_chosen else ('+' if task in this_round else '')
        table.add_row(marker, task, bar, _score_text(score),
                      str(counts[task]) if task in counts else '-',
                      _success_text(success.get(task)),
                      style='bold' if is_chosen else None)
    return Panel(table, title='tasks (by score; > next, + this round)', border_style='blue')


def _bar_fraction(score, low, high):
    """Return the bar length of ``score`` as a fraction of [low, high], or None for no bar."""
    if score is None or not math.isfinite(score) or high <= low:
        return None
    # Halved so that extreme scores (e.g. +-1e308) cannot overflow the span to inf.
    return min(max((score / 2 - low / 2) / (high / 2 - low / 2), 0.0), 1.0)


def _score_text(score):
    if score is None:
        return ''
    return f'{score:.3f}' if abs(score) < 1e4 else f'{score:.3g}'


def _finite(value, default):
    return value if value is not None and math.isfinite(value) else default


def _success_text(value):
    if value is None:
        return Text('-', style='dim')
    style = 'green' if value >= 0.8 else ('yellow' if value >= 0.5 else 'red')
    return Text(f'{value:.0%}', style=style)


def _recorder_panel(state, now_s):
    recorder = state.get('recorder')
    if recorder is None:
        return Panel(Text('no recorder/status yet', style='dim'), title='recorder',
                     border_style='white')
    status = recorder['state']
    duration_s = recorder['duration_s']
    if status == 'recording':
        duration_s += max(0.0, now_s - recorder['received_s'])
        label = ' \u25cf RECORDING '
    else:
        label = f' {status} '
    lines = [Text.assemble((label, RECORDER_STYLES.get(status, 'bold magenta')),
                           f'  {recorder["task"] or "(no task)"}')]
    lines.append(Text(f'{duration_s:.1f} s   {recorder["frames"]} frames'))
    if recorder['dropped']:
        lines.append(Text(f'WARNING: {recorder["dropped"]} frames dropped', style='bold yellow'))
    if status == 'recording':
        lines.extend(_mark_lines(recorder))
        if recorder.get('note'):
            lines.append(Text(f'note: {recorder["note"]}', style='dim'))
    suggested = (state.get('next_task') or {}).get('task')
    if status == 'recording' and suggested and recorder['task'] and recorder['task'] != suggested:
        lines.append(Text(f'recording {recorder["task"]}, but {suggested} is suggested',
                          style='yellow'))
    border = 'red' if status == 'recording' else 'white'
    return Panel(Group(*lines), title='recorder', border_style=border)


def _mark_lines(recorder):
    """Say how a stop would label the episode being recorded, and who decides it."""
    verdict = recorder.get('success_if_stopped')
    source = recorder.get('success_source')
    if verdict is None:  # a recorder that does not say (older payload)
        return [Text('no verdict reported; y/n to mark it', style='dim')]
    label = 'SUCCESS' if verdict else 'FAILURE'
    if source == 'operator':
        return [Text.assemble(('marked ', 'bold'),
                              (label, 'bold green' if verdict else 'bold red'),
                              ' by the operator')]
    if source == 'sim':
        return [Text(f'stop saves it as {label} (sim/success)', style='bold')]
    return [Text(f'UNMARKED: stop saves it as {label}', style='bold yellow'),
            Text('(unmarked_success); y/n to mark it', style='yellow')]


def _robot_panel(state):
    lines = []
    policy = state.get('policy')
    if policy is None:
        lines.append(Text('policy: no policy/status yet', style='dim'))
    elif policy['state'] == POLICY_RUNNING:
        version = f'policy v{_version(policy["version"])} '
        lines.append(Text.assemble((version, 'bold'), ('ok', 'bold green'),
                                   f'  task {policy["task"]}' if policy['task'] else ''))
    else:
        version = f'policy v{_version(policy["version"])} '
        lines.append(Text.assemble((version, 'bold'),
                                   (f'ZERO OUTPUT ({policy["state"]})', 'bold white on red')))
        lines.append(Text(policy['reason'] or 'no reason given', style='red'))
    mux = state.get('mux')
    if mux is not None:
        code = f' ({mux["code"]}: {mux["reason"]})' if mux['code'] not in ('', 'ok') else ''
        lines.append(Text(f'commands from {mux["source"]}{code}'))
    trainer = state.get('trainer')
    if trainer is None:
        lines.append(Text('trainer: no trainer/status yet', style='dim'))
    else:
        style = 'bold red' if trainer['state'] == 'error' else 'bold'
        row = Table.grid(padding=(0, 1))
        row.add_column()
        row.add_column(width=12)
        row.add_column()
        row.add_row(Text(f'trainer {trainer["state"]}', style=style),
                    ProgressBar(total=1.0, completed=min(max(trainer['progress'], 0.0), 1.0),
                                width=12),
                    Text(f'{trainer["progress"]:.0%} round {_version(trainer["round"])}'))
        lines.append(row)
        if trainer['demos_available'] is not None and trainer['demos_needed'] is not None:
            lines.append(Text(f'demos {trainer["demos_available"]} / {trainer["demos_needed"]} '
                              f'for the next round'))
        if trainer['message']:
            lines.append(Text(trainer['message'], style='red' if trainer['state'] == 'error'
                              else 'dim'))
    checkpoint = state.get('checkpoint')
    if checkpoint is not None:
        metrics = _metrics_text(checkpoint['metrics'])
        lines.append(Text(f'checkpoint v{checkpoint["version"]}: round '
                          f'{_version(checkpoint["round"])}, {_version(checkpoint["demos_used"])} '
                          f'demos' + (f'; {metrics}' if metrics else '')))
    return Panel(Group(*lines), title='policy and trainer', border_style='white')


def _metrics_text(metrics):
    """
    Summarise a checkpoint's training metrics: the held-out validation error first.

    :param metrics: dict name -> number, as the trainer sent them
    :return: e.g. 'val_mse 0.0839 (start 0.084), loss 0.1238, bc_loss 0.0375'
    """
    parts = []
    if 'val_mse' in metrics:
        start = metrics.get('val_mse_start')
        parts.append(f'val_mse {metrics["val_mse"]:.4g}'
                     + (f' (start {start:.4g})' if start is not None else ''))
    rest = sorted((k for k in metrics if k not in ('val_mse', 'val_mse_start', 'val_rows')),
                  key=lambda k: k != 'loss')  # the training loss next, then as sent
    parts += [f'{k} {metrics[k]:.4g}' for k in rest[:3 - len(parts)]]
    return ', '.join(parts)


def _events_panel(state):
    events = state.get('events') or []
    if not events:
        return Panel(Text('no events yet', style='dim'), title='events', border_style='white')
    styles = {'info': '', 'warning': 'yellow', 'error': 'bold red'}
    lines = [Text.assemble((time.strftime('%H:%M:%S', time.localtime(e['time_s'])) + ' ', 'dim'),
                           (e['text'], styles.get(e['level'], '')), no_wrap=True,
                           overflow='ellipsis')
             for e in reversed(events)]
    return Panel(Group(*lines), title='events (newest first)', border_style='white')


def _footer(state):
    note = state.get('note') or {}
    if state.get('keys_enabled') and note.get('editing'):
        return Text.assemble(('note: ', 'bold'), (note.get('text', '') + '_', 'reverse'),
                             '  Enter: keep it for the next y/n mark, Esc: drop it')
    if state.get('keys_enabled'):
        keys = Text.assemble(*[part for key, what in KEY_HELP
                               for part in ((f' {key} ', 'bold reverse'), f' {what}  ')])
        if note.get('text'):
            return Group(keys, Text(f'note for the next mark: {note["text"]}', style='bold'))
        return keys
    return Text(f'display only: {state.get("input_note") or "keys are off"}', style='dim')
