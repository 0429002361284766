"""
What the dashboard knows about the loop: the newest payload per topic, histories, warnings.

The node hands every message to an ``on_*`` method (JSON topics as their text, decoded here
through :mod:`active_finetune.payloads`; other messages as plain values).  A payload that does
not decode never raises: it becomes an error event and the previous value stays.
:meth:`DashboardState.snapshot` gives a JSON-ready dict for the page, with the warnings that
tell the truth about the graph: missing nodes, a stale camera, a recorder error, low disk, a
command mux that does not run (the estop is then unconfirmed).

Thread-safe: the ROS executor writes, the web server reads; every change bumps
:attr:`DashboardState.revision` so the server sends a snapshot only when something changed.
"""

import collections
import math
import re
import threading
import time

from active_finetune import payloads

LOSS_PATTERN = re.compile(r'step (\d+)/(\d+) loss (-?[0-9.]+(?:e[-+]?\d+)?|nan|-?inf)')
"""The trainer's progress message during training (``step 200/300 loss -4.768``)."""

MAX_EVENTS = 30
MAX_LOSS_POINTS = 2000
MAX_EPISODES = 20


def _finite_or_none(value):
    """Turn NaN and infinities (not JSON) into None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return _finite_or_none(value)


class DashboardState:
    """
    The dashboard's view of the loop, fed by the node and read by the web server.

    :param expected_nodes: node names the graph should have (a missing one is a warning)
    :param stale_camera_s: no frame for this long: the camera is stale
    :param min_free_disk_mb: less free space in the dataset directory: disk low
    :param clock: time source (s), for tests
    """

    def __init__(self, expected_nodes=(), stale_camera_s=1.0, min_free_disk_mb=1000.0,
                 clock=time.time):
        self.expected_nodes = tuple(expected_nodes)
        self.stale_camera_s = stale_camera_s
        self.min_free_disk_mb = min_free_disk_mb
        self.clock = clock
        self._lock = threading.Lock()
        self.revision = 0
        self._topics = {}
        self._received = {}
        self._events = collections.deque(maxlen=MAX_EVENTS)
        self._episodes = collections.deque(maxlen=MAX_EPISODES)
        self._loss = collections.deque(maxlen=MAX_LOSS_POINTS)
        self._evaluations = {}
        self._action = None
        self._camera = {'frames': 0, 'last_s': None, 'width': 0, 'height': 0, 'encoding': '',
                        'rate_hz': 0.0, 'error': ''}
        self._camera_status = None
        self._graph = None
        self._disk = None
        self._estop_sent = None

    # ------------------------------------------------------------------ helpers
    def _changed(self):
        self.revision += 1

    def add_event(self, text, level='info'):
        """
        Record an event for the page's log.

        :param text: what happened
        :param level: 'info', 'warning' or 'error'
        """
        with self._lock:
            self._events.append({'t': self.clock(), 'level': level, 'text': str(text)})
            self._changed()

    def _decode(self, topic, decode, text):
        try:
            return decode(text)
        except payloads.PayloadError as error:
            self.add_event(f'{topic}: {error}', 'error')
            return None

    def _store(self, topic, payload):
        with self._lock:
            self._topics[topic] = _json_safe(payload.to_dict())
            self._received[topic] = self.clock()
            self._changed()

    # ------------------------------------------------------------------ loop topics
    def on_next_task(self, text):
        """:param text: ``operator/next_task`` JSON."""
        payload = self._decode('operator/next_task', payloads.decode_next_task, text)
        if payload is not None:
            self._store('operator/next_task', payload)

    def on_recorder_status(self, text):
        """:param text: ``recorder/status`` JSON."""
        payload = self._decode('recorder/status', payloads.decode_recorder_status, text)
        if payload is None:
            return
        previous = self.topic('recorder/status')
        self._store('recorder/status', payload)
        if previous is None or previous.get('state') != payload.state:
            level = 'error' if payload.state == 'error' else 'info'
            self.add_event(f'recorder {payload.state}'
                           + (f': {payload.message}' if payload.message else ''), level)

    def on_episode(self, text):
        """:param text: ``recorder/episode`` JSON."""
        payload = self._decode('recorder/episode', payloads.decode_episode_saved, text)
        if payload is None:
            return
        with self._lock:
            if any(e['path'] == payload.path for e in self._episodes):
                return
            self._episodes.append(_json_safe(payload.to_dict()))
            self._changed()
        self.add_event(f'episode saved: {payload.task} '
                       f'({"success" if payload.success else "failure"}, {payload.steps} steps)')

    def on_policy_status(self, text):
        """:param text: ``policy/status`` JSON."""
        payload = self._decode('policy/status', payloads.decode_policy_status, text)
        if payload is not None:
            self._store('policy/status', payload)

    def on_mux_status(self, text):
        """:param text: ``mux/status`` JSON (the only source of the estop shown as engaged)."""
        payload = self._decode('mux/status', payloads.decode_mux_status, text)
        if payload is None:
            return
        previous = self.topic('mux/status')
        self._store('mux/status', payload)
        if previous is None or previous.get('estop') != payload.estop:
            self.add_event(f'command mux: estop {"ENGAGED" if payload.estop else "released"}',
                           'warning' if payload.estop else 'info')

    def on_trainer_status(self, text):
        """:param text: ``trainer/status`` JSON; the loss is read from its progress message."""
        payload = self._decode('trainer/status', payloads.decode_trainer_status, text)
        if payload is None:
            return
        self._store('trainer/status', payload)
        match = LOSS_PATTERN.search(payload.message)
        if match and payload.state == 'training':
            loss = float(match.group(3))
            with self._lock:
                point = {'round': payload.round, 'step': int(match.group(1)),
                         'steps': int(match.group(2)), 'loss': _finite_or_none(loss)}
                if not self._loss or self._loss[-1] != point:
                    self._loss.append(point)
                    self._changed()

    def on_checkpoint(self, text):
        """:param text: ``trainer/checkpoint`` JSON (weights and config are not kept)."""
        payload = self._decode('trainer/checkpoint', payloads.decode_checkpoint, text)
        if payload is None:
            return
        kept = {k: v for k, v in payload.to_dict().items() if k not in ('weights_b64', 'config')}
        kept['weights_in_message'] = payload.weights_b64 is not None
        with self._lock:
            self._topics['trainer/checkpoint'] = _json_safe(kept)
            self._received['trainer/checkpoint'] = self.clock()
            self._changed()
        self.add_event(f'checkpoint version {payload.version} announced '
                       f'(sha256 {payload.sha256[:12]})')

    def on_evaluation(self, text):
        """:param text: ``trainer/evaluation`` JSON; kept per version for the plot."""
        payload = self._decode('trainer/evaluation', payloads.decode_evaluation, text)
        if payload is None:
            return
        version = payload.version if payload.version is not None else len(self._evaluations)
        with self._lock:
            self._evaluations[version] = _json_safe(payload.to_dict())
            self._topics['trainer/evaluation'] = self._evaluations[version]
            self._received['trainer/evaluation'] = self.clock()
            self._changed()

    def on_sim_status(self, text):
        """:param text: ``sim/status`` JSON."""
        payload = self._decode('sim/status', payloads.decode_sim_status, text)
        if payload is not None:
            self._store('sim/status', payload)

    # ------------------------------------------------------------------ other inputs
    def on_action(self, linear, gripper=None, stamp_s=None):
        """
        Record the policy's newest action.

        :param linear: (x, y, z) end-effector velocity (m/s), or None to keep the previous
        :param gripper: gripper command (-1 open .. +1 closed), or None to keep the previous
        :param stamp_s: source stamp of the image the action came from (s)
        """
        with self._lock:
            action = dict(self._action or {'linear': [0.0, 0.0, 0.0], 'gripper': None,
                                           'stamp_s': None})
            if linear is not None:
                action['linear'] = [_finite_or_none(float(v)) for v in linear]
                action['stamp_s'] = stamp_s
            if gripper is not None:
                action['gripper'] = _finite_or_none(float(gripper))
            action['received_s'] = self.clock()
            self._action = action
            self._changed()

    def on_camera_frame(self, width, height, encoding, rate_hz):
        """
        Record that a camera frame arrived (the frames themselves go to the frame hub).

        :param width: px
        :param height: px
        :param encoding: image encoding
        :param rate_hz: arrival rate measured over the last frames
        """
        with self._lock:
            camera = self._camera
            was_stale = camera['last_s'] is None or \
                self.clock() - camera['last_s'] > self.stale_camera_s
            camera.update(frames=camera['frames'] + 1, last_s=self.clock(), width=width,
                          height=height, encoding=encoding, rate_hz=rate_hz)
            if was_stale:
                self._changed()

    def on_camera_error(self, text):
        """:param text: why the newest frame could not be shown ('' clears it)."""
        with self._lock:
            if self._camera['error'] != text:
                self._camera['error'] = text
                self._changed()

    def on_camera_status(self, level, message, values):
        """
        Record the camera node's diagnostic status (robot graph).

        :param level: 'OK', 'WARN', 'ERROR' or 'STALE'
        :param message: its message
        :param values: dict of its key/values
        """
        with self._lock:
            self._camera_status = {'level': level, 'message': message, 'values': dict(values),
                                   'received_s': self.clock()}
            self._changed()

    def on_graph(self, nodes, mux_publishers, recorder_mark_subscribers=0):
        """
        Record which nodes the ROS graph has.

        :param nodes: node names seen (without the dashboard itself)
        :param mux_publishers: publishers of mux/status
        :param recorder_mark_subscribers: subscribers of recorder/mark (who stores a note)
        """
        graph = {'nodes': sorted(set(nodes)),
                 'missing': [n for n in self.expected_nodes if n not in set(nodes)],
                 'mux_running': mux_publishers > 0,
                 'note_receivers': recorder_mark_subscribers}
        with self._lock:
            changed = self._graph is None or any(
                self._graph.get(k) != v for k, v in graph.items())
            graph['checked_s'] = self.clock()
            self._graph = graph
            if changed:
                self._changed()

    def on_disk(self, path, free_mb, error=''):
        """
        Record the free space of the dataset directory.

        :param path: directory checked
        :param free_mb: free space (MB), or None when it cannot be read
        :param error: why it cannot be read
        """
        disk = {'path': str(path), 'free_mb': free_mb, 'error': error,
                'low': free_mb is not None and free_mb < self.min_free_disk_mb,
                'min_free_mb': self.min_free_disk_mb}
        with self._lock:
            previous = self._disk
            self._disk = disk
            if previous is None or previous['low'] != disk['low'] or \
                    previous['error'] != disk['error'] or \
                    abs((previous['free_mb'] or 0) - (free_mb or 0)) >= 1.0:
                self._changed()

    def on_estop_sent(self, engage):
        """:param engage: the estop value the dashboard published (not yet confirmed)."""
        with self._lock:
            self._estop_sent = {'engage': bool(engage), 'sent_s': self.clock()}
            self._changed()

    # ------------------------------------------------------------------ reading
    def topic(self, name):
        """
        Give the newest decoded payload of a topic.

        :param name: topic name
        :return: dict copy, or None when nothing valid arrived yet
        """
        with self._lock:
            value = self._topics.get(name)
            return dict(value) if value is not None else None

    def estop_confirmed(self):
        """:return: the estop the command mux confirms (True/False), None without a mux/status."""
        mux = self.topic('mux/status')
        return None if mux is None else bool(mux['estop'])

    def recorder_state(self):
        """:return: the recorder's newest state, or None."""
        status = self.topic('recorder/status')
        return None if status is None else status['state']

    def warnings(self):
        """
        List what the operator must know is wrong, most serious first.

        :return: list of dicts {code, text}
        """
        now = self.clock()
        with self._lock:
            graph, camera, disk = self._graph, dict(self._camera), self._disk
            recorder = self._topics.get('recorder/status')
            mux = self._topics.get('mux/status')
            camera_status = self._camera_status
        found = []
        if graph is not None and not graph['nodes']:
            found.append({'code': 'no_nodes', 'text': 'NO NODES FOUND: nothing else runs'})
        elif graph is not None and graph['missing']:
            found.append({'code': 'nodes_missing',
                          'text': 'nodes missing: ' + ', '.join(graph['missing'])})
        if graph is not None and not graph['mux_running']:
            found.append({'code': 'mux_missing',
                          'text': 'COMMAND MUX NOT RUNNING: estop cannot be confirmed'})
        if mux is not None and mux.get('estop'):
            found.append({'code': 'estop', 'text': 'ESTOP ENGAGED (confirmed by the command mux)'})
        if camera['last_s'] is None:
            found.append({'code': 'camera_none', 'text': 'no camera frame received'})
        elif now - camera['last_s'] > self.stale_camera_s:
            found.append({'code': 'camera_stale',
                          'text': f'camera stale: last frame {now - camera["last_s"]:.1f} s ago'})
        if camera['error']:
            found.append({'code': 'camera_error', 'text': f'camera image: {camera["error"]}'})
        if camera_status is not None and camera_status['level'] in ('ERROR', 'STALE'):
            found.append({'code': 'camera_node',
                          'text': f'camera node {camera_status["level"]}: '
                                  f'{camera_status["message"]}'})
        if recorder is not None and recorder['state'] == 'error':
            found.append({'code': 'recorder_error',
                          'text': f'recorder error: {recorder.get("message", "")}'})
        if disk is not None and disk['error']:
            found.append({'code': 'disk_unknown',
                          'text': f'free disk space of {disk["path"]} unknown: {disk["error"]}'})
        elif disk is not None and disk['low']:
            found.append({'code': 'disk_low',
                          'text': f'disk low: {disk["free_mb"]:.0f} MB free in {disk["path"]} '
                                  f'(< {disk["min_free_mb"]:.0f} MB)'})
        return found

    def snapshot(self):
        """
        Give everything the page shows, JSON-ready.

        :return: dict
        """
        now = self.clock()
        warnings = self.warnings()
        with self._lock:
            camera = dict(self._camera)
            camera['age_s'] = None if camera['last_s'] is None else now - camera['last_s']
            camera['stale'] = camera['age_s'] is None or camera['age_s'] > self.stale_camera_s
            return {
                'type': 'state', 'revision': self.revision, 'now_s': now,
                'topics': dict(self._topics),
                'received_s': dict(self._received),
                'episodes': list(self._episodes),
                'loss': list(self._loss),
                'evaluations': [self._evaluations[v] for v in sorted(self._evaluations)],
                'action': self._action, 'camera': camera, 'camera_status': self._camera_status,
                'graph': self._graph, 'disk': self._disk, 'estop_sent': self._estop_sent,
                'events': list(self._events), 'warnings': warnings,
            }
