"""
Every JSON payload the loop's nodes exchange in std_msgs/String: typed, validated, versioned.

ROS-free and dependency-free (standard library only), so nodes, the operator console, the main
job and a browser dashboard all read the loop's topics through this one module.

One frozen dataclass per payload; its fields, their types and defaults are the contract
(docs/interfaces.md shows the JSON schemas generated from them, :func:`schemas_markdown`):

==========================  ====================  =============================
topic                       dataclass             decode function
==========================  ====================  =============================
``operator/next_task``      :class:`NextTask`       :func:`decode_next_task`
``recorder/status``         :class:`RecorderStatus` :func:`decode_recorder_status`
``recorder/episode``        :class:`EpisodeSaved`   :func:`decode_episode_saved`
``recorder/mark``           :class:`EpisodeMark`    :func:`decode_episode_mark`
``trainer/checkpoint``      :class:`CheckpointAnnounced` :func:`decode_checkpoint`
``trainer/checkpoint_request`` :class:`CheckpointRequest` :func:`decode_checkpoint_request`
``trainer/status``          :class:`TrainerStatus`  :func:`decode_trainer_status`
``trainer/evaluation``      :class:`Evaluation`     :func:`decode_evaluation`
``policy/status``           :class:`PolicyStatus`   :func:`decode_policy_status`
``mux/status``              :class:`MuxStatus`      :func:`decode_mux_status`
``sim/status``              :class:`SimStatus`      :func:`decode_sim_status`
==========================  ====================  =============================

Use::

    from active_finetune import payloads
    text = payloads.encode(payloads.MuxStatus(source='policy', estop=False))  # JSON str
    status = payloads.decode_mux_status(text)              # -> MuxStatus, or PayloadError
    status = payloads.decode('mux/status', text)           # the same, chosen by topic
    plain = payloads.decode_dict('mux/status', text)       # validated plain dict (defaults in)
    payloads.PAYLOADS                                      # topic -> dataclass

Rules:

- Constructing a payload validates it (``__post_init__``), so nothing invalid is ever encoded.
  A float field takes an int (stored as float); an int field never takes a bool or a float.
- :func:`encode` writes every field plus ``"schema_version":`` :data:`SCHEMA_VERSION`.
- Decoding accepts a message without ``schema_version`` (a publisher older than the field) and
  refuses a newer major version; keys it does not know are ignored (newer optional fields);
  a field without a default must be present; ``null`` is accepted only where the type allows
  ``None``.
- Every failure is a :class:`PayloadError` (a ``ValueError``) whose message names the topic, the
  field (dotted path, e.g. ``scores.reach``) and the bad value; ``error.field`` and
  ``error.value`` carry them.
"""

import argparse
import dataclasses
from dataclasses import dataclass, field
import json
import re
import sys
import types
import typing

SCHEMA_VERSION = 1
"""Version written into every payload as ``schema_version``; a larger one is refused."""
SCHEMA_VERSION_KEY = 'schema_version'

SCHEMAS_BEGIN = '<!-- BEGIN GENERATED PAYLOAD SCHEMAS (python -m active_finetune.payloads) -->'
SCHEMAS_END = '<!-- END GENERATED PAYLOAD SCHEMAS -->'

RECORDER_STATES = ('idle', 'recording', 'saving', 'saved', 'discarded', 'error')
TRAINER_STATES = ('waiting', 'training', 'evaluating', 'error')
POLICY_STATES = ('running', 'idle', 'stale', 'error')
MUX_SOURCES = ('teleop', 'policy', 'none')
SIM_STATES = ('running', 'demonstrating')
_SHA256 = '^[0-9a-fA-F]{64}$'


class PayloadError(ValueError):
    """
    A payload that is not what its dataclass describes.

    :param message: the full explanation
    :param topic: topic of the payload ('' when unknown)
    :param field: dotted path of the bad field ('' for the message as a whole)
    :param value: the bad value (None when missing)
    """

    def __init__(self, message, topic='', field='', value=None):
        super().__init__(message)
        self.topic = topic
        self.field = field
        self.value = value


