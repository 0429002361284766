"""
Hot-swapping policy weights: verify a checkpoint off the control thread, swap between cycles.

The policy node's control loop must never wait for disk or weight loading, so:

- :meth:`PolicyHotSwap.submit` hands a :class:`CheckpointAnnouncement` (the ``trainer/checkpoint``
  JSON) to one background loader thread and returns at once;
- the loader verifies it (sha256 against the announcement, safetensors only, architecture, finite
  tensors, and a smoke forward pass giving a finite action) and parks the ready model;
- the control loop calls :meth:`PolicyHotSwap.swap_if_ready` between two cycles: a reference swap.

A refused checkpoint is logged, reported (:attr:`PolicyHotSwap.last_refusal`, numbered so each
new refusal is told apart) and the running weights stay.  Besides a failed verification, an
announcement is refused when its version is lower than the running one (going back is
:meth:`PolicyHotSwap.rollback`'s job) or its task list differs from the running policy's in names
or order (a task's id would select another task's embedding).  The versions replaced by a swap
are kept (a few) so :meth:`PolicyHotSwap.rollback` can go back to the previous good one.

Weights by reference: an announcement names the checkpoint by path, sha256 and size.  The loader
(:func:`fetching_loader`) uses a copy fetched earlier, else the announced directory when its
weights hash to the announced sha256 (shared disk, same machine), else fetches the bytes from the
trainer (:mod:`active_finetune.policy.transfer`: chunked, each chunk and the whole file verified by
sha256, written atomically) on the loader thread; the running weights act meanwhile.

Large announcements of older trainers (weights carried as base64) are parsed without holding the
GIL for long,
so the control thread keeps its rate while the loader works: the ``weights_b64`` value is located
and decoded in pieces of :data:`B64_CHUNK_CHARS`, and only the rest of the message (at most
:data:`MAX_ANNOUNCEMENT_JSON_CHARS`) goes through the payload decoder
(:func:`active_finetune.payloads.decode_checkpoint`, the one contract of ``trainer/checkpoint``).

Also here: :class:`PolicyNodeConfig`, the policy node's parameters (ROS-free so the graph
description and tests can read it without rclpy).
"""

import binascii
from collections import deque
import dataclasses
from dataclasses import dataclass, field
import functools
import logging
import math
import re
import threading
import time

from active_finetune.data.episode import PROPRIO_DIM
from active_finetune.payloads import CheckpointAnnounced, decode_checkpoint, PayloadError
from active_finetune.policy.checkpoint import CheckpointError, load_checkpoint, policy_from_bytes
from active_finetune.policy.inference import PolicyInference
from active_finetune.safety import DEFAULT_MAX_PROPRIO_STD, DEFAULT_WORKSPACE_MAX_M, \
    DEFAULT_WORKSPACE_MIN_M, ProprioLimits
import numpy as np

_LOG = logging.getLogger(__name__)

HISTORY_DEPTH = 3
"""Good versions kept for rollback."""
B64_CHUNK_CHARS = 1 << 18
"""Base64 characters decoded (or scanned) per call, a multiple of 4: about 1 ms each, after which
another thread (the control loop) can take the GIL."""
MAX_ANNOUNCEMENT_JSON_CHARS = 1 << 20
"""An announcement longer than this must carry its bulk in ``weights_b64``: the rest of the
message may not exceed this many characters (one JSON parse holds the GIL throughout)."""
_KEY_STR = '"weights_b64"'
_KEY_BYTES = _KEY_STR.encode()
_AFTER_KEY_STR = re.compile(r'\s*:\s*"')
_AFTER_KEY_BYTES = re.compile(rb'\s*:\s*"')
_VALUE_END_STR = re.compile(r'["\\]')
_VALUE_END_BYTES = re.compile(rb'["\\]')


class CheckpointAnnouncementError(PayloadError):
    """A ``trainer/checkpoint`` message that is not JSON or lacks what is needed to load it."""


class CheckpointRefusedError(RuntimeError):
    """A checkpoint that failed verification; the running weights stay."""


class RollbackError(RuntimeError):
    """A rollback with no earlier good version to go back to."""


