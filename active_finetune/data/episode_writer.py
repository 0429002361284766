"""
Episode writer: one episode being recorded, its bounded queue and its writer thread.

:class:`EpisodeSession` takes samples with :meth:`~EpisodeSession.offer` (never blocks: a full
queue drops and counts the sample).  Its thread compresses images, writes
``<name>.mcap.partial`` (complete MCAP chunks reach the file as they fill, and the file is
flushed every ``flush_period_s``, so a killed recorder leaves a readable partial file) and, once
the episode is finished, writes the final metadata, fsyncs, moves it into the rosbag2 bag
directory ``<name>/<name>.mcap`` with a ``metadata.yaml``
(:func:`~active_finetune.data.mcap_episode.finalise_bag`), fsyncs the directories and appends the
episode to the index (:mod:`active_finetune.data.episode_index`); then it reports the result to
its recorder (:mod:`active_finetune.data.recorder`).  A write error ends the episode and keeps
the partial file for :mod:`active_finetune.data.leftover_recovery`.
"""

import hashlib
import json
import logging
import os
from pathlib import Path
import queue
import re
import threading
import time

from active_finetune.atomic_io import fsync_directory
from active_finetune.data.alignment import align_rows, StreamTimes
from active_finetune.data.episode_index import append_index_entry, bag_file_name, \
    RECOVERED_SUFFIX
from active_finetune.data.leftover_recovery import PARTIAL_SUFFIX, quarantine
from active_finetune.data.mcap_episode import EpisodeMcapWriter, finalise_bag, FORMAT_VERSION, \
    image_message, METADATA_NAME, START_METADATA_NAME
from active_finetune.data.recorder_settings import frame_format

LOGGER = logging.getLogger(__name__)


def episode_file_name(number, task):
    """
    Name of a saved episode file.

    :param number: episode number (>= 1)
    :param task: task name (characters other than letters, digits, '_' and '-' become '-')
    :return: e.g. 'episode_000003_pick-place.mcap'
    """
    safe_task = re.sub(r'[^A-Za-z0-9_-]+', '-', task).strip('-') or 'task'
    return f'episode_{number:06d}_{safe_task}.mcap'


class _HashingStream:
    """A write-only file wrapper that hashes every byte written (the MCAP writer only appends)."""

    def __init__(self, raw):
        self.raw = raw
        self.sha256 = hashlib.sha256()

    def write(self, data):
        self.sha256.update(data)
        return self.raw.write(data)

    def tell(self):
        return self.raw.tell()

    def flush(self):
        self.raw.flush()