def _clip(value, length=120):
    text = repr(value)
    return text if len(text) <= length else text[:length] + '...'


def _meta(description, **extra):
    return {'description': description, **extra}


class _Payload:
    """Base of every payload: validation on construction, dict/JSON conversion."""

    TOPIC: typing.ClassVar[str] = ''

    def __post_init__(self):
        for item in dataclasses.fields(self):
            value = _check(self.TOPIC, item.name, getattr(self, item.name),
                           _hints(type(self))[item.name], item.metadata)
            object.__setattr__(self, item.name, value)

    def to_dict(self):
        """:return: the payload as a JSON-compatible dict (nested payloads as dicts too)."""
        return {item.name: _plain(getattr(self, item.name)) for item in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data, topic=None):
        """
        Build and validate a payload from a decoded JSON object.

        :param data: dict
        :param topic: topic for messages (default: the class's)
        :return: instance of ``cls``
        :raises PayloadError: for a missing or invalid field
        """
        return _from_dict(cls, data, cls.TOPIC if topic is None else topic, '')


def _plain(value):
    if isinstance(value, _Payload):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


_HINTS = {}


def _hints(cls):
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _path(prefix, name):
    return f'{prefix}.{name}' if prefix else str(name)


def _from_dict(cls, data, topic, prefix):
    if not isinstance(data, dict):
        what = f'field {prefix!r}' if prefix else 'the payload'
        raise PayloadError(f'{topic}: {what} must be a JSON object, got '
                           f'{type(data).__name__}: {_clip(data)}', topic, prefix, data)
    kwargs = {}
    for item in dataclasses.fields(cls):
        name = _path(prefix, item.name)
        if item.name in data:
            kwargs[item.name] = _check(topic, name, data[item.name], _hints(cls)[item.name],
                                       item.metadata)
        elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            raise PayloadError(f'{topic}: missing field {name!r}', topic, name, None)
    try:
        return cls(**kwargs)
    except PayloadError as error:  # checked above with the full path already; keep it
        raise PayloadError(f'{topic}: {error}', topic, error.field, error.value) from None


def _type_name(annotation):
    names = {str: 'a string', int: 'an integer', float: 'a number', bool: 'a boolean',
             dict: 'an object', list: 'a list'}
    if annotation in names:
        return names[annotation]
    origin = typing.get_origin(annotation)
    if origin is list:
        return f'a list of {_type_name(typing.get_args(annotation)[0]).split(" ", 1)[1]}s'
    if origin is dict:
        return f'an object of {_type_name(typing.get_args(annotation)[1]).split(" ", 1)[1]}s'
    if isinstance(annotation, type) and issubclass(annotation, _Payload):
        return 'an object'
    return str(annotation)


def _check(topic, name, value, annotation, metadata):
    """Validate ``value`` against ``annotation`` (+ metadata constraints); return it normalised."""
    def fail(problem):
        raise PayloadError(f'{topic}: field {name!r} {problem}, got {_clip(value)}',
                           topic, name, value)

    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        annotation, origin = options[0], typing.get_origin(options[0])
    if value is None:
        fail(f'must be {_type_name(annotation)}, not null')
    if annotation is bool:
        if not isinstance(value, bool):
            fail('must be a boolean')
    elif annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail('must be an integer')
    elif annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail('must be a number')
        value = float(value)
    elif annotation is str:
        if not isinstance(value, str):
            fail('must be a string')
    elif annotation is dict:
        if not isinstance(value, dict):
            fail('must be an object')
        value = dict(value)
    elif origin is list:
        if not isinstance(value, (list, tuple)):
            fail(f'must be {_type_name(annotation)}')
        item_type = typing.get_args(annotation)[0]
        value = [_check(topic, f'{name}[{i}]', v, item_type, {}) for i, v in enumerate(value)]
    elif origin is dict:
        if not isinstance(value, dict):
            fail(f'must be {_type_name(annotation)}')
        item_type = typing.get_args(annotation)[1]
        checked = {}
        for key, item in value.items():
            if not isinstance(key, str):
                fail('must have string keys')
            checked[key] = _check(topic, _path(name, key), item, item_type, {})
        value = checked
    elif isinstance(annotation, type) and issubclass(annotation, _Payload):
        if not isinstance(value, annotation):
            value = _from_dict(annotation, value, topic, name)
    else:  # pragma: no cover - a dataclass annotated with a type this module does not know
        raise TypeError(f'{topic}: unsupported annotation {annotation!r} for {name}')
    if 'choices' in metadata and value not in metadata['choices']:
        fail(f'must be one of {", ".join(metadata["choices"])}')
    if 'minimum' in metadata and value < metadata['minimum']:
        fail(f'must be >= {metadata["minimum"]}')
    if 'pattern' in metadata and not re.match(metadata['pattern'], value):
        fail(f'must match {metadata["pattern"]}')
    return value