@dataclass(frozen=True)
class CheckpointAnnouncement:
    """
    Where a checkpoint is and what it must hash to (the ``trainer/checkpoint`` payload).

    :param version: checkpoint version (0 for the initial one)
    :param sha256: hex sha256 of ``model.safetensors`` announced by the trainer
    :param path: checkpoint directory ('' when the weights travel in the message)
    :param config: the checkpoint's ``config.json`` dict, or None
    :param weights: the safetensors bytes carried in the message, or None
    :param size: announced size of the weights (bytes), or None
    :param chunk_bytes: chunk size the trainer serves them in, or None (not served)
    """

    version: int
    sha256: str
    path: str = ''
    config: dict | None = None
    weights: bytes | None = None
    size: int | None = None
    chunk_bytes: int | None = None

    @classmethod
    def from_json(cls, text):
        """
        Parse a ``trainer/checkpoint`` message.

        Weights carried in the message (``weights_b64`` with ``config``) are preferred, so a
        robot PC without the trainer's disk can load them; otherwise ``path`` is used.

        A message longer than :data:`MAX_ANNOUNCEMENT_JSON_CHARS` is parsed in pieces (see the
        module docstring): it must have a top-level ``weights_b64`` string without JSON escapes
        holding all but at most that many characters.

        :param text: JSON text: str, or UTF-8 bytes / bytearray / memoryview
        :return: :class:`CheckpointAnnouncement`
        :raises CheckpointAnnouncementError: for invalid JSON, a missing or mistyped field, bad
            base64, neither weights nor a path, or a large message of another shape
        """
        weights_b64 = None
        if len(text) > MAX_ANNOUNCEMENT_JSON_CHARS:
            text, weights_b64 = _split_weights(text)
        elif isinstance(text, memoryview):
            text = bytes(text)
        try:
            payload = decode_checkpoint(text)
        except PayloadError as error:
            raise CheckpointAnnouncementError(str(error), error.topic, error.field,
                                              error.value) from None
        if weights_b64 is not None:
            if payload.weights_b64 != '':
                raise CheckpointAnnouncementError(
                    'trainer/checkpoint: the "weights_b64" found first is not the top-level one '
                    '(or the key appears twice); a large message needs it once, at the top level',
                    CheckpointAnnounced.TOPIC, 'weights_b64')
        else:
            weights_b64 = payload.weights_b64
        version = payload.version
        weights = None
        if weights_b64:
            if payload.config is None:
                raise CheckpointAnnouncementError(
                    f'trainer/checkpoint version {version} carries weights_b64 without a '
                    f'"config" object', CheckpointAnnounced.TOPIC, 'config')
            try:
                weights = decode_base64(weights_b64)
            except (binascii.Error, TypeError, ValueError) as error:
                raise CheckpointAnnouncementError(
                    f"trainer/checkpoint version {version}: field 'weights_b64' is not base64 "
                    f'({error})', CheckpointAnnounced.TOPIC, 'weights_b64') from None
        elif not payload.path and payload.chunk_bytes is None:
            raise CheckpointAnnouncementError(
                f'trainer/checkpoint version {version} has neither a path nor served weights',
                CheckpointAnnounced.TOPIC, 'path', payload.path)
        return cls(version=version, sha256=payload.sha256, path=payload.path,
                   config=payload.config, weights=weights, size=payload.size_bytes,
                   chunk_bytes=payload.chunk_bytes)

    @property
    def source(self):
        """:return: where the weights come from, for messages."""
        return 'trainer/checkpoint message' if self.weights is not None else self.path


def decode_base64(value):
    """
    Decode base64 in pieces of :data:`B64_CHUNK_CHARS`, so no single call holds the GIL for long.

    Strict: only the base64 alphabet, padding only at the end (like ``b64decode(validate=True)``).

    :param value: base64 text: str (ASCII) or a bytes-like object
    :return: bytes
    :raises binascii.Error: for characters outside the alphabet, bad padding or a length that is
        not a multiple of 4
    :raises TypeError: for a value that is neither str nor bytes-like
    """
    if not isinstance(value, (str, bytes, bytearray, memoryview)):
        raise TypeError(f'base64 must be a string, got {type(value).__name__}')
    if isinstance(value, str) and not value.isascii():
        raise binascii.Error('non-ASCII character in base64')
    if len(value) % 4:
        raise binascii.Error(f'base64 length {len(value)} is not a multiple of 4')
    view = memoryview(value) if not isinstance(value, str) else value
    pieces = [binascii.a2b_base64(view[start:start + B64_CHUNK_CHARS], strict_mode=True)
              for start in range(0, len(value), B64_CHUNK_CHARS)]
    return b''.join(pieces)


