"""
Recording core of the demo recorder (ROS-free): the recorder's state machine.

The node (or a test, or the benchmark) hands samples to :class:`EpisodeRecorder` with ``add_*``
calls that never block.  The recorder is idle or recording one episode:
:meth:`~EpisodeRecorder.start` (refused while recording, without a task, on low disk, or while a
leftover could not be recovered), :meth:`~EpisodeRecorder.mark` (the operator's verdict and
note), :meth:`~EpisodeRecorder.stop` (save, success by the settings' policy) and
:meth:`~EpisodeRecorder.discard` move it on; stopped episodes are written in the background
and reported through ``on_finished``, once saved.  The parts, one job each:

- :mod:`active_finetune.data.recorder_settings`: :class:`RecorderSettings` (the node's
  parameters) and the frame compression;
- :mod:`active_finetune.data.leftover_recovery`: the ``.partial`` files a crash left, recovered
  or quarantined when a recorder starts;
- :mod:`active_finetune.data.episode_writer`: one episode's bounded queue and writer thread.

Their public names are importable from this module too.

Crash safety: a killed recorder leaves a ``.partial`` whose complete records can be read; the
next recorder recovers it at start.  A write error (e.g. a full disk) stops the episode, keeps
the partial for recovery and reports an error.  Recovery itself fails soft: a leftover it cannot
rewrite for lack of space (or any other OS error) is kept as it is, the recorder reports it in
its status and refuses to record until a retry (:meth:`EpisodeRecorder.retry_recovery`, also
tried by every start) succeeds.

Layout of ``dataset_dir``::

    episode_000001_reach/                  saved (indexed): <name>.mcap + metadata.yaml
    episode_000002_push.mcap.partial       being recorded (or left by a crash)
    episode_000003_push.recovered.mcap     salvaged from a crash or an interrupted recording
    episodes.jsonl                         index, one JSON line per saved episode
    quarantine/episode_000004_x.mcap.partial + .reason.txt
"""

import logging
from pathlib import Path
import shutil
import threading
import time

from active_finetune.data.episode_index import list_saved_episodes, next_episode_number
from active_finetune.data.episode_writer import episode_file_name, EpisodeSession
from active_finetune.data.leftover_recovery import PARTIAL_SUFFIX, quarantine, QUARANTINE_DIR, \
    recover_leftovers
from active_finetune.data.mcap_episode import DEFAULT_TOPICS, header
from active_finetune.data.recorder_settings import AUTO_PNG_MAX_PIXELS, frame_format, \
    RECORDER_IMAGE_FORMATS, RecorderSettings, SUCCESS_POLICIES

LOGGER = logging.getLogger(__name__)

__all__ = ['AUTO_PNG_MAX_PIXELS', 'episode_file_name', 'EpisodeRecorder', 'EpisodeSession',
           'frame_format', 'free_disk_mb', 'PARTIAL_SUFFIX', 'QUARANTINE_DIR', 'quarantine',
           'RECORDER_IMAGE_FORMATS', 'RecorderError', 'RecorderRefusedError', 'RecorderSettings',
           'recover_leftovers', 'STATES', 'SUCCESS_POLICIES', 'SUCCESS_SOURCES']

STATES = ('idle', 'recording', 'saving', 'saved', 'discarded', 'error')
"""Values of the recorder's status 'state'."""

SUCCESS_SOURCES = ('explicit', 'operator', 'sim', 'unmarked')
"""What decided a saved episode's success (metadata ``success_source``): a value given to stop,
the operator's mark, the simulator's sim/success, or nothing (``unmarked_success``)."""


class RecorderError(RuntimeError):
    """A recorder request that cannot be carried out (the message says why)."""


class RecorderRefusedError(RecorderError):
    """Start refused: already recording, no task, or too little free disk."""


def free_disk_mb(directory):
    """
    Free space of the file system holding ``directory``.

    :param directory: an existing directory
    :return: MB (1e6 bytes) available to this user
    """
    return shutil.disk_usage(directory).free / 1e6