# --------------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class NextTask(_Payload):
    """The task selector's suggestion (``operator/next_task``, latched)."""

    TOPIC: typing.ClassVar[str] = 'operator/next_task'
    task: str = field(metadata=_meta("task to demonstrate next ('' when none, e.g. done)"))
    request_id: int | None = field(default=None, metadata=_meta(
        'id of this request; a new one for every new suggestion', minimum=0))
    round: int | None = field(default=None, metadata=_meta(  # noqa: A003 - the JSON key
        'fine-tuning round the next demos belong to', minimum=0))
    tasks_this_round: list[str] = field(default_factory=list, metadata=_meta(
        'every task chosen for the rest of this round, next first'))
    strategy: str = field(default='', metadata=_meta('selection strategy'))
    scores: dict[str, float] = field(default_factory=dict, metadata=_meta(
        'score of each task (AMF: information gain); may be NaN or infinite'))
    terms: dict[str, dict[str, float]] = field(default_factory=dict, metadata=_meta(
        'AMF: candidate -> target -> term of the score'))
    demo_counts: dict[str, int] = field(default_factory=dict, metadata=_meta(
        'demos recorded per task'))
    demos_used: int = field(default=0, metadata=_meta('demos recorded so far', minimum=0))
    budget: int = field(default=0, metadata=_meta('total demos to ask for', minimum=0))
    budget_remaining: int | None = field(default=None, metadata=_meta(
        'demos still to ask for (absent: budget - demos_used)', minimum=0))
    demos_per_round: int | None = field(default=None, metadata=_meta(
        'B, demos per fine-tuning round: the trainer starts a round after every B demos '
        '(the one source of truth for B; absent in older messages)', minimum=1))
    policy_version: int | None = field(default=None, metadata=_meta(
        'checkpoint version the scores were computed with', minimum=0))
    skipped: list[str] = field(default_factory=list, metadata=_meta(
        'tasks the operator skipped since the last demo'))
    done: bool = field(default=False, metadata=_meta('true once the budget is spent'))
    reason: str = field(default='', metadata=_meta('why this task, or why none'))
    select_s: float | None = field(default=None, metadata=_meta('time the scoring took (s)'))


@dataclass(frozen=True)
class RecorderStatus(_Payload):
    """What the demo recorder is doing (``recorder/status``, latched)."""

    TOPIC: typing.ClassVar[str] = 'recorder/status'
    state: str = field(metadata=_meta('recorder state', choices=RECORDER_STATES))
    task: str = field(default='', metadata=_meta('task of the episode'))
    request_id: int | None = field(default=None, metadata=_meta(
        'operator/next_task request the episode answers'))
    duration_s: float = field(default=0.0, metadata=_meta('episode duration (s)', minimum=0))
    frames: int = field(default=0, metadata=_meta('camera frames recorded', minimum=0))
    dropped: int = field(default=0, metadata=_meta('messages dropped (queue full)', minimum=0))
    path: str = field(default='', metadata=_meta('episode file (partial while recording)'))
    message: str = field(default='', metadata=_meta('human-readable detail'))
    marked: bool | None = field(default=None, metadata=_meta(
        "operator's mark on the episode being recorded (true: success, false: failure, null: "
        'unmarked)'))
    note: str = field(default='', metadata=_meta("operator's note on the episode being recorded"))
    success_if_stopped: bool | None = field(default=None, metadata=_meta(
        'success the episode would be saved with if stopped now (null when not recording)'))
    success_source: str = field(default='', metadata=_meta(
        "what decides that success: 'operator' (the mark), 'sim' (sim/success) or 'unmarked' "
        "(the recorder's unmarked_success); '' when not recording",
        choices=('', 'operator', 'sim', 'unmarked')))