def _split_weights(data):
    """
    Cut the ``weights_b64`` value out of a large announcement, scanning in bounded pieces.

    :param data: the JSON text (str, or UTF-8 bytes / bytearray / memoryview)
    :return: (the rest of the message with an empty ``weights_b64``, as str or bytes;
        the base64 value, as str or memoryview)
    :raises CheckpointAnnouncementError: when there is no ``weights_b64`` string, it holds a
        JSON escape or is unterminated, or the rest is larger than
        :data:`MAX_ANNOUNCEMENT_JSON_CHARS`
    """
    is_text = isinstance(data, str)
    if not is_text:
        data = memoryview(data).cast('B')
    key = _KEY_STR if is_text else _KEY_BYTES
    after_key = _AFTER_KEY_STR if is_text else _AFTER_KEY_BYTES
    value_end = _VALUE_END_STR if is_text else _VALUE_END_BYTES
    size = len(data)
    key_at = -1
    for start in range(0, size, B64_CHUNK_CHARS):
        # Overlapping windows, so a key across a window border is found.
        window = data[start:start + B64_CHUNK_CHARS + len(key)]
        found = window.find(key) if is_text else bytes(window).find(key)
        if found >= 0:
            key_at = start + found
            break
    opening = after_key.match(data, key_at + len(key), key_at + len(key) + 64) \
        if key_at >= 0 else None
    if opening is None:
        raise CheckpointAnnouncementError(
            f'trainer/checkpoint is {size} characters without a "weights_b64" string; a message '
            f'over {MAX_ANNOUNCEMENT_JSON_CHARS} characters must carry its bulk there')
    value_start = opening.end()
    value_stop = -1
    for start in range(value_start, size, B64_CHUNK_CHARS):
        found = value_end.search(data, start, min(size, start + B64_CHUNK_CHARS))
        if found is not None:
            if found.group() in ('\\', b'\\'):
                raise CheckpointAnnouncementError(
                    'trainer/checkpoint: weights_b64 holds a JSON escape at character '
                    f'{found.start()}; base64 needs none')
            value_stop = found.start()
            break
    if value_stop < 0:
        raise CheckpointAnnouncementError('trainer/checkpoint: weights_b64 is not terminated')
    rest_size = size - (value_stop - value_start)
    if rest_size > MAX_ANNOUNCEMENT_JSON_CHARS:
        raise CheckpointAnnouncementError(
            f'trainer/checkpoint has {rest_size} characters besides weights_b64; at most '
            f'{MAX_ANNOUNCEMENT_JSON_CHARS} are parsed')
    if is_text:
        rest = data[:value_start] + data[value_stop:]
    else:
        rest = bytes(data[:value_start]) + bytes(data[value_stop:])
    return rest, data[value_start:value_stop]


@dataclass(frozen=True)
class LoadedPolicy:
    """
    A verified policy ready to act.

    :param runner: the :class:`PolicyInference` wrapping it
    :param version: checkpoint version
    :param sha256: hash of its weights
    :param source: path or 'trainer/checkpoint message'
    """

    runner: PolicyInference
    version: int
    sha256: str
    source: str

    @property
    def tasks(self):
        """:return: the task names the policy knows."""
        return self.runner.config.tasks

    @functools.cached_property
    def proprio_stats(self):
        """:return: (mean, std) of the proprioception the policy was trained on, float tuples."""
        limits = ProprioLimits.from_policy(self.runner.policy)
        return limits.mean, limits.std


@dataclass(frozen=True)
class Refusal:
    """
    A checkpoint that was refused, and why.

    :param version: the announced version (None when the message could not be parsed)
    :param sha256: the announced hash ('' when unknown)
    :param reason: what failed
    :param number: how many refusals the :class:`PolicyHotSwap` had made with this one (1, 2,
        ...), so two alike refusals are still told apart
    """

    version: int | None
    sha256: str
    reason: str
    number: int = 0


