"""
Recording core of the demo recorder (ROS-free): a writer thread per episode behind a bounded queue.

The node (or a test, or the benchmark) hands samples to :class:`EpisodeRecorder` with ``add_*``
calls that never block: a sample is queued, or dropped and counted when the queue is full.  The
episode's writer thread compresses images, writes the MCAP file ``<name>.mcap.partial`` and, when
the episode is stopped, writes the final metadata, fsyncs, moves it into the rosbag2 bag
directory ``<name>/<name>.mcap`` with a ``metadata.yaml``
(:func:`~active_finetune.data.mcap_episode.finalise_bag`), fsyncs the directories and appends
the episode to the index (:mod:`active_finetune.data.episode_index`).  Only
then is the episode reported as saved.

Crash safety: complete MCAP chunks reach the file as they fill (and the file is flushed every
``flush_period_s``), so a killed recorder leaves a ``.partial`` whose complete records can be
read.  :func:`recover_leftovers` (run when a recorder starts) rewrites such a file as
``<name>.recovered.mcap`` (metadata recovered=true, success=false; never listed for training) or,
when nothing usable is in it, moves it to ``dataset_dir/quarantine/`` with a ``.reason.txt``.
A write error (e.g. a full disk) stops the episode, keeps the partial for recovery and reports
an error.  Recovery itself fails soft: a leftover it cannot rewrite for lack of space (or any
other OS error) is kept as it is, the recorder reports it in its status and refuses to record
until a retry (:meth:`EpisodeRecorder.retry_recovery`, also tried by every start) succeeds.

Layout of ``dataset_dir``::

    episode_000001_reach/                  saved (indexed): <name>.mcap + metadata.yaml
    episode_000002_push.mcap.partial       being recorded (or left by a crash)
    episode_000003_push.recovered.mcap     salvaged from a crash or an interrupted recording
    episodes.jsonl                         index, one JSON line per saved episode
    quarantine/episode_000004_x.mcap.partial + .reason.txt
"""

from dataclasses import dataclass, field
import hashlib
import json
import logging
import math
import os
from pathlib import Path
import queue
import re
import shutil
import threading
import time

from active_finetune.atomic_io import fsync_directory
from active_finetune.data.alignment import align_rows, DEFAULT_MAX_COMMAND_HOLD_S, StreamTimes
from active_finetune.data.episode_index import append_index_entry, bag_file_name, \
    next_episode_number, RECOVERED_SUFFIX
from active_finetune.data.mcap_episode import DEFAULT_TOPICS, EpisodeFileError, \
    EpisodeMcapWriter, finalise_bag, FORMAT_VERSION, header, IMAGE_FORMATS, image_message, \
    METADATA_NAME, rewrite_salvaged, START_METADATA_NAME

LOGGER = logging.getLogger(__name__)

PARTIAL_SUFFIX = '.partial'
"""Suffix of a file being written."""

QUARANTINE_DIR = 'quarantine'
"""Sub-directory of dataset_dir for leftovers that could not be recovered."""

SUCCESS_POLICIES = ('auto', 'sim', 'operator')
"""How the success of an episode is decided at stop (see :class:`RecorderSettings`)."""

STATES = ('idle', 'recording', 'saving', 'saved', 'discarded', 'error')
"""Values of the recorder's status 'state'."""

RECORDER_IMAGE_FORMATS = ('auto',) + IMAGE_FORMATS
"""Values of ``image_format``: 'auto' (lossless up to :data:`AUTO_PNG_MAX_PIXELS`), or fixed."""

AUTO_PNG_MAX_PIXELS = 256 * 256
"""With image_format 'auto', frames of at most this many pixels are stored as PNG, larger as JPEG.

A JPEG round trip (quality 95) of a 96x96 simulated frame changes its pixels by 2.5 levels on
average and up to 131 (chroma subsampling at colour edges), while the policy sees raw frames at
inference; a 480x480 frame area-resized to 96x96 after the round trip is off by 0.4 on average and
at most 20, and as PNG it would be 4x the bytes.
"""


def frame_format(image_format, shape):
    """
    Choose the compression of one camera frame.

    :param image_format: the recorder's ``image_format`` ('auto', 'png' or 'jpeg')
    :param shape: the frame's (height, width[, channels])
    :return: 'png' or 'jpeg'
    :raises ValueError: for an unknown image_format
    """
    if image_format == 'auto':
        return 'png' if math.prod(shape[:2]) <= AUTO_PNG_MAX_PIXELS else 'jpeg'
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f'image_format must be one of {RECORDER_IMAGE_FORMATS}, '
                         f'got {image_format!r}')
    return image_format