@dataclass(frozen=True)
class EpisodeSaved(_Payload):
    """An episode renamed into place and indexed (``recorder/episode``, latched depth 10)."""

    TOPIC: typing.ClassVar[str] = 'recorder/episode'
    path: str = field(metadata=_meta('absolute path of the .mcap file'))
    sha256: str = field(metadata=_meta('sha256 of the file', pattern=_SHA256))
    task: str = field(metadata=_meta('task demonstrated'))
    success: bool = field(metadata=_meta('success verdict'))
    steps: int = field(default=0, metadata=_meta('aligned training rows', minimum=0))
    frames: int = field(default=0, metadata=_meta('camera frames', minimum=0))
    request_id: int | None = field(default=None, metadata=_meta(
        'operator/next_task request the episode answers'))
    dropped: int = field(default=0, metadata=_meta('messages dropped', minimum=0))
    duration_s: float = field(default=0.0, metadata=_meta('duration (s)', minimum=0))
    bag_path: str = field(default='', metadata=_meta(
        "rosbag2 directory holding the episode ('' when the episode is a plain .mcap file)"))


@dataclass(frozen=True)
class EpisodeMark(_Payload):
    """The operator's verdict on the episode being recorded (``recorder/mark``, console)."""

    TOPIC: typing.ClassVar[str] = 'recorder/mark'
    success: bool = field(metadata=_meta('true: success, false: failure'))
    note: str = field(default='', metadata=_meta("operator's note, stored in the episode file"))


@dataclass(frozen=True)
class CheckpointAnnounced(_Payload):
    """A checkpoint ready to load (``trainer/checkpoint``, latched)."""

    TOPIC: typing.ClassVar[str] = 'trainer/checkpoint'
    version: int = field(metadata=_meta('checkpoint version (0: the initial one)', minimum=0))
    sha256: str = field(metadata=_meta('sha256 of model.safetensors', pattern=_SHA256))
    path: str = field(default='', metadata=_meta('checkpoint directory on the trainer'))
    round: int | None = field(default=None, metadata=_meta(  # noqa: A003 - the JSON key
        'round that produced it (-1: the initial checkpoint)', minimum=-1))
    demos_used: int | None = field(default=None, metadata=_meta(
        'demos recorded when the round started', minimum=0))
    step: int = field(default=0, metadata=_meta('training steps of the round', minimum=0))
    metrics: dict = field(default_factory=dict, metadata=_meta('training metrics'))
    config: dict | None = field(default=None, metadata=_meta("the checkpoint's config.json"))
    size_bytes: int | None = field(default=None, metadata=_meta(
        'size of model.safetensors (bytes)', minimum=0))
    chunk_bytes: int | None = field(default=None, metadata=_meta(
        'chunk size of the bytes on trainer/checkpoint_data, asked for with '
        'trainer/checkpoint_request (null: the trainer does not serve them)', minimum=1))
    weights_b64: str | None = field(default=None, metadata=_meta(
        'older trainers only: model.safetensors, base64; over 1 MiB messages it must be a '
        'top-level string without JSON escapes (read, never written)'))