class EpisodeSession:
    """
    One episode being recorded: its bounded queue, writer thread and counters.

    Created by :meth:`EpisodeRecorder.start`; not used directly.

    :param recorder: the owning recorder (settings, topics, callbacks)
    :param number: episode number
    :param task: task name
    :param request_id: operator/next_task request this episode answers (or None)
    :param notes: operator notes
    """

    def __init__(self, recorder, number, task, request_id, notes):
        settings = recorder.settings
        self.settings = settings
        self.number = number
        self.task = task
        self.request_id = request_id
        self.notes = notes
        self.dataset_dir = Path(settings.dataset_dir)
        self.final_path = self.dataset_dir / episode_file_name(number, task)
        self.partial_path = self.final_path.with_name(self.final_path.name + PARTIAL_SUFFIX)
        self.started_unix_s = time.time()
        self._started_monotonic_s = time.monotonic()
        self._stopped_monotonic_s = None
        self._recorder = recorder
        self._queue = queue.Queue(maxsize=settings.queue_size)
        self._stop_requested = threading.Event()
        self._lock = threading.Lock()
        self.frames = 0
        self.dropped = {}
        self.marked_success = None
        self.mark_note = ''
        self.success_source = ''  # set at stop: what decided the success (recorder)
        self.sim_success = None
        self.outcome = None  # 'save' | 'discard' | 'interrupt', set by finish()
        self.success = None
        self.failed = None
        self.topics = dict(recorder.topics)
        self._first_log_ns = {}
        # (header stamps, log times) of the streams the rows are built from, for the step count
        self._times = {role: ([], []) for role in ('image', 'joint_states', 'ee_pose', 'twist',
                                                   'gripper')}
        self.start_metadata = {
            'format_version': FORMAT_VERSION, 'task': task, 'operator_notes': notes,
            'max_linear_velocity_mps': repr(float(settings.max_linear_velocity_mps)),
            'gripper_joint_name': settings.gripper_joint_name,
            'gripper_open_position': repr(float(settings.gripper_open_position)),
            'request_id': '' if request_id is None else str(int(request_id)),
            'started_unix_s': f'{self.started_unix_s:.6f}', 'image_format': settings.image_format,
            'max_command_hold_s': repr(float(settings.max_command_hold_s)),
            'topics': json.dumps(self.topics, sort_keys=True), 'recovered': 'false',
            'success': 'false'}
        self._file = open(self.partial_path, 'xb')
        self._stream = _HashingStream(self._file)
        try:
            self._writer = EpisodeMcapWriter(self._stream, topics=self.topics,
                                             compression=settings.chunk_compression)
            self._writer.add_metadata(START_METADATA_NAME, self.start_metadata)
            self._file.flush()
        except BaseException:
            self._file.close()
            self.partial_path.unlink()
            raise
        self._thread = threading.Thread(target=self._run, name=f'episode-writer-{number}',
                                        daemon=True)
        self._thread.start()

    @property
    def duration_s(self):
        """:return: seconds since start (frozen at stop)."""
        end = self._stopped_monotonic_s or time.monotonic()
        return end - self._started_monotonic_s

    @property
    def dropped_total(self):
        """:return: samples dropped so far, all streams."""
        with self._lock:
            return sum(self.dropped.values())

    def offer(self, role, item):
        """
        Queue a sample for the writer thread, or count it as dropped when the queue is full.

        :param role: stream role
        :param item: (log_time_ns, publish_time_ns, payload)
        :return: True when queued
        """
        if self._stop_requested.is_set() or self.failed is not None:
            return False
        try:
            self._queue.put_nowait((role, item))
        except queue.Full:
            with self._lock:
                self.dropped[role] = self.dropped.get(role, 0) + 1
            return False
        if role == 'image':
            with self._lock:
                self.frames += 1
        return True

    def finish(self, outcome, success=None):
        """
        Stop taking samples and let the writer thread save, discard or set the episode aside.

        :param outcome: 'save', 'discard' or 'interrupt' (saved aside as recovered)
        :param success: the episode's success (for 'save')
        """
        self.outcome = outcome
        self.success = success
        self._stopped_monotonic_s = time.monotonic()
        self._stop_requested.set()

    def join(self, timeout_s):
        """
        Wait for the writer thread.

        :param timeout_s: deadline
        :return: True when the thread has ended
        """
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _write_item(self, role, item):
        log_ns, publish_ns, payload = item
        if role == 'image':
            rgb, frame_id = payload
            try:
                payload = image_message(
                    rgb, publish_ns, frame_id,
                    frame_format(self.settings.image_format, getattr(rgb, 'shape', (0, 0))),
                    self.settings.jpeg_quality)
            except ValueError as exc:
                LOGGER.warning('episode %d: frame not stored: %s', self.number, exc)
                with self._lock:
                    self.dropped['image'] = self.dropped.get('image', 0) + 1
                    self.frames -= 1
                return
        self._writer.write(role, payload, log_ns, publish_ns)
        if role != 'joint_states' or self.settings.gripper_joint_name in payload['name']:
            self._first_log_ns.setdefault(role, log_ns)
            if role in self._times:
                stamps, log_times = self._times[role]
                stamps.append(publish_ns)
                log_times.append(log_ns)

    def _steps(self):
        """Count the rows :func:`load_episode` will give (same rule, same times)."""
        if any(not log_times for _, log_times in self._times.values()):
            return 0
        times = {role: StreamTimes(None if role == 'gripper' else stamps, log_times)
                 for role, (stamps, log_times) in self._times.items()}
        return len(align_rows(times['image'], times['joint_states'], times['ee_pose'],
                              times['twist'], times['gripper'],
                              int(round(self.settings.max_command_hold_s * 1e9))))

    def _missing_streams(self):
        needed = ('image', 'joint_states', 'ee_pose', 'twist', 'gripper')
        return [self.topics[role] for role in needed if role not in self._first_log_ns]

    def _run(self):
        last_flush_s = time.monotonic()
        try:
            while True:
                try:
                    role, item = self._queue.get(timeout=0.05)
                except queue.Empty:
                    if self._stop_requested.is_set():
                        break
                    role = None
                if role is not None:
                    self._write_item(role, item)
                if time.monotonic() - last_flush_s > self.settings.flush_period_s:
                    self._file.flush()
                    last_flush_s = time.monotonic()
            result = self._finalise()
        except Exception as exc:  # noqa: B902 - the thread's edge: any failure is reported
            self.failed = exc
            result = self._fail(exc)
        self._recorder._on_session_done(self, result)

    def _fail(self, exc):
        try:
            self._file.close()
        except OSError:
            pass
        message = (f'write error on {self.partial_path}: {exc!r}; the partial file is kept and '
                   'will be recovered at the next start')
        LOGGER.error(message)
        return self._result('error', message, path=str(self.partial_path))

    def _result(self, state, message, **extra):
        result = {'state': state, 'task': self.task, 'request_id': self.request_id,
                  'duration_s': round(self.duration_s, 3), 'frames': self.frames,
                  'dropped': self.dropped_total, 'message': message, 'path': '',
                  'number': self.number}
        result.update(extra)
        return result

    def _finalise(self):
        steps = self._steps()
        if self.outcome == 'discard':
            self._file.close()
            self.partial_path.unlink()
            fsync_directory(self.dataset_dir)
            return self._result('discarded', f'episode {self.number} ({self.task}) discarded')
        interrupted = self.outcome == 'interrupt'
        metadata = dict(self.start_metadata)
        metadata.update({
            'success': 'true' if (self.success and not interrupted) else 'false',
            'duration_s': f'{self.duration_s:.3f}', 'frames': str(self.frames),
            'steps': str(steps), 'dropped': json.dumps(self.dropped, sort_keys=True),
            'recovered': 'true' if interrupted else 'false',
            'stopped_unix_s': f'{time.time():.6f}',
            'success_source': self.success_source if not interrupted else 'interrupted',
            'operator_mark': {None: '', True: 'success', False: 'failure'}[self.marked_success],
            'operator_notes': '; '.join(n for n in (self.notes, self.mark_note) if n)})
        if interrupted:
            metadata['interrupted'] = 'true'
        self._writer.add_metadata(METADATA_NAME, metadata)
        self._writer.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        sha256 = self._stream.sha256.hexdigest()
        if interrupted:
            stem = self.final_path.name[:-len('.mcap')]
            target = self.dataset_dir / f'{stem}{RECOVERED_SUFFIX}'
            os.replace(self.partial_path, target)
            fsync_directory(self.dataset_dir)
            return self._result('discarded', f'recording of {self.task} interrupted at shutdown; '
                                             f'set aside as {target.name} (not for training)',
                                path=str(target), sha256=sha256)
        if steps < self.settings.min_steps:
            missing = self._missing_streams()
            reason = (f'only {steps} aligned steps (min_steps {self.settings.min_steps}) from '
                      f'{self.frames} frames' + (f'; nothing received on {missing}'
                                                 if missing else ''))
            quarantine(self.partial_path, reason)
            return self._result('error', f'episode {self.number} not saved: {reason}')
        bag_dir = self.final_path.with_suffix('')  # rosbag2 bag: <bag>/<bag>.mcap, metadata
        data_path = finalise_bag(self.partial_path, bag_dir)
        saved_unix_s = time.time()
        entry = {'file': bag_file_name(bag_dir.name), 'task': self.task,
                 'success': bool(self.success),
                 'frames': self.frames, 'steps': steps, 'sha256': sha256,
                 'saved_unix_s': saved_unix_s, 'request_id': self.request_id,
                 'episode_number': self.number}
        message = f'saved episode {self.number}: {bag_dir.name}/ ({steps} steps)'
        try:
            append_index_entry(self.dataset_dir, entry)
        except OSError as exc:
            message += f'; index append failed ({exc}), it is re-indexed on the next listing'
            LOGGER.error('cannot append %s to the index: %s', self.final_path, exc)
        return self._result('saved', message, path=str(data_path.resolve()),
                            bag_path=str(bag_dir.resolve()),
                            sha256=sha256, steps=steps, success=bool(self.success),
                            success_source=self.success_source, saved_unix_s=saved_unix_s)