class RecorderError(RuntimeError):
    """A recorder request that cannot be carried out (the message says why)."""


class RecorderRefusedError(RecorderError):
    """Start refused: already recording, no task, or too little free disk."""


@dataclass
class RecorderSettings:
    """
    Parameters of the demo recorder (``active_finetune.nodes.demo_recorder_node``).

    :param dataset_dir: directory of episode files and their index
    :param max_linear_velocity_mps: teleop speed that is action 1.0 (stored in each file)
    :param gripper_joint_name: joint of joint_states giving the gripper opening
    :param gripper_open_position: that joint's position when fully open
    :param min_free_disk_mb: start is refused below this much free space
    :param queue_size: samples buffered between the subscriptions and the writer thread
    :param image_format: 'auto' (PNG up to 256x256 pixels, JPEG above), 'png' or 'jpeg'
    :param jpeg_quality: 1..100
    :param max_command_hold_s: longest a teleop twist is held over frames without a new one
    :param record_button: teleop/joy button whose press toggles start/stop (-1: none)
    :param success_on_stop: 'auto', 'sim' or 'operator' (see field descriptions)
    :param unmarked_success: success of an episode nobody marked (policies auto/operator)
    :param default_task: task when operator/next_task has suggested none ('' = refuse)
    :param max_duration_s: an episode is stopped and saved after this long
    :param min_steps: an episode with fewer aligned steps is not saved (quarantined)
    :param chunk_compression: MCAP chunk compression 'zstd', 'lz4' or 'none'
    :param status_period_s: status publishing period while recording
    :param flush_period_s: the writer flushes the file at least this often
    :param recovery_retry_period_s: how often a failed leftover recovery is retried
    """

    dataset_dir: str = field(default='data/episodes', metadata={
        'description': 'directory of episode files and episodes.jsonl (shared with selector and '
                       'trainer)', 'read_only': True})
    max_linear_velocity_mps: float = field(default=0.25, metadata={
        'description': "teleop speed recorded as action 1.0; must equal the policy node's "
                       'max_linear_velocity_mps (m/s)', 'range': (1e-6, 5.0), 'read_only': True})
    gripper_joint_name: str = field(default='gripper_finger_distance', metadata={
        'description': 'joint in joint_states whose position is the gripper opening (m or rad)',
        'read_only': True})
    gripper_open_position: float = field(default=0.1, metadata={
        'description': 'position of gripper_joint_name when fully open (m or rad)',
        'range': (1e-6, 10.0), 'read_only': True})
    min_free_disk_mb: float = field(default=500.0, metadata={
        'description': 'recorder/start is refused when dataset_dir has less free space (MB)',
        'range': (0.0, 1e12), 'read_only': True})
    queue_size: int = field(default=512, metadata={
        'description': 'samples buffered for the writer thread; more are dropped and counted '
                       '(count)', 'range': (1, 1_000_000), 'read_only': True})
    image_format: str = field(default='raw', metadata={
        'description': "camera frames in the file: 'raw' (sensor_msgs/Image rgb8 on the camera "
                       'topic: lossless, a played bag feeds the policy), or CompressedImage on '
                       "<topic>/compressed: 'auto' (PNG up to 256x256 px, JPEG above), 'png' or "
                       "'jpeg'", 'read_only': True})
    jpeg_quality: int = field(default=95, metadata={
        'description': 'JPEG quality of stored frames (1-100)', 'range': (1, 100),
        'read_only': True})
    max_command_hold_s: float = field(default=DEFAULT_MAX_COMMAND_HOLD_S, metadata={
        'description': 'a frame after which no teleop twist was issued before the next frame '
                       'takes the previous twist if it is at most this old, else it has no row '
                       "(set it to command_mux's command_timeout_s) (s)", 'range': (0.0, 10.0),
        'read_only': True})
    record_button: int = field(default=0, metadata={
        'description': 'teleop/joy button index whose press toggles start/stop (-1: none)',
        'range': (-1, 63), 'read_only': True})
    success_on_stop: str = field(default='auto', metadata={
        'description': "episode success at stop: 'operator' (recorder/mark_success, else "
                       "unmarked_success), 'sim' (latest sim/success during the episode, else "
                       "false), 'auto' (the mark, else sim/success, else unmarked_success)",
        'read_only': True})
    unmarked_success: bool = field(default=True, metadata={
        'description': 'success of an episode nobody marked (policies auto and operator)',
        'read_only': True})
    default_task: str = field(default='', metadata={
        'description': "task when operator/next_task has suggested none ('' = refuse to start)",
        'read_only': True})
    max_duration_s: float = field(default=300.0, metadata={
        'description': 'an episode is stopped and saved after this long (s)',
        'range': (0.1, 86400.0), 'read_only': True})
    min_steps: int = field(default=1, metadata={
        'description': 'episodes with fewer aligned steps (frames with state and command) are '
                       'not saved but quarantined (count)', 'range': (1, 1_000_000),
        'read_only': True})
    chunk_compression: str = field(default='zstd', metadata={
        'description': "MCAP chunk compression: 'zstd', 'lz4' or 'none'", 'read_only': True})
    status_period_s: float = field(default=0.5, metadata={
        'description': 'recorder/status period while recording (s)', 'range': (0.05, 60.0),
        'read_only': True})
    flush_period_s: float = field(default=0.5, metadata={
        'description': 'the writer flushes the partial file at least this often (s)',
        'range': (0.01, 60.0), 'read_only': True})
    recovery_retry_period_s: float = field(default=10.0, metadata={
        'description': 'while a leftover partial file could not be recovered (e.g. a full '
                       'disk), recovery is retried this often; recording is refused meanwhile '
                       '(s)', 'range': (0.05, 3600.0), 'read_only': True})

    def __post_init__(self):
        if not self.dataset_dir:
            raise ValueError('dataset_dir must not be empty')
        for name in ('max_linear_velocity_mps', 'gripper_open_position', 'max_duration_s',
                     'status_period_s', 'flush_period_s', 'recovery_retry_period_s'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f'{name} must be a positive finite number, got {value!r}')
        if not (math.isfinite(self.min_free_disk_mb) and self.min_free_disk_mb >= 0):
            raise ValueError(f'min_free_disk_mb must be >= 0, got {self.min_free_disk_mb!r}')
        if self.queue_size < 1:
            raise ValueError(f'queue_size must be >= 1, got {self.queue_size!r}')
        if self.image_format not in RECORDER_IMAGE_FORMATS:
            raise ValueError(f'image_format must be one of {RECORDER_IMAGE_FORMATS}, '
                             f'got {self.image_format!r}')
        if not (isinstance(self.max_command_hold_s, (int, float))
                and math.isfinite(self.max_command_hold_s) and self.max_command_hold_s >= 0):
            raise ValueError(f'max_command_hold_s must be a finite number >= 0, '
                             f'got {self.max_command_hold_s!r}')
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f'jpeg_quality must be in 1..100, got {self.jpeg_quality!r}')
        if self.success_on_stop not in SUCCESS_POLICIES:
            raise ValueError(f'success_on_stop must be one of {SUCCESS_POLICIES}, '
                             f'got {self.success_on_stop!r}')
        if self.chunk_compression not in ('zstd', 'lz4', 'none'):
            raise ValueError(f"chunk_compression must be 'zstd', 'lz4' or 'none', "
                             f'got {self.chunk_compression!r}')
        if not self.gripper_joint_name:
            raise ValueError('gripper_joint_name must not be empty')
        if self.min_steps < 1:
            raise ValueError(f'min_steps must be >= 1, got {self.min_steps!r}')