@dataclass(frozen=True)
class CheckpointRequest(_Payload):
    """Chunks of a checkpoint's weights a subscriber lacks (``trainer/checkpoint_request``)."""

    TOPIC: typing.ClassVar[str] = 'trainer/checkpoint_request'
    sha256: str = field(metadata=_meta('sha256 of the model.safetensors wanted',
                                       pattern=_SHA256))
    chunks: list[int] = field(metadata=_meta(
        'chunk indices wanted (chunk i: bytes i*chunk_bytes up to (i+1)*chunk_bytes)'))
    requester: str = field(default='', metadata=_meta('who asks, for logs'))


@dataclass(frozen=True)
class TrainerStatus(_Payload):
    """The trainer's progress (``trainer/status``)."""

    TOPIC: typing.ClassVar[str] = 'trainer/status'
    state: str = field(metadata=_meta('trainer state', choices=TRAINER_STATES))
    round: int | None = field(default=None, metadata=_meta(  # noqa: A003 - the JSON key
        'current round', minimum=0))
    progress: float = field(default=0.0, metadata=_meta('progress of the phase, 0..1'))
    demos_available: int | None = field(default=None, metadata=_meta(
        'demos counted towards rounds', minimum=0))
    demos_usable: int | None = field(default=None, metadata=_meta(
        'of those, the ones trained on (successful unless train_on_failed_demos)', minimum=0))
    demos_unreadable: int | None = field(default=None, metadata=_meta(
        'episodes a round skipped (not counted while unchanged)', minimum=0))
    version: int | None = field(default=None, metadata=_meta('current checkpoint version',
                                                             minimum=0))
    demos_needed: int | None = field(default=None, metadata=_meta(
        'demos at which the next round starts', minimum=0))
    demos_per_round: int | None = field(default=None, metadata=_meta(
        'B the trainer follows (from operator/next_task)', minimum=1))
    message: str = field(default='', metadata=_meta('human-readable detail'))


@dataclass(frozen=True)
class Evaluation(_Payload):
    """Per-task success of a checkpoint in simulation (``trainer/evaluation``, latched)."""

    TOPIC: typing.ClassVar[str] = 'trainer/evaluation'
    success: dict[str, float] = field(metadata=_meta('success rate per task'))
    version: int | None = field(default=None, metadata=_meta('checkpoint version', minimum=0))
    mean: float | None = field(default=None, metadata=_meta('mean success over tasks'))
    episodes: int | None = field(default=None, metadata=_meta('episodes per task', minimum=0))
    reused_from_pretrained: list[str] = field(default_factory=list, metadata=_meta(
        "tasks that took the pretrained checkpoint's numbers (adaptive prior, no demos)"))


@dataclass(frozen=True)
class Refusal(_Payload):
    """The newest checkpoint announcement the policy node refused."""

    TOPIC: typing.ClassVar[str] = 'policy/status'
    version: int | None = field(default=None, metadata=_meta('refused version'))
    sha256: str = field(default='', metadata=_meta('refused sha256'))
    reason: str = field(default='', metadata=_meta('why'))
    number: int = field(default=0, metadata=_meta('refusals so far', minimum=0))


@dataclass(frozen=True)
class PolicyStatus(_Payload):
    """The policy node's output state (``policy/status``, latched, on change)."""

    TOPIC: typing.ClassVar[str] = 'policy/status'
    state: str = field(metadata=_meta('running: actions published; otherwise zero output',
                                      choices=POLICY_STATES))
    code: str = field(default='', metadata=_meta(
        'ok, clamped or why the output is zero (missing, stale, estop, no_task, ...)'))
    reason: str = field(default='', metadata=_meta('human-readable detail'))
    task: str = field(default='', metadata=_meta('task the policy is conditioned on'))
    tasks: list[str] = field(default_factory=list, metadata=_meta("the checkpoint's tasks"))
    version: int | None = field(default=None, metadata=_meta('running checkpoint version',
                                                             minimum=0))
    sha256: str = field(default='', metadata=_meta('running weights sha256'))
    refused: Refusal | None = field(default=None, metadata=_meta(
        'newest refused announcement, or null'))
    rollback_versions: list[int] = field(default_factory=list, metadata=_meta(
        'versions policy/rollback can go back to'))
    device: str = field(default='', metadata=_meta('torch device'))