class EpisodeRecorder:
    """
    Record demonstrations into episode files; thread-safe, never blocks its callers on disk.

    :param settings: :class:`RecorderSettings`
    :param topics: role -> topic name stored in the files (default :data:`DEFAULT_TOPICS`)
    :param on_finished: callable(result dict) called on a writer thread when an episode was
        saved, discarded, set aside or failed; result has 'state', 'task', 'request_id',
        'duration_s', 'frames', 'dropped', 'message', 'path' and, when saved, 'sha256',
        'steps', 'success'
    """

    def __init__(self, settings, topics=None, on_finished=None):
        self.settings = settings
        self.topics = dict(DEFAULT_TOPICS if topics is None else topics)
        self._on_finished = on_finished
        self._lock = threading.Lock()
        self._active = None
        self._finishing = set()
        self.last_result = None
        self._recovery_lock = threading.Lock()
        Path(settings.dataset_dir).mkdir(parents=True, exist_ok=True)
        self.recovered = recover_leftovers(settings.dataset_dir)
        self.recovery_failures = [item for item in self.recovered if item['outcome'] == 'kept']
        self.recovery_checked_s = time.monotonic()
        try:
            # The recorder is the index's only writer: saved episodes it lacks (a crash between
            # rename and append) are indexed here, at start.
            list_saved_episodes(settings.dataset_dir, write=True)
        except (OSError, ValueError) as exc:
            LOGGER.error('cannot index the saved episodes of %s: %s', settings.dataset_dir, exc)

    @property
    def recovery_pending(self):
        """:return: True while a leftover partial file could not be recovered (start refused)."""
        return bool(self.recovery_failures)

    def retry_recovery(self):
        """
        Try again to recover the leftovers a previous attempt had to keep (e.g. on a full disk).

        :return: the results of this attempt (as :func:`recover_leftovers`), [] when nothing was
            pending; successful ones are appended to :attr:`recovered`
        """
        with self._recovery_lock:
            self.recovery_checked_s = time.monotonic()
            if not self.recovery_failures:
                return []
            results = recover_leftovers(self.settings.dataset_dir)
            self.recovered = [item for item in self.recovered if item['outcome'] != 'kept'] \
                + results
            self.recovery_failures = [item for item in results if item['outcome'] == 'kept']
            return results

    def _recovery_refusal(self):
        failures = self.recovery_failures
        names = ', '.join(Path(item['partial']).name for item in failures)
        return (f'recording refused: {len(failures)} leftover partial episode(s) could not be '
                f'recovered ({names}: {failures[0]["reason"]}); free space in '
                f'{self.settings.dataset_dir}, recovery is retried every '
                f'{self.settings.recovery_retry_period_s:g} s and at each start')

    @property
    def active(self):
        """:return: the :class:`EpisodeSession` being recorded, or None."""
        return self._active

    @property
    def saving(self):
        """:return: number of stopped episodes still being written."""
        with self._lock:
            return len(self._finishing)

    def start(self, task, request_id=None, notes=''):
        """
        Start recording an episode of ``task``.

        :param task: task name (non-empty)
        :param request_id: the operator/next_task request it answers, if any
        :param notes: operator notes stored in the file
        :return: the new :class:`EpisodeSession`
        :raises RecorderRefusedError: while recording, without a task, on low disk, or while a
            leftover partial file could not be recovered (retried first)
        :raises OSError: when the partial file cannot be created
        """
        if not task:
            raise RecorderRefusedError('no task: operator/next_task has suggested none and '
                                       'default_task is empty')
        if self.recovery_failures and self._active is None:
            self.retry_recovery()
            if self.recovery_failures:
                raise RecorderRefusedError(self._recovery_refusal())
        with self._lock:
            if self._active is not None:
                raise RecorderRefusedError(
                    f'already recording episode {self._active.number} ({self._active.task})')
            free_mb = free_disk_mb(self.settings.dataset_dir)
            if free_mb < self.settings.min_free_disk_mb:
                raise RecorderRefusedError(
                    f'only {free_mb:.0f} MB free in {self.settings.dataset_dir}, '
                    f'min_free_disk_mb is {self.settings.min_free_disk_mb:.0f}')
            number = max(next_episode_number(self.settings.dataset_dir),
                         1 + max((s.number for s in self._finishing), default=0))
            self._active = EpisodeSession(self, number, task, request_id, notes)
            return self._active

    def _finish_active(self, outcome, success=None):
        with self._lock:
            session = self._active
            if session is None:
                raise RecorderError('not recording')
            self._active = None
            self._finishing.add(session)
        session.finish(outcome, success)
        return session

    def resolve_success(self, session, success=None):
        """
        Decide an episode's success by the settings' policy.

        :param session: the episode
        :param success: an explicit value (wins over everything)
        :return: bool
        """
        return self.success_and_source(session, success)[0]

    def success_and_source(self, session, success=None):
        """
        Decide an episode's success by the settings' policy, and say what decided it.

        :param session: the episode
        :param success: an explicit value (wins over everything)
        :return: (bool, source): source is one of :data:`SUCCESS_SOURCES`
        """
        if success is not None:
            return bool(success), 'explicit'
        policy = self.settings.success_on_stop
        if policy == 'sim':
            return bool(session.sim_success), 'sim'
        if session.marked_success is not None:
            return session.marked_success, 'operator'
        if policy == 'auto' and session.sim_success is not None:
            return session.sim_success, 'sim'
        return self.settings.unmarked_success, 'unmarked'

    def stop(self, success=None):
        """
        Stop recording and save the episode in the background (``on_finished`` reports it).

        :param success: explicit success; None applies ``success_on_stop``
        :return: the stopped :class:`EpisodeSession`
        :raises RecorderError: when not recording
        """
        with self._lock:
            session = self._active
        if session is None:
            raise RecorderError('not recording')
        verdict, source = self.success_and_source(session, success)
        session.success_source = source
        return self._finish_active('save', verdict)

    def discard(self):
        """
        Stop recording and delete the episode.

        :return: the discarded :class:`EpisodeSession`
        :raises RecorderError: when not recording
        """
        return self._finish_active('discard')

    def mark(self, success, note=None):
        """
        Record the operator's verdict on the episode being recorded, and a note.

        The verdict decides the episode's success at stop under the 'auto' and 'operator'
        policies (``success_on_stop``); the note is stored in the episode file's metadata
        (``operator_notes``, after the notes given at start).

        :param success: bool: success (True) or failure (False)
        :param note: the operator's note; None or blank keeps the note of an earlier mark
        :return: the session
        :raises RecorderError: when not recording
        """
        session = self._active
        if session is None:
            raise RecorderError('not recording: mark the episode while recording, before stop')
        session.marked_success = bool(success)
        if note is not None and str(note).strip():
            session.mark_note = str(note).strip()
        return session

    def mark_success(self, success):
        """
        Record the operator's verdict on the episode being recorded (keeps any note).

        :param success: bool
        :return: the session
        :raises RecorderError: when not recording
        """
        return self.mark(success)

    def _offer(self, role, log_time_ns, publish_time_ns, payload):
        session = self._active
        if session is None:
            return False
        log_ns = time.time_ns() if log_time_ns is None else int(log_time_ns)
        return session.offer(role, (log_ns, log_ns if publish_time_ns is None
                                    else int(publish_time_ns), payload))

    def add_image(self, rgb, stamp_ns, frame_id='', log_time_ns=None):
        """
        Queue a camera frame (compressed on the writer thread).

        :param rgb: (H, W, 3) uint8 array (not modified afterwards by the caller)
        :param stamp_ns: source stamp (ns since the epoch)
        :param frame_id: optical frame
        :param log_time_ns: arrival time (default: now)
        :return: True when queued, False when not recording or dropped
        """
        return self._offer('image', log_time_ns, stamp_ns, (rgb, frame_id))

    def add_joint_state(self, names, positions, velocities=(), efforts=(), stamp_ns=None,
                        frame_id='', log_time_ns=None):
        """
        Queue a joint state.

        :param names: joint names
        :param positions: positions (rad or m)
        :param velocities: velocities (may be empty)
        :param efforts: efforts (may be empty)
        :param stamp_ns: source stamp (default: the log time)
        :param frame_id: header frame
        :param log_time_ns: arrival time (default: now)
        :return: True when queued
        """
        payload = {'header': None, 'name': list(names), 'position': [float(v) for v in positions],
                   'velocity': [float(v) for v in velocities],
                   'effort': [float(v) for v in efforts]}
        return self._offer_stamped('joint_states', payload, stamp_ns, frame_id, log_time_ns)

    def _offer_stamped(self, role, payload, stamp_ns, frame_id, log_time_ns):
        log_ns = time.time_ns() if log_time_ns is None else int(log_time_ns)
        stamp = log_ns if stamp_ns is None else int(stamp_ns)
        payload['header'] = header(stamp, frame_id)
        return self._offer(role, log_ns, stamp, payload)

    def add_ee_pose(self, position, orientation=(0.0, 0.0, 0.0, 1.0), stamp_ns=None,
                    frame_id='', log_time_ns=None):
        """
        Queue an end-effector pose.

        :param position: x, y, z (m)
        :param orientation: quaternion x, y, z, w
        :param stamp_ns: source stamp (default: the log time)
        :param frame_id: frame of the pose
        :param log_time_ns: arrival time (default: now)
        :return: True when queued
        """
        x, y, z = (float(v) for v in position)
        qx, qy, qz, qw = (float(v) for v in orientation)
        payload = {'header': None, 'pose': {'position': {'x': x, 'y': y, 'z': z},
                                            'orientation': {'x': qx, 'y': qy, 'z': qz, 'w': qw}}}
        return self._offer_stamped('ee_pose', payload, stamp_ns, frame_id, log_time_ns)

    def add_twist(self, linear_mps, angular_radps=(0.0, 0.0, 0.0), stamp_ns=None, frame_id='',
                  log_time_ns=None):
        """
        Queue a teleop velocity command.

        :param linear_mps: vx, vy, vz (m/s)
        :param angular_radps: wx, wy, wz (rad/s)
        :param stamp_ns: source stamp (default: the log time)
        :param frame_id: frame of the twist
        :param log_time_ns: arrival time (default: now)
        :return: True when queued
        """
        lx, ly, lz = (float(v) for v in linear_mps)
        ax, ay, az = (float(v) for v in angular_radps)
        payload = {'header': None, 'twist': {'linear': {'x': lx, 'y': ly, 'z': lz},
                                             'angular': {'x': ax, 'y': ay, 'z': az}}}
        return self._offer_stamped('twist', payload, stamp_ns, frame_id, log_time_ns)

    def add_gripper(self, command, log_time_ns=None):
        """
        Queue a teleop gripper command.

        :param command: -1 open .. +1 closed
        :param log_time_ns: arrival time (default: now)
        :return: True when queued
        """
        return self._offer('gripper', log_time_ns, None, {'data': float(command)})

    def add_joy(self, axes, buttons, stamp_ns=None, frame_id='', log_time_ns=None):
        """
        Queue a teleop/joy message (kept for inspection; not used for training).

        :param axes: floats
        :param buttons: ints
        :param stamp_ns: source stamp (default: the log time)
        :param frame_id: header frame
        :param log_time_ns: arrival time (default: now)
        :return: True when queued
        """
        payload = {'header': None, 'axes': [float(v) for v in axes],
                   'buttons': [int(v) for v in buttons]}
        return self._offer_stamped('joy', payload, stamp_ns, frame_id, log_time_ns)

    def add_sim_success(self, success, log_time_ns=None):
        """
        Record the simulator's success flag (stored, and used by the 'sim'/'auto' policies).

        :param success: bool
        :param log_time_ns: arrival time (default: now)
        :return: True when queued
        """
        session = self._active
        if session is None:
            return False
        session.sim_success = bool(success)
        return self._offer('sim_success', log_time_ns, None, {'data': bool(success)})

    def status(self):
        """
        Describe what the recorder is doing, for recorder/status.

        :return: dict state, task, duration_s, frames, dropped, path, message, saving; while
            recording also marked, note, success_if_stopped and success_source (see
            :meth:`success_and_source`)
        """
        session = self._active
        if session is not None:
            verdict, source = self.success_and_source(session)
            return {'state': 'recording', 'task': session.task,
                    'request_id': session.request_id,
                    'duration_s': round(session.duration_s, 3), 'frames': session.frames,
                    'dropped': session.dropped_total, 'path': str(session.partial_path),
                    'message': f'recording episode {session.number}', 'saving': self.saving,
                    'marked': session.marked_success, 'note': session.mark_note,
                    'success_if_stopped': verdict, 'success_source': source}
        last = self.last_result
        if self.recovery_failures and not self.saving:
            return {'state': 'error', 'task': '', 'duration_s': 0.0, 'frames': 0, 'dropped': 0,
                    'path': self.recovery_failures[0]['partial'],
                    'message': self._recovery_refusal(), 'saving': 0}
        if self.saving:
            return {'state': 'saving', 'task': '', 'duration_s': 0.0, 'frames': 0, 'dropped': 0,
                    'path': '', 'message': f'writing {self.saving} episode(s)',
                    'saving': self.saving}
        if last is None:
            return {'state': 'idle', 'task': '', 'duration_s': 0.0, 'frames': 0, 'dropped': 0,
                    'path': '', 'message': 'ready', 'saving': 0}
        keys = ('state', 'task', 'request_id', 'duration_s', 'frames', 'dropped', 'path',
                'message')
        return {**{key: last.get(key) for key in keys}, 'saving': 0}

    def _on_session_done(self, session, result):
        with self._lock:
            self._finishing.discard(session)
            if self._active is session:  # a write error ended the episode while recording
                self._active = None
            self.last_result = result
        if self._on_finished is not None:
            try:
                self._on_finished(result)
            except Exception:  # noqa: B902 - a callback error must not kill the writer thread
                LOGGER.exception('on_finished callback failed for %s', result.get('path'))

    def wait_idle(self, timeout_s):
        """
        Wait until every stopped episode has been written.

        :param timeout_s: deadline
        :return: True when none is left being written
        """
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                pending = list(self._finishing)
            if not pending:
                return True
            for session in pending:
                if not session.join(max(0.0, deadline - time.monotonic())):
                    return False

    def close(self, timeout_s=10.0):
        """
        Shut down: an episode being recorded is set aside as recovered; others finish writing.

        :param timeout_s: deadline for the writer threads
        :return: True when everything was written in time
        """
        if self._active is not None:
            try:
                self._finish_active('interrupt')
            except RecorderError:
                pass
        return self.wait_idle(timeout_s)