@dataclass(frozen=True)
class SwapEvent:
    """
    What :meth:`PolicyHotSwap.swap_if_ready` did this cycle.

    :param swapped: the policy now active, or None
    :param refusal: a checkpoint refused since the last call, or None
    """

    swapped: LoadedPolicy | None = None
    refusal: Refusal | None = None


def smoke_test(runner):
    """
    Run one forward pass on a blank observation and check the action is finite.

    :param runner: :class:`PolicyInference`
    :raises CheckpointRefusedError: when the action has NaN or inf
    """
    config = runner.config
    image = None
    state = None
    if config.observation == 'image':
        image = np.zeros((config.image_size, config.image_size, 3), dtype=np.uint8)
    else:
        state = np.zeros(config.state_dim, dtype=np.float32)
    action = runner.act(config.tasks[0], np.zeros(PROPRIO_DIM, dtype=np.float32), image, state)
    if not np.isfinite(action).all():
        raise CheckpointRefusedError(
            f'smoke forward pass gave a non-finite action {action.tolist()}')


def compatibility_problem(active, version, tasks=None):
    """
    Say why a checkpoint may not replace the running policy, whatever its verification says.

    :param active: the running :class:`LoadedPolicy`, or None (then anything goes)
    :param version: the candidate's version
    :param tasks: the candidate's task names in id order, or None when not known yet
    :return: the reason, or '' when it may replace it
    """
    if active is None:
        return ''
    if version < active.version:
        return (f'version {version} is lower than the running version {active.version}; '
                'going back is the job of the policy/rollback service, not of an announcement')
    if tasks is not None and tuple(tasks) != tuple(active.tasks):
        if sorted(tasks) == sorted(active.tasks):
            return (f'task list {list(tasks)} has the running tasks in another order '
                    f'(running {list(active.tasks)}): each task would get the embedding of '
                    'another')
        return f'task list {list(tasks)} differs from the running one {list(active.tasks)}'
    return ''


def load_verified(announcement, device):
    """
    Load and verify an announced checkpoint (blocking: call it off the control thread).

    :param announcement: :class:`CheckpointAnnouncement`
    :param device: torch device
    :return: :class:`LoadedPolicy`
    :raises CheckpointRefusedError: on any hash, format, architecture or output problem
    """
    try:
        if announcement.weights is not None:
            policy = policy_from_bytes(announcement.weights, announcement.config,
                                       expected_sha256=announcement.sha256, device=device,
                                       source=announcement.source)
        else:
            policy, _ = load_checkpoint(announcement.path, expected_sha256=announcement.sha256,
                                        device=device)
    except (CheckpointError, KeyError, TypeError) as error:
        raise CheckpointRefusedError(str(error)) from None
    runner = PolicyInference(policy, device)
    smoke_test(runner)
    return LoadedPolicy(runner=runner, version=announcement.version, sha256=announcement.sha256,
                        source=announcement.source)


def fetching_loader(cache_dir, fetch, timeout_s, load=load_verified):
    """
    Make a loader for :class:`PolicyHotSwap` that finds or fetches the announced weights first.

    :param cache_dir: where fetched checkpoints are kept
    :param fetch: callable(sha256, size, chunk_bytes, config, timeout_s) -> checkpoint directory
        (:meth:`active_finetune.nodes.checkpoint_transfer.CheckpointFetcher.fetch`)
    :param timeout_s: longest transfer
    :param load: callable(announcement, device) -> LoadedPolicy, given the local directory
    :return: callable(announcement, device) -> :class:`LoadedPolicy`
    """
    from active_finetune.policy.transfer import local_checkpoint, TransferError

    def loader(announcement, device):
        if announcement.weights is not None:
            return load(announcement, device)
        served = announcement.chunk_bytes is not None

        def fetch_it():
            return fetch(announcement.sha256, announcement.size, announcement.chunk_bytes,
                         announcement.config, timeout_s)
        try:
            path, where = local_checkpoint(announcement.path, announcement.sha256, cache_dir,
                                           fetch_it if served else None)
        except (TransferError, OSError) as error:
            raise CheckpointRefusedError(f'cannot get the weights: {error}') from None
        _LOG.info('checkpoint version %d: weights %s (%s)', announcement.version, path, where)
        return load(dataclasses.replace(announcement, path=str(path)), device)
    return loader