@dataclass(frozen=True)
class MuxStatus(_Payload):
    """Which source drives the robot, and the confirmed estop (``mux/status``, latched)."""

    TOPIC: typing.ClassVar[str] = 'mux/status'
    source: str = field(metadata=_meta('source of cmd/*', choices=MUX_SOURCES))
    estop: bool = field(default=False, metadata=_meta('estop engaged (confirmed by the mux)'))
    code: str = field(default='', metadata=_meta('ok, clamped or why the output is zero'))
    reason: str = field(default='', metadata=_meta('human-readable detail'))


@dataclass(frozen=True)
class SimEpisode(_Payload):
    """The simulator's last finished episode."""

    TOPIC: typing.ClassVar[str] = 'sim/status'
    task: str = field(metadata=_meta('task'))
    episode: int = field(default=0, metadata=_meta('episode number', minimum=0))
    success: bool = field(default=False, metadata=_meta('success at the end'))
    steps: int = field(default=0, metadata=_meta('steps', minimum=0))
    request_id: int | None = field(default=None, metadata=_meta(
        'operator/next_task request it demonstrated (null: policy episode)'))


@dataclass(frozen=True)
class SimStatus(_Payload):
    """The sim bridge at every episode start (``sim/status``, latched)."""

    TOPIC: typing.ClassVar[str] = 'sim/status'
    state: str = field(metadata=_meta('running: the policy drives; demonstrating: scripted '
                                      'operator', choices=SIM_STATES))
    task: str = field(metadata=_meta('task of the new episode'))
    episode: int = field(default=0, metadata=_meta('episode number', minimum=0))
    seed: int | None = field(default=None, metadata=_meta('scene seed'))
    request_id: int | None = field(default=None, metadata=_meta(
        'operator/next_task request being demonstrated'))
    last_episode: SimEpisode | None = field(default=None, metadata=_meta(
        'the previous episode, or null'))


PAYLOADS = {cls.TOPIC: cls for cls in (NextTask, RecorderStatus, EpisodeSaved, EpisodeMark,
                                       CheckpointAnnounced, CheckpointRequest, TrainerStatus,
                                       Evaluation, PolicyStatus, MuxStatus, SimStatus)}
"""Topic -> payload dataclass, for every JSON topic of the loop."""


# --------------------------------------------------------------------------- encode / decode


def encode(payload):
    """
    Encode a payload as the JSON text of a std_msgs/String.

    :param payload: a payload dataclass instance (validated when it was built)
    :return: str, with ``schema_version``
    :raises TypeError: for something that is not a payload
    """
    if not isinstance(payload, _Payload):
        raise TypeError(f'encode takes a payload dataclass, got {type(payload).__name__}')
    return json.dumps({**payload.to_dict(), SCHEMA_VERSION_KEY: SCHEMA_VERSION})