def episode_file_name(number, task):
    """
    Name of a saved episode file.

    :param number: episode number (>= 1)
    :param task: task name (characters other than letters, digits, '_' and '-' become '-')
    :return: e.g. 'episode_000003_pick-place.mcap'
    """
    safe_task = re.sub(r'[^A-Za-z0-9_-]+', '-', task).strip('-') or 'task'
    return f'episode_{number:06d}_{safe_task}.mcap'


def free_disk_mb(directory):
    """
    Free space of the file system holding ``directory``.

    :param directory: an existing directory
    :return: MB (1e6 bytes) available to this user
    """
    return shutil.disk_usage(directory).free / 1e6


def quarantine(path, reason):
    """
    Move a file that must not be used into ``<its dir>/quarantine/`` with a reason file.

    :param path: the file
    :param reason: why (written next to it as ``<name>.reason.txt``)
    :return: the new path
    """
    path = Path(path)
    target_dir = path.parent / QUARANTINE_DIR
    target_dir.mkdir(exist_ok=True)
    target = target_dir / path.name
    os.replace(path, target)
    (target_dir / f'{path.name}.reason.txt').write_text(reason + '\n')
    fsync_directory(target_dir)
    fsync_directory(path.parent)
    LOGGER.warning('quarantined %s: %s', target, reason)
    return target