def load_initial(path, device, version=None):
    """
    Load the start-up checkpoint from disk, verified against its own config.

    :param path: checkpoint directory
    :param device: torch device
    :param version: version to report; None reads ``provenance.version`` from the config, else 0
    :return: :class:`LoadedPolicy`
    :raises CheckpointRefusedError: when it cannot be loaded or verified
    """
    try:
        policy, config = load_checkpoint(path, device=device)
    except CheckpointError as error:
        raise CheckpointRefusedError(str(error)) from None
    if version is None:
        provenance_version = config.get('provenance', {}).get('version', 0)
        version = provenance_version if isinstance(provenance_version, int) else 0
    runner = PolicyInference(policy, device)
    smoke_test(runner)
    return LoadedPolicy(runner=runner, version=version, sha256=config['weights_sha256'],
                        source=str(path))


class PolicyHotSwap:
    """
    The active policy, a background loader for new checkpoints, and the versions kept for rollback.

    Thread model: :meth:`submit` from any thread (a subscription callback); :meth:`swap_if_ready`,
    :meth:`rollback` and :attr:`active` from the control thread (or under its lock).  The loader
    thread only touches the ready slot, under a lock.

    :param device: torch device the policies run on
    :param initial: the :class:`LoadedPolicy` to start with, or None
    :param loader: callable(announcement, device) -> LoadedPolicy; :func:`load_verified` by
        default (tests inject one)
    """

    def __init__(self, device, initial=None, loader=load_verified):
        self.device = device
        self.active = initial
        self._loader = loader
        self._history = deque(maxlen=HISTORY_DEPTH)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending = None
        self._ready = None
        self._refusal = None
        self._refusals = 0
        self.last_refusal = None
        self.loading = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name='policy-loader', daemon=True)
        self._thread.start()

    def submit(self, announcement):
        """
        Queue an announced checkpoint for loading; a newer submission replaces a queued one.

        :param announcement: :class:`CheckpointAnnouncement`, or the raw ``trainer/checkpoint``
            JSON text as str or UTF-8 bytes / memoryview (then parsing and base64 decoding also
            happen on the loader thread, so a message carrying megabytes of weights costs the
            caller nothing; a malformed one becomes a refusal)
        """
        with self._wake:
            self._pending = announcement
            self._wake.notify()

    def _run(self):
        while True:
            with self._wake:
                while self._pending is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                announcement, self._pending = self._pending, None
                self.loading = True
            started_s = time.monotonic()
            try:
                if isinstance(announcement, (str, bytes, bytearray, memoryview)):
                    announcement = self._parse(announcement)
                    if announcement is None:
                        continue
                problem = compatibility_problem(self.active, announcement.version)
                if problem:
                    raise CheckpointRefusedError(problem)
                loaded = self._loader(announcement, self.device)
                problem = compatibility_problem(self.active, loaded.version, loaded.tasks)
                if problem:
                    raise CheckpointRefusedError(problem)
            except CheckpointRefusedError as error:
                _LOG.error('refusing checkpoint version %d (%s): %s', announcement.version,
                           announcement.source, error)
                self._refuse(announcement.version, announcement.sha256, str(error))
                continue
            except Exception as error:  # noqa: B902 - the loader thread must survive anything
                version = getattr(announcement, 'version', None)
                _LOG.exception('refusing checkpoint version %s', version)
                self._refuse(version, getattr(announcement, 'sha256', ''),
                             f'unexpected error while loading: {error!r}')
                continue
            _LOG.info('checkpoint version %d verified and ready in %.2f s', loaded.version,
                      time.monotonic() - started_s)
            with self._lock:
                self._ready = loaded
                self.loading = False

    def _refuse(self, version, sha256, reason):
        """Record a refusal for the next :meth:`swap_if_ready` (loader thread)."""
        with self._lock:
            self._refusals += 1
            self._refusal = Refusal(version, sha256, reason, self._refusals)
            self.loading = False

    def _parse(self, text):
        try:
            announcement = CheckpointAnnouncement.from_json(text)
        except CheckpointAnnouncementError as error:
            _LOG.error('ignoring trainer/checkpoint: %s', error)
            self._refuse(None, '', str(error))
            return None
        active = self.active
        if active is not None and announcement.sha256 == active.sha256:
            _LOG.info('checkpoint version %d is the one already running', announcement.version)
            with self._lock:
                self.loading = False
            return None
        return announcement

    def swap_if_ready(self):
        """
        Make a verified checkpoint active (call between two control cycles; never blocks long).

        :return: :class:`SwapEvent` saying what was swapped in or refused since the last call
        """
        with self._lock:
            ready, self._ready = self._ready, None
            refusal, self._refusal = self._refusal, None
            if ready is not None:
                # The running policy may have changed since the loader checked (a rollback).
                problem = compatibility_problem(self.active, ready.version, ready.tasks)
                if problem:
                    _LOG.error('refusing checkpoint version %d: %s', ready.version, problem)
                    self._refusals += 1
                    refusal = Refusal(ready.version, ready.sha256, problem, self._refusals)
                    ready = None
        if refusal is not None:
            self.last_refusal = refusal
        if ready is not None:
            if self.active is not None:
                self._history.append(self.active)
            self.active = ready
        return SwapEvent(swapped=ready, refusal=refusal)

    def rollback(self):
        """
        Go back to the previous good version; the current one is dropped.

        :return: the :class:`LoadedPolicy` now active
        :raises RollbackError: when no earlier version is kept
        """
        if not self._history:
            current = None if self.active is None else self.active.version
            raise RollbackError(f'no earlier good version to roll back to (running {current})')
        dropped = self.active
        self.active = self._history.pop()
        _LOG.warning('rolled back from version %s to version %d',
                     None if dropped is None else dropped.version, self.active.version)
        return self.active

    @property
    def history_versions(self):
        """:return: the versions kept for rollback, oldest first."""
        return [loaded.version for loaded in self._history]

    def wait_idle(self, timeout_s):
        """
        Wait until nothing is queued or loading (for tests and benchmarks).

        :param timeout_s: deadline in seconds
        :return: True when idle in time
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._pending is None and not self.loading:
                    return True
            time.sleep(0.005)
        return False

    def close(self, timeout_s=5.0):
        """
        Stop the loader thread (a load in progress finishes first).

        :param timeout_s: how long to wait for it
        """
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout_s)


@dataclass
class PolicyNodeConfig:
    """
    Parameters of the policy node (``active_finetune.nodes.policy_node``).

    :param checkpoint_path: start-up checkpoint directory
    :param device: 'auto', 'cpu' or 'cuda[:N]'
    :param control_rate_hz: control cycles per second
    :param cycle_trigger: 'timer' (act every control period on the newest inputs) or 'image'
        (act once per new image, camera-paced; the timer then only watches for stale inputs)
    :param max_input_age_s: an image, joint state or pose older than this blocks the output
    :param max_linear_velocity_mps: m/s per unit of normalised action, and the per-axis limit
    :param gripper_joint_name: joint of ``joint_states`` giving the gripper opening
    :param gripper_open_position: that joint's position when fully open (opening 1)
    :param task: task to run at start ('' = idle until policy/task names one)
    :param frame_id: frame of the published twist
    :param torch_threads: torch intra-op threads on the CPU
    :param max_proprio_std: an end-effector coordinate further than this many standard
        deviations from the checkpoint's training mean blocks the output (0: no such check)
    :param workspace_min_m: lower corner x, y, z of the robot's workspace box (m)
    :param workspace_max_m: upper corner x, y, z of the workspace box (m); an end-effector
        position outside the box blocks the output
    :param checkpoint_cache_dir: where weights fetched from the trainer are kept
    :param checkpoint_fetch_timeout_s: longest transfer of announced weights
    :param max_image_pixels: a camera image with more pixels (width x height), or more data
        than 4 bytes per such pixel, is refused before it is converted and blocks the output
    """

    checkpoint_path: str = field(default='checkpoints/pretrained_mt10_skewed', metadata={
        'description': 'start-up checkpoint directory (model.safetensors + config.json)',
        'read_only': True})
    device: str = field(default='auto', metadata={
        'description': "torch device: 'auto' (CUDA when present), 'cpu' or 'cuda[:N]'",
        'read_only': True})
    control_rate_hz: float = field(default=20.0, metadata={
        'description': 'control cycles per second (Hz)', 'range': (1.0, 500.0),
        'read_only': True})
    cycle_trigger: str = field(default='timer', metadata={
        'description': "'timer': one action per control period on the newest inputs; 'image': "
                       'one action per new image (camera-paced, lowest latency)',
        'read_only': True})
    max_input_age_s: float = field(default=0.15, metadata={
        'description': 'an image, joint state or pose older than this gives zero output (s)',
        'range': (0.001, 10.0)})
    max_linear_velocity_mps: float = field(default=0.25, metadata={
        'description': 'end-effector speed per unit of normalised action and per-axis limit (m/s)',
        'range': (0.0, 5.0)})
    gripper_joint_name: str = field(default='gripper_finger_distance', metadata={
        'description': 'joint in joint_states whose position is the gripper opening (m or rad)'})
    gripper_open_position: float = field(default=0.1, metadata={
        'description': 'position of gripper_joint_name when fully open; opening = position / '
                       'this, clipped to [0, 1] (m or rad)', 'range': (1e-6, 10.0)})
    task: str = field(default='', metadata={
        'description': "task to run at start-up ('' = idle until policy/task names one)",
        'read_only': True})
    frame_id: str = field(default='base_link', metadata={
        'description': 'frame_id of policy/twist (robot base frame, REP 103)', 'read_only': True})
    torch_threads: int = field(default=1, metadata={
        'description': 'torch intra-op threads for CPU inference (count)', 'range': (1, 64),
        'read_only': True})
    max_proprio_std: float = field(default=DEFAULT_MAX_PROPRIO_STD, metadata={
        'description': 'an end-effector coordinate further than this from the mean of the '
                       "checkpoint's training data gives zero output (standard deviations of "
                       'that data; 0 = no check)', 'range': (0.0, 1e6)})
    workspace_min_m: tuple = field(default=DEFAULT_WORKSPACE_MIN_M, metadata={
        'description': 'lower corner x, y, z of the workspace box in the robot base frame; an '
                       'end-effector position outside the box gives zero output (m)'})
    workspace_max_m: tuple = field(default=DEFAULT_WORKSPACE_MAX_M, metadata={
        'description': 'upper corner x, y, z of the workspace box in the robot base frame (m)'})
    checkpoint_cache_dir: str = field(default='data/checkpoint_cache', metadata={
        'description': 'where weights fetched from the trainer are kept, one <sha256>/ '
                       'checkpoint directory each (used when the announced path is not here)',
        'read_only': True})
    checkpoint_fetch_timeout_s: float = field(default=300.0, metadata={
        'description': 'longest transfer of announced weights from the trainer; then the '
                       'announcement is refused (s)', 'range': (1.0, 86400.0), 'read_only': True})
    max_image_pixels: int = field(default=4_194_304, metadata={
        'description': 'a camera image with more pixels (width x height; or with more data '
                       'than 4 bytes per such pixel) is refused before conversion and gives zero '
                       'output (pixels)', 'range': (1, 1 << 31)})

    def __post_init__(self):
        for name in ('control_rate_hz', 'max_input_age_s', 'max_linear_velocity_mps',
                     'gripper_open_position'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f'{name} must be a positive finite number, got {value!r}')
        if self.cycle_trigger not in ('timer', 'image'):
            raise ValueError(
                f"cycle_trigger must be 'timer' or 'image', got {self.cycle_trigger!r}")
        if not self.checkpoint_path:
            raise ValueError('checkpoint_path must not be empty')
        if not self.gripper_joint_name:
            raise ValueError('gripper_joint_name must not be empty')
        if self.torch_threads < 1:
            raise ValueError(f'torch_threads must be >= 1, got {self.torch_threads}')
        if self.max_image_pixels < 1:
            raise ValueError(f'max_image_pixels must be >= 1, got {self.max_image_pixels}')
        self.workspace_min_m = tuple(float(v) for v in self.workspace_min_m)
        self.workspace_max_m = tuple(float(v) for v in self.workspace_max_m)
        self.proprio_limits()

    def proprio_limits(self, stats=None):
        """
        Build the plausibility limits of the end-effector position from these parameters.

        :param stats: (mean, std) of the running policy's training data, or None
        :return: :class:`active_finetune.safety.ProprioLimits`
        :raises ValueError: for a workspace box that is not 3 finite values per corner with
            min < max, or a bad max_proprio_std
        """
        mean, std = stats if stats is not None else (None, None)
        return ProprioLimits(self.workspace_min_m, self.workspace_max_m, mean, std,
                             float(self.max_proprio_std))