def parse_object(topic, text):
    """
    Parse JSON text into a dict and check its ``schema_version`` (no field checks).

    :param topic: topic, for messages
    :param text: str or UTF-8 bytes
    :return: dict
    :raises PayloadError: for text that is not a JSON object, or a newer schema version
    """
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as error:
        raise PayloadError(f'{topic}: not JSON ({error}): {_clip(text)}', topic, '',
                           text) from None
    if not isinstance(data, dict):
        raise PayloadError(f'{topic}: expected a JSON object, got {type(data).__name__}: '
                           f'{_clip(text)}', topic, '', data)
    version = data.get(SCHEMA_VERSION_KEY, SCHEMA_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PayloadError(f'{topic}: field {SCHEMA_VERSION_KEY!r} must be a positive integer, '
                           f'got {_clip(version)}', topic, SCHEMA_VERSION_KEY, version)
    if version > SCHEMA_VERSION:
        raise PayloadError(f'{topic}: field {SCHEMA_VERSION_KEY!r} is {version}, newer than '
                           f'this reader ({SCHEMA_VERSION}); update the package',
                           topic, SCHEMA_VERSION_KEY, version)
    return data


def _payload_class(kind):
    if isinstance(kind, type) and issubclass(kind, _Payload) and kind in PAYLOADS.values():
        return kind
    if kind in PAYLOADS:
        return PAYLOADS[kind]
    raise KeyError(f'no payload for {kind!r}; topics: {", ".join(PAYLOADS)}')


def decode(kind, text):
    """
    Decode and validate a payload.

    :param kind: topic name (``'operator/next_task'``) or payload dataclass
    :param text: JSON text (str or UTF-8 bytes)
    :return: the payload dataclass instance
    :raises PayloadError: for invalid JSON or an invalid/missing field
    :raises KeyError: for an unknown kind
    """
    cls = _payload_class(kind)
    return cls.from_dict(parse_object(cls.TOPIC, text))


def decode_dict(kind, text):
    """
    Decode and validate a payload, and return it as a plain dict (defaults filled in).

    :param kind: topic name or payload dataclass
    :param text: JSON text
    :return: dict
    :raises PayloadError: as :func:`decode`
    """
    return decode(kind, text).to_dict()


def decode_next_task(text):
    """:return: :class:`NextTask` from ``operator/next_task`` text (PayloadError if invalid)."""
    return decode(NextTask, text)


def decode_recorder_status(text):
    """:return: :class:`RecorderStatus` from ``recorder/status`` text."""
    return decode(RecorderStatus, text)


def decode_episode_saved(text):
    """:return: :class:`EpisodeSaved` from ``recorder/episode`` text."""
    return decode(EpisodeSaved, text)


def decode_episode_mark(text):
    """:return: :class:`EpisodeMark` from ``recorder/mark`` text."""
    return decode(EpisodeMark, text)


def decode_checkpoint(text):
    """
    Decode ``trainer/checkpoint`` text.

    The policy node goes through :meth:`active_finetune.policy.hot_swap.CheckpointAnnouncement
    .from_json` instead, which cuts large weights out first and decodes them in pieces.

    :return: :class:`CheckpointAnnounced`
    """
    return decode(CheckpointAnnounced, text)


def decode_checkpoint_request(text):
    """:return: :class:`CheckpointRequest` from ``trainer/checkpoint_request`` text."""
    return decode(CheckpointRequest, text)


def decode_trainer_status(text):
    """:return: :class:`TrainerStatus` from ``trainer/status`` text."""
    return decode(TrainerStatus, text)


def decode_evaluation(text):
    """:return: :class:`Evaluation` from ``trainer/evaluation`` text."""
    return decode(Evaluation, text)


def decode_policy_status(text):
    """:return: :class:`PolicyStatus` from ``policy/status`` text."""
    return decode(PolicyStatus, text)


def decode_mux_status(text):
    """:return: :class:`MuxStatus` from ``mux/status`` text."""
    return decode(MuxStatus, text)


def decode_sim_status(text):
    """:return: :class:`SimStatus` from ``sim/status`` text."""
    return decode(SimStatus, text)


# --------------------------------------------------------------------------- JSON schemas


def _schema_of_type(annotation):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = _schema_of_type(options[0])
        if 'type' in inner and len(inner) == 1:
            return {'type': [inner['type'], 'null']}
        return {'anyOf': [inner, {'type': 'null'}]}
    simple = {str: 'string', int: 'integer', float: 'number', bool: 'boolean', dict: 'object'}
    if annotation in simple:
        return {'type': simple[annotation]}
    if origin is list:
        return {'type': 'array', 'items': _schema_of_type(typing.get_args(annotation)[0])}
    if origin is dict:
        return {'type': 'object',
                'additionalProperties': _schema_of_type(typing.get_args(annotation)[1])}
    return json_schema(annotation, nested=True)


def json_schema(cls, nested=False):
    """
    Give the JSON schema (draft 2020-12) of a payload dataclass.

    :param cls: payload dataclass (or its topic)
    :param nested: leave out ``$schema``, ``title`` and ``schema_version`` (a nested object)
    :return: dict
    """
    if isinstance(cls, str):
        cls = _payload_class(cls)
    properties, required = {}, []
    for item in dataclasses.fields(cls):
        prop = _schema_of_type(_hints(cls)[item.name])
        meta = item.metadata
        prop['description'] = meta.get('description', '')
        for key, schema_key in (('choices', 'enum'), ('minimum', 'minimum'),
                                ('pattern', 'pattern')):
            if key in meta:
                prop[schema_key] = list(meta[key]) if key == 'choices' else meta[key]
        if item.default is not dataclasses.MISSING:
            prop['default'] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            prop['default'] = item.default_factory()
        else:
            required.append(item.name)
        properties[item.name] = prop
    schema = {'type': 'object', 'properties': properties, 'required': required}
    if nested:
        return schema
    properties[SCHEMA_VERSION_KEY] = {
        'type': 'integer', 'minimum': 1, 'maximum': SCHEMA_VERSION,
        'description': 'payload schema version (absent: 1)'}
    return {'$schema': 'https://json-schema.org/draft/2020-12/schema',
            'title': f'{cls.TOPIC} ({cls.__name__})',
            'description': ' '.join(cls.__doc__.split()), **schema}


def _format_schema(schema):
    """Write a schema with one line per top-level key and per property."""
    lines = ['{']
    keys = list(schema)
    for index, key in enumerate(keys):
        comma = ',' if index < len(keys) - 1 else ''
        if key == 'properties':
            lines.append(' "properties": {')
            names = list(schema[key])
            for number, name in enumerate(names):
                end = ',' if number < len(names) - 1 else ''
                lines.append(f'  {json.dumps(name)}: {json.dumps(schema[key][name])}{end}')
            lines.append(' }' + comma)
        else:
            lines.append(f' {json.dumps(key)}: {json.dumps(schema[key])}{comma}')
    lines.append('}')
    return '\n'.join(lines)


def schemas_markdown():
    """
    Give the Markdown section of docs/interfaces.md that lists every payload's JSON schema.

    :return: str, from :data:`SCHEMAS_BEGIN` to :data:`SCHEMAS_END` inclusive
    """
    parts = [SCHEMAS_BEGIN, '',
             f'Schema version {SCHEMA_VERSION}. Generated from the dataclasses of '
             '`active_finetune/payloads.py` (`python -m active_finetune.payloads --write '
             'docs/interfaces.md`); a test checks that this text matches them.', '']
    for topic, cls in PAYLOADS.items():
        parts += [f'### `{topic}` ({cls.__name__})', '', '```json',
                  _format_schema(json_schema(cls)), '```', '']
    parts.append(SCHEMAS_END)
    return '\n'.join(parts)


def replace_schemas(document):
    """
    Put the generated schemas into a document between the markers (appended when absent).

    :param document: Markdown text
    :return: the new text
    """
    section = schemas_markdown()
    start, end = document.find(SCHEMAS_BEGIN), document.find(SCHEMAS_END)
    if start < 0 or end < start:
        return document.rstrip('\n') + '\n\n' + section + '\n'
    return document[:start] + section + document[end + len(SCHEMAS_END):]


def main(argv=None):
    """Print the schemas section, or write it into a Markdown file (``--write PATH``)."""
    parser = argparse.ArgumentParser(description='JSON schemas of the loop payloads')
    parser.add_argument('--write', metavar='PATH', help='update the section in this file')
    args = parser.parse_args(argv)
    if args.write:
        with open(args.write, encoding='utf-8') as handle:
            text = handle.read()
        with open(args.write, 'w', encoding='utf-8') as handle:
            handle.write(replace_schemas(text))
    else:
        sys.stdout.write(schemas_markdown() + '\n')


if __name__ == '__main__':
    main()