def _write_recovered(source, target, metadata_updates):
    tmp = target.with_name(target.name + '.tmp')
    try:
        with open(tmp, 'wb') as stream:
            result = rewrite_salvaged(source, stream, metadata_updates)
            stream.flush()
            os.fsync(stream.fileno())
        if result['frames'] == 0:
            raise EpisodeFileError(source, 'no camera frame in the readable part')
        os.replace(tmp, target)
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError as exc:
            LOGGER.warning('cannot remove %s: %s', tmp, exc)
    fsync_directory(target.parent)
    return result


def recover_leftovers(dataset_dir):
    """
    Deal with the ``*.mcap.partial`` files a crashed recorder left in ``dataset_dir``.

    Each is rewritten as ``<name>.recovered.mcap`` (complete records only; metadata
    recovered=true, success=false) and removed, or quarantined when nothing usable is in it.
    Recovered files are not indexed: they are never trained on unless an operator renames them.
    An OS error on the way (ENOSPC on a full disk, EIO, a read-only file system) leaves the
    partial file where it is, with outcome 'kept': never raises for one file.

    :param dataset_dir: dataset directory
    :return: list of dicts: 'partial', 'outcome' ('recovered' | 'quarantined' | 'kept'),
        'path', 'frames', 'reason'
    """
    dataset_dir = Path(dataset_dir)
    results = []
    if not dataset_dir.is_dir():
        return results
    for stale in dataset_dir.glob(f'*{RECOVERED_SUFFIX}.tmp'):
        try:
            stale.unlink()
        except OSError as exc:
            LOGGER.warning('cannot remove %s: %s', stale, exc)
    for partial in sorted(dataset_dir.glob(f'*.mcap{PARTIAL_SUFFIX}')):
        stem = partial.name[:-len(f'.mcap{PARTIAL_SUFFIX}')]
        target = dataset_dir / f'{stem}{RECOVERED_SUFFIX}'
        try:
            results.append(_recover_one(partial, target))
        except OSError as exc:
            reason = f'recovery failed, partial file kept: {exc}'
            LOGGER.error('cannot recover leftover %s: %s', partial, exc)
            results.append({'partial': str(partial), 'outcome': 'kept', 'path': str(partial),
                            'frames': 0, 'reason': reason})
    return results


def _recover_one(partial, target):
    try:
        result = _write_recovered(partial, target, {'recovered': 'true', 'success': 'false'})
    except EpisodeFileError as exc:
        moved = quarantine(partial, f'unrecoverable partial episode: {exc.reason}')
        return {'partial': str(partial), 'outcome': 'quarantined', 'path': str(moved),
                'frames': 0, 'reason': exc.reason}
    partial.unlink()
    fsync_directory(partial.parent)
    reason = result['stop_reason'] or 'file was complete up to its last record'
    LOGGER.warning('recovered %d frames of crashed episode %s into %s (%s)',
                   result['frames'], partial, target, reason)
    return {'partial': str(partial), 'outcome': 'recovered', 'path': str(target),
            'frames': result['frames'], 'reason': reason}


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


_STOP = object()


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
            'stopped_unix_s': f'{time.time():.6f}'})
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
                            saved_unix_s=saved_unix_s)


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
        if success is not None:
            return bool(success)
        policy = self.settings.success_on_stop
        if policy == 'sim':
            return bool(session.sim_success)
        if session.marked_success is not None:
            return session.marked_success
        if policy == 'auto' and session.sim_success is not None:
            return session.sim_success
        return self.settings.unmarked_success

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
        return self._finish_active('save', self.resolve_success(session, success))

    def discard(self):
        """
        Stop recording and delete the episode.

        :return: the discarded :class:`EpisodeSession`
        :raises RecorderError: when not recording
        """
        return self._finish_active('discard')

    def mark_success(self, success):
        """
        Record the operator's verdict on the episode being recorded.

        :param success: bool
        :return: the session
        :raises RecorderError: when not recording
        """
        session = self._active
        if session is None:
            raise RecorderError('not recording: mark success while recording, before stop')
        session.marked_success = bool(success)
        return session

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

        :return: dict state, task, duration_s, frames, dropped, path, message, saving
        """
        session = self._active
        if session is not None:
            return {'state': 'recording', 'task': session.task,
                    'request_id': session.request_id,
                    'duration_s': round(session.duration_s, 3), 'frames': session.frames,
                    'dropped': session.dropped_total, 'path': str(session.partial_path),
                    'message': f'recording episode {session.number}', 'saving': self.saving}
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
