"""
Episode files: MCAP with ROS 2 message encoding, as ``ros2 bag`` (mcap storage) and Foxglove read.

One file holds one demonstration.  Every stream is stored with its standard ROS 2 message type
('ros2msg' schemas, 'cdr' message encoding, 'ros2' profile):

=================  =================================  ====================================
role               topic (default)                    type
=================  =================================  ====================================
image              /camera/image_raw                  sensor_msgs/msg/Image (rgb8), or
                   /camera/image_raw/compressed       sensor_msgs/msg/CompressedImage
joint_states       /joint_states                      sensor_msgs/msg/JointState
ee_pose            /ee_pose                           geometry_msgs/msg/PoseStamped
twist              /teleop/twist                      geometry_msgs/msg/TwistStamped
gripper            /teleop/gripper                    std_msgs/msg/Float64
joy                /teleop/joy                        sensor_msgs/msg/Joy
sim_success        /sim/success                       std_msgs/msg/Bool
=================  =================================  ====================================

Raw frames (image format 'raw') go on the camera topic itself, as the policy node subscribes it, so
playing the episode feeds the policy; JPEG/PNG frames go on ``<camera topic>/compressed``
(image_transport's name).  Files written before the raw format store the compressed topic as the
image role's topic; both layouts load.

A message's log time is its arrival time at the recorder (ns since the Unix epoch, as rosbag2
records it); its publish time is the source's header stamp where the message has one.

Two metadata records (string -> string) describe the episode: ``active_finetune.start``, written
when recording starts (so a crashed, partial file still says what it was), and
``active_finetune``, written when it stops.  Keys of the latter: ``format_version``, ``task``,
``success`` ('true'/'false'), ``success_source`` (what decided it: 'operator' (the operator's
mark), 'sim' (sim/success), 'unmarked' (the recorder's unmarked_success), 'explicit' or
'interrupted'; absent in older files), ``operator_mark`` ('success', 'failure' or '': unmarked),
``operator_notes`` (notes given at start and the operator's mark note),
``max_linear_velocity_mps``, ``gripper_joint_name``, ``gripper_open_position``,
``request_id``, ``started_unix_s``, ``duration_s``, ``frames`` (camera frames), ``steps`` (rows
:func:`load_episode` gives), ``dropped``, ``recovered`` ('true'/'false'), ``image_format`` (the
recorder's setting; each frame's CompressedImage.format says whether it is jpeg or png),
``max_command_hold_s`` (absent in older files: the default of
:mod:`active_finetune.data.alignment` applies), ``topics`` (JSON role -> topic name).

A saved episode is a rosbag2 bag: a directory ``episode_<N>_<task>/`` holding the MCAP file
``episode_<N>_<task>.mcap`` and a ``metadata.yaml`` (rosbag2 version 8, storage ``mcap``) that
:func:`write_bag_metadata` derives from the file's summary, so ``ros2 bag info`` and ``ros2 bag
play`` take the directory.  Older episodes are single ``.mcap`` files; :func:`episode_data_file`
maps either to the MCAP file, and every reader here takes either.

:func:`load_episode` turns a file into an :class:`~active_finetune.data.episode.Episode` with one
row per camera frame that has a state and a command (the rule is in
:mod:`active_finetune.data.alignment`).
"""

import json
import logging
import os
from pathlib import Path

from active_finetune.atomic_io import fsync_directory
from active_finetune.data.alignment import align_rows, DEFAULT_MAX_COMMAND_HOLD_S, StreamTimes
from active_finetune.data.episode import ACTION_DIM, Episode, EpisodeError
from active_finetune.policy.inputs import proprio_from_robot
import cv2
from mcap.reader import make_reader
from mcap.records import Channel, Message, Metadata, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer as McapWriter
from mcap_ros2.decoder import DecoderFactory
from mcap_ros2.writer import Writer as Ros2McapWriter
import numpy as np
import yaml

LOGGER = logging.getLogger(__name__)

FORMAT_VERSION = '1'
"""Version of the episode layout (topics + metadata keys) written by this module."""

METADATA_NAME = 'active_finetune'
"""Name of the metadata record written when an episode is stopped."""

START_METADATA_NAME = 'active_finetune.start'
"""Name of the metadata record written when an episode starts (survives a crash)."""

DEFAULT_TOPICS = {
    'image': '/camera/image_raw',
    'joint_states': '/joint_states',
    'ee_pose': '/ee_pose',
    'twist': '/teleop/twist',
    'gripper': '/teleop/gripper',
    'joy': '/teleop/joy',
    'sim_success': '/sim/success',
}
"""Role -> topic name stored in the file (the recorder passes its resolved names)."""

ROLE_TYPES = {
    'image': 'sensor_msgs/msg/Image',
    'joint_states': 'sensor_msgs/msg/JointState',
    'ee_pose': 'geometry_msgs/msg/PoseStamped',
    'twist': 'geometry_msgs/msg/TwistStamped',
    'gripper': 'std_msgs/msg/Float64',
    'joy': 'sensor_msgs/msg/Joy',
    'sim_success': 'std_msgs/msg/Bool',
}
"""Role -> ROS 2 message type (the image role is a CompressedImage on the compressed topic)."""

COMPRESSED_IMAGE_TYPE = 'sensor_msgs/msg/CompressedImage'
"""Type of JPEG/PNG frames, on ``<camera topic>/compressed``."""

COMPRESSED_SUFFIX = '/compressed'
"""image_transport's suffix of the compressed topic of an image topic."""

REQUIRED_ROLES = ('image', 'joint_states', 'ee_pose', 'twist', 'gripper')
"""Streams :func:`load_episode` needs; joy and sim_success are kept for inspection only."""

COMPRESSED_FORMATS = ('jpeg', 'png')
"""Image compressions (CompressedImage.format)."""

IMAGE_FORMATS = ('raw',) + COMPRESSED_FORMATS
"""Frame formats a recorder may use: 'raw' (sensor_msgs/Image rgb8) or a compression."""

RAW_ENCODINGS = {'rgb8': 3, 'bgr8': 3, 'mono8': 1}
"""sensor_msgs/Image encodings :func:`decode_raw_image` reads (channels per pixel)."""

_MSG_DEFINITIONS = {
    'sensor_msgs/Image': ('std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n'
                          'uint8 is_bigendian\nuint32 step\nuint8[] data', ['std_msgs/Header']),
    'sensor_msgs/CompressedImage': ('std_msgs/Header header\nstring format\nuint8[] data',
                                    ['std_msgs/Header']),
    'sensor_msgs/JointState': ('std_msgs/Header header\nstring[] name\nfloat64[] position\n'
                               'float64[] velocity\nfloat64[] effort', ['std_msgs/Header']),
    'sensor_msgs/Joy': ('std_msgs/Header header\nfloat32[] axes\nint32[] buttons',
                        ['std_msgs/Header']),
    'geometry_msgs/PoseStamped': ('std_msgs/Header header\nPose pose',
                                  ['std_msgs/Header', 'geometry_msgs/Pose']),
    'geometry_msgs/TwistStamped': ('std_msgs/Header header\nTwist twist',
                                   ['std_msgs/Header', 'geometry_msgs/Twist']),
    'std_msgs/Float64': ('float64 data', []),
    'std_msgs/Bool': ('bool data', []),
    'std_msgs/Header': ('builtin_interfaces/Time stamp\nstring frame_id',
                        ['builtin_interfaces/Time']),
    'builtin_interfaces/Time': ('int32 sec\nuint32 nanosec', []),
    'geometry_msgs/Pose': ('Point position\nQuaternion orientation',
                           ['geometry_msgs/Point', 'geometry_msgs/Quaternion']),
    'geometry_msgs/Point': ('float64 x\nfloat64 y\nfloat64 z', []),
    'geometry_msgs/Quaternion': ('float64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1', []),
    'geometry_msgs/Twist': ('Vector3 linear\nVector3 angular', ['geometry_msgs/Vector3']),
    'geometry_msgs/Vector3': ('float64 x\nfloat64 y\nfloat64 z', []),
}
_SEPARATOR = '=' * 80

BAG_METADATA_FILE = 'metadata.yaml'
"""rosbag2's description of a bag directory."""

ROSBAG2_METADATA_VERSION = 8
"""rosbag2 metadata version written (ROS 2 Jazzy's; rosbag2 reads older versions too)."""


class EpisodeFileError(ValueError):
    """
    An episode file that cannot be used: missing, torn, corrupt, without a needed topic or frame.

    :param path: the file
    :param reason: what is wrong with it
    """

    def __init__(self, path, reason):
        super().__init__(f'episode file {str(path)!r}: {reason}')
        self.path = str(path)
        self.reason = reason


def message_definition(ros_type):
    """
    Build the concatenated ROS 2 message definition (rosbag2's 'ros2msg' schema text) of a type.

    :param ros_type: e.g. 'sensor_msgs/msg/JointState'
    :return: the definition of the type followed by every type it uses
    :raises KeyError: for a type this module does not define
    """
    short = ros_type.replace('/msg/', '/')
    text, _ = _MSG_DEFINITIONS[short]
    parts = [text]
    seen = {short}
    pending = list(_MSG_DEFINITIONS[short][1])
    while pending:
        dependency = pending.pop(0)
        if dependency in seen:
            continue
        seen.add(dependency)
        dep_text, dep_deps = _MSG_DEFINITIONS[dependency]
        parts.append(f'{_SEPARATOR}\nMSG: {dependency}\n{dep_text}')
        pending.extend(dep_deps)
    return '\n'.join(parts) + '\n'


def header(stamp_ns, frame_id=''):
    """
    Build a std_msgs/Header as the dict the MCAP ROS 2 encoder takes.

    :param stamp_ns: source time in ns since the epoch
    :param frame_id: frame of the data
    :return: dict
    """
    stamp_ns = int(stamp_ns)
    return {'stamp': {'sec': stamp_ns // 1_000_000_000, 'nanosec': stamp_ns % 1_000_000_000},
            'frame_id': frame_id}


def encode_image(rgb, image_format='jpeg', jpeg_quality=95):
    """
    Compress an RGB image for a sensor_msgs/CompressedImage (image_transport's format strings).

    :param rgb: (H, W, 3) uint8 array
    :param image_format: 'jpeg' or 'png'
    :param jpeg_quality: 1..100
    :return: (format string, compressed bytes)
    :raises ValueError: for a bad array or format, or when OpenCV fails
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3:
        raise ValueError(f'expected an (H, W, 3) uint8 image, got {getattr(rgb, "shape", rgb)!r}')
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if image_format == 'jpeg':
        ok, buffer = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    elif image_format == 'png':
        ok, buffer = cv2.imencode('.png', bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        raise ValueError(f'image_format must be one of {COMPRESSED_FORMATS}, '
                         f'got {image_format!r}')
    if not ok:
        raise ValueError(f'OpenCV could not encode a {rgb.shape} image as {image_format}')
    return f'rgb8; {image_format} compressed bgr8', buffer.tobytes()


def decode_image(data):
    """
    Decompress the data of a sensor_msgs/CompressedImage to RGB.

    :param data: jpeg or png bytes
    :return: (H, W, 3) uint8 RGB array
    :raises ValueError: when the bytes are not an image OpenCV can decode
    """
    bgr = cv2.imdecode(np.frombuffer(bytes(data), dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f'{len(data)} bytes are not a decodable jpeg/png image')
    return np.ascontiguousarray(bgr[:, :, ::-1])


def image_topics(topic):
    """
    Split an image role's topic into the raw topic and its compressed topic.

    :param topic: '/camera/image_raw' (current files) or '/camera/image_raw/compressed' (older)
    :return: (raw topic, compressed topic)
    """
    if topic.endswith(COMPRESSED_SUFFIX):
        return topic[:-len(COMPRESSED_SUFFIX)], topic
    return topic, topic + COMPRESSED_SUFFIX


def image_message(rgb, stamp_ns, frame_id='', image_format='raw', jpeg_quality=95):
    """
    Build the message dict of one camera frame.

    :param rgb: (H, W, 3) uint8 array
    :param stamp_ns: header stamp (ns since the epoch)
    :param frame_id: camera frame
    :param image_format: 'raw' (sensor_msgs/Image, rgb8), 'jpeg' or 'png' (CompressedImage)
    :param jpeg_quality: 1..100
    :return: dict shaped like sensor_msgs/Image or sensor_msgs/CompressedImage
    :raises ValueError: for a bad array or format
    """
    if image_format != 'raw':
        compression, data = encode_image(rgb, image_format, jpeg_quality)
        return {'header': header(stamp_ns, frame_id), 'format': compression, 'data': data}
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3:
        raise ValueError(f'expected an (H, W, 3) uint8 image, got {getattr(rgb, "shape", rgb)!r}')
    height, width = rgb.shape[:2]
    return {'header': header(stamp_ns, frame_id), 'height': height, 'width': width,
            'encoding': 'rgb8', 'is_bigendian': 0, 'step': width * 3,
            'data': np.ascontiguousarray(rgb).tobytes()}


def decode_raw_image(message):
    """
    Convert a decoded sensor_msgs/Image (rgb8, bgr8 or mono8; rows may be padded) to RGB.

    :param message: object with height, width, encoding, step, data
    :return: (H, W, 3) uint8 RGB array
    :raises ValueError: for another encoding or a data size that does not match
    """
    channels = RAW_ENCODINGS.get(message.encoding)
    if channels is None:
        raise ValueError(f'image encoding {message.encoding!r} is not one of '
                         f'{sorted(RAW_ENCODINGS)}')
    height, width, step = int(message.height), int(message.width), int(message.step)
    data = np.frombuffer(bytes(message.data), dtype=np.uint8)
    if step < width * channels or data.size != height * step:
        raise ValueError(f'{data.size} bytes do not hold a {height}x{width} {message.encoding} '
                         f'image with step {step}')
    pixels = data.reshape(height, step)[:, :width * channels].reshape(height, width, channels)
    if message.encoding == 'mono8':
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    if message.encoding == 'bgr8':
        pixels = pixels[:, :, ::-1]
    return np.ascontiguousarray(pixels)


def frame_rgb(message):
    """
    Decode a recorded camera frame, raw or compressed, to RGB.

    :param message: decoded sensor_msgs/Image or sensor_msgs/CompressedImage
    :return: (H, W, 3) uint8 RGB array
    :raises ValueError: when the frame cannot be decoded
    """
    if hasattr(message, 'encoding'):
        return decode_raw_image(message)
    return decode_image(message.data)


_INFINITE_DURATION = {'sec': 9223372036, 'nsec': 854775807}
_QOS_DEPTH = {'image': 5}
"""Depth the package's publishers offer per role (active_finetune.nodes.qos); others 10."""


def offered_qos(depth):
    """
    Build rosbag2's offered_qos_profiles string (version 8): reliable, volatile, keep last.

    :param depth: history depth
    :return: YAML text of a one-profile list
    """
    profile = {'history': 1, 'depth': int(depth), 'reliability': 1, 'durability': 2,
               'deadline': dict(_INFINITE_DURATION), 'lifespan': dict(_INFINITE_DURATION),
               'liveliness': 1, 'liveliness_lease_duration': dict(_INFINITE_DURATION),
               'avoid_ros_namespace_conventions': False}
    return yaml.safe_dump([profile], default_flow_style=False, sort_keys=False).strip()


class EpisodeMcapWriter:
    """
    Write the streams of one episode to an open binary stream as ROS 2 MCAP.

    Messages are plain dicts shaped like the ROS message (see :func:`header`); the
    ``mcap_ros2`` encoder turns them into CDR.  An image message with an ``encoding`` is a
    sensor_msgs/Image and goes on the image topic, one with a ``format`` a CompressedImage and goes
    on its compressed topic (:func:`image_topics`, :func:`image_message`).  Complete chunks go
    to the stream as they fill, so a crash loses at most the last chunk.

    :param stream: writable binary file object (the caller opens, flushes and closes it)
    :param topics: role -> topic name (defaults: :data:`DEFAULT_TOPICS`)
    :param compression: 'zstd', 'lz4' or 'none' (chunk compression; all three read by rosbag2)
    :param chunk_size_bytes: uncompressed size at which a chunk is written out
    """

    def __init__(self, stream, topics=None, compression='zstd', chunk_size_bytes=1024 * 1024):
        compressions = {'zstd': CompressionType.ZSTD, 'lz4': CompressionType.LZ4,
                        'none': CompressionType.NONE}
        if compression not in compressions:
            raise ValueError(f'compression must be one of {sorted(compressions)}, '
                             f'got {compression!r}')
        self.topics = dict(DEFAULT_TOPICS if topics is None else topics)
        unknown = set(self.topics) - set(ROLE_TYPES)
        if unknown:
            raise ValueError(f'unknown stream roles {sorted(unknown)}; '
                             f'known: {sorted(ROLE_TYPES)}')
        self._writer = Ros2McapWriter(stream, chunk_size=chunk_size_bytes,
                                      compression=compressions[compression])
        self._schemas = {}
        self._sequence = {}
        self.message_counts = dict.fromkeys(self.topics, 0)

    def write(self, role, message, log_time_ns, publish_time_ns=None):
        """
        Write one message of a stream.

        :param role: a key of ``topics``
        :param message: dict shaped like the role's ROS message type
        :param log_time_ns: arrival time at the recorder (ns since the epoch)
        :param publish_time_ns: source time (ns); defaults to ``log_time_ns``
        :raises KeyError: for an unknown role
        """
        ros_type, topic = ROLE_TYPES[role], self.topics[role]
        if role == 'image':
            raw_topic, compressed_topic = image_topics(topic)
            if 'encoding' in message:
                topic = raw_topic
            else:
                ros_type, topic = COMPRESSED_IMAGE_TYPE, compressed_topic
        schema = self._schemas.get(ros_type)
        if schema is None:
            schema = self._writer.register_msgdef(ros_type, message_definition(ros_type))
            self._schemas[ros_type] = schema
        if topic not in self._writer._channel_ids:
            # The channel carries the QoS offered, as rosbag2 writes it (rosbags matches it
            # against metadata.yaml); mcap_ros2 0.6 registers channels without metadata.
            self._writer._channel_ids[topic] = self._writer._writer.register_channel(
                topic=topic, message_encoding='cdr', schema_id=schema.id,
                metadata={'offered_qos_profiles': offered_qos(_QOS_DEPTH.get(role, 10))})
        self._sequence[topic] = self._sequence.get(topic, 0) + 1
        self._writer.write_message(topic, schema, message, log_time=int(log_time_ns),
                                   publish_time=int(log_time_ns if publish_time_ns is None
                                                    else publish_time_ns),
                                   sequence=self._sequence[topic])
        self.message_counts[role] += 1

    def add_metadata(self, name, values):
        """
        Write a metadata record (goes to the stream at once).

        :param name: record name
        :param values: dict str -> str
        """
        self._writer.add_metadata(name, {str(k): str(v) for k, v in values.items()})

    def finish(self):
        """Write the last chunk, the summary and the footer (the stream stays open)."""
        self._writer.finish()


def episode_data_file(path):
    """
    Find the MCAP file of an episode given as a bag directory or as the file itself.

    A bag directory's file is the first of ``relative_file_paths`` in its ``metadata.yaml``, or,
    without one (a crash between moving the file in and writing it), its only ``.mcap`` file.

    :param path: bag directory or MCAP file
    :return: Path of the MCAP file
    :raises EpisodeFileError: when there is no such file or directory, or no MCAP file in it
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise EpisodeFileError(path, 'no such file or bag directory')
    metadata_path = path / BAG_METADATA_FILE
    if metadata_path.is_file():
        try:
            info = yaml.safe_load(metadata_path.read_text())['rosbag2_bagfile_information']
            candidate = path / Path(info['relative_file_paths'][0]).name
        except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
            raise EpisodeFileError(path, f'unreadable {BAG_METADATA_FILE} ({exc!r})') from exc
        if not candidate.is_file():
            raise EpisodeFileError(path, f'{BAG_METADATA_FILE} names {candidate.name}, '
                                         'which is missing')
        return candidate
    files = sorted(path.glob('*.mcap'))
    if len(files) != 1:
        raise EpisodeFileError(path, f'a bag directory without {BAG_METADATA_FILE} must hold '
                                     f'exactly one .mcap file, found {len(files)}')
    return files[0]


def _read_file_metadata(reader):
    records = {}
    for record in reader.iter_metadata():
        records[record.name] = dict(record.metadata)
    return records


def _open_reader(path, stream):
    try:
        reader = make_reader(stream, validate_crcs=True, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
    except Exception as exc:  # noqa: B902 - the mcap reader raises many types on a torn file
        raise EpisodeFileError(path, f'not a readable MCAP file ({exc!r})') from exc
    if summary is None:
        raise EpisodeFileError(path, 'no MCAP summary: the file is torn or was never finished')
    return reader, summary


def read_episode_info(path):
    """
    Read the metadata and message counts of an episode without decoding its messages.

    :param path: episode bag directory or MCAP file
    :return: dict with the ``active_finetune`` metadata (strings) plus 'frames' (int, image
        messages) and 'message_counts' (topic -> int)
    :raises EpisodeFileError: when the file is missing, torn, or has no episode metadata
    """
    path = episode_data_file(path)
    with open(path, 'rb') as stream:
        reader, summary = _open_reader(path, stream)
        try:
            records = _read_file_metadata(reader)
        except Exception as exc:  # noqa: B902 - the mcap reader raises many types on corruption
            raise EpisodeFileError(path, f'unreadable metadata ({exc!r})') from exc
    if METADATA_NAME not in records:
        raise EpisodeFileError(path, f'no {METADATA_NAME!r} metadata record (not an episode file)')
    info = dict(records[METADATA_NAME])
    topics = _topics_of(path, info)
    counts = {}
    if summary.statistics is not None:
        for channel_id, count in summary.statistics.channel_message_counts.items():
            channel = summary.channels.get(channel_id)
            if channel is not None:
                counts[channel.topic] = count
    info['message_counts'] = counts
    info['frames'] = sum(counts.get(topic, 0) for topic in set(image_topics(topics['image'])))
    return info


def _topics_of(path, metadata):
    try:
        topics = json.loads(metadata.get('topics', '{}')) or {}
    except ValueError as exc:
        raise EpisodeFileError(path, f'metadata topics is not JSON: {metadata["topics"]!r}') \
            from exc
    return {**DEFAULT_TOPICS, **topics}


def _float_metadata(path, metadata, key):
    try:
        value = float(metadata[key])
    except KeyError as exc:
        raise EpisodeFileError(path, f'metadata has no {key!r}') from exc
    except ValueError as exc:
        raise EpisodeFileError(path, f'metadata {key} is not a number: {metadata[key]!r}') from exc
    if not np.isfinite(value) or value <= 0:
        raise EpisodeFileError(path, f'metadata {key} must be a positive number, got {value!r}')
    return value


def _hold_metadata(path, metadata):
    if 'max_command_hold_s' not in metadata:
        return DEFAULT_MAX_COMMAND_HOLD_S
    try:
        value = float(metadata['max_command_hold_s'])
    except ValueError as exc:
        raise EpisodeFileError(path, f'metadata max_command_hold_s is not a number: '
                                     f"{metadata['max_command_hold_s']!r}") from exc
    if not (np.isfinite(value) and value >= 0):
        raise EpisodeFileError(path, f'metadata max_command_hold_s must be >= 0, got {value!r}')
    return value


def _stamp_ns(message):
    stamp = message.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def load_episode(path, image_size=(96, 96), joint_states=False):
    """
    Load an episode file as aligned arrays, one row per camera frame with a state and a command.

    Rows follow :mod:`active_finetune.data.alignment` (the in-process rollout's convention): row t
    holds frame t, the newest ``ee_pose`` and gripper-carrying ``joint_states`` at or before the
    frame (by header stamp), and the operator's command *after* the frame: the first
    ``teleop/twist`` issued after it and no later than the next frame (else the previous twist,
    held when at most ``max_command_hold_s`` of the metadata old, default
    :data:`~active_finetune.data.alignment.DEFAULT_MAX_COMMAND_HOLD_S`; else no row) and the
    first ``teleop/gripper`` received after it (else the previous one).  The last frame, frames
    before the first state and frames without a command have no row.  Proprioception is
    :func:`~active_finetune.policy.inputs.proprio_from_robot` of the pose position and the
    gripper joint (metadata ``gripper_joint_name`` / ``gripper_open_position``); the action is
    the twist's linear velocity divided by ``max_linear_velocity_mps`` and the gripper command,
    clipped to [-1, 1].  Joint states without the gripper joint are ignored (drivers may publish
    arm and gripper separately).  Frames may be raw (sensor_msgs/Image rgb8, bgr8 or mono8), JPEG
    or PNG; they are resized to ``image_size`` with area interpolation (as the policy does), or
    kept at full resolution with ``image_size=None``.

    :param path: episode bag directory, or its MCAP file, or an older single-file episode
    :param image_size: (height, width) of the returned images, or None for the recorded size
        (every frame must have the same)
    :param joint_states: also return each row's joint positions: those of the ``joint_states``
        message its gripper opening comes from, by name in the order of the first such message
        (NaN for a joint a message lacks); Episode.joint_positions and metadata 'joint_names'
    :return: :class:`~active_finetune.data.episode.Episode` (metadata: the file's
        ``active_finetune`` record plus 'path' (the MCAP file), 'frames_skipped' (frames
        without a row), 'frames_dropped' (reason -> count), 'commands_held' (rows with a held
        twist), 'alignment_clocks' (role -> 'stamp' or 'log') and 'frame_log_times_ns' (of the
        rows))
    :raises EpisodeFileError: for a missing, torn or corrupt file, a missing topic or joint, or
        no usable frame
    """
    if image_size is not None:
        image_size = (int(image_size[0]), int(image_size[1]))
        if image_size[0] < 1 or image_size[1] < 1:
            raise ValueError(f'image_size must be positive (height, width), got {image_size!r}')
    path = episode_data_file(path)
    with open(path, 'rb') as stream:
        reader, summary = _open_reader(path, stream)
        try:
            records = _read_file_metadata(reader)
        except Exception as exc:  # noqa: B902 - the mcap reader raises many types on corruption
            raise EpisodeFileError(path, f'unreadable metadata ({exc!r})') from exc
        if METADATA_NAME not in records:
            raise EpisodeFileError(path, f'no {METADATA_NAME!r} metadata record')
        metadata = dict(records[METADATA_NAME])
        topics = _topics_of(path, metadata)
        present = {channel.topic for channel in summary.channels.values()}
        role_of = {topics[role]: role for role in REQUIRED_ROLES if topics[role] in present}
        role_of.update({topic: 'image' for topic in image_topics(topics['image'])
                        if topic in present})
        missing = [topics[role] for role in REQUIRED_ROLES if role not in role_of.values()]
        if missing:
            raise EpisodeFileError(path, f'missing topics {missing}; '
                                         f'the file has {sorted(present)}')
        streams = {role: ([], []) for role in REQUIRED_ROLES}
        try:
            for _, channel, message, decoded in reader.iter_decoded_messages(
                    topics=list(role_of), log_time_order=True):
                times, values = streams[role_of[channel.topic]]
                times.append(message.log_time)
                values.append(decoded)
        except Exception as exc:  # noqa: B902 - the mcap reader raises many types on corruption
            raise EpisodeFileError(path, f'corrupt message data ({exc!r})') from exc
    return _align(path, metadata, streams, image_size, joint_states)


def _joint_positions(joint_states, indices):
    names = list(joint_states[indices[0]].name)
    positions = np.full((len(indices), len(names)), np.nan)
    for row, index in enumerate(indices):
        message = joint_states[index]
        values = dict(zip(message.name, message.position))
        positions[row] = [values.get(name, np.nan) for name in names]
    return names, positions


def _align(path, metadata, streams, image_size, joint_states=False):
    max_speed_mps = _float_metadata(path, metadata, 'max_linear_velocity_mps')
    open_position = _float_metadata(path, metadata, 'gripper_open_position')
    hold_s = _hold_metadata(path, metadata)
    gripper_joint = metadata.get('gripper_joint_name', '')
    task = metadata.get('task', '')
    if not task:
        raise EpisodeFileError(path, 'metadata names no task')
    joint_times, joint_states = streams['joint_states']
    with_gripper = [i for i, msg in enumerate(joint_states) if gripper_joint in list(msg.name)]
    if joint_states and not with_gripper:
        names = list(joint_states[0].name)
        raise EpisodeFileError(path, f'no joint_states message has the joint {gripper_joint!r} '
                                     f'(gripper_joint_name); they have {names}')
    streams['joint_states'] = ([joint_times[i] for i in with_gripper],
                               [joint_states[i] for i in with_gripper])
    for role, (times, _) in streams.items():
        if not times:
            raise EpisodeFileError(path, f'no {role} messages')
    times = {role: StreamTimes(None if role == 'gripper' else [_stamp_ns(m) for m in values],
                               log_times)
             for role, (log_times, values) in streams.items()}
    rows = align_rows(times['image'], times['joint_states'], times['ee_pose'], times['twist'],
                      times['gripper'], max_command_hold_ns=int(round(hold_s * 1e9)))
    frame_count = len(times['image'])
    if not len(rows):
        raise EpisodeFileError(path, f'none of {frame_count} frames has a joint state and pose '
                                     f'at or before it and a teleop command after it '
                                     f'(frames without a row: {rows.dropped})')
    gripper_positions = []
    for index in rows.joint_states:
        joint_state = streams['joint_states'][1][index]
        gripper_positions.append(joint_state.position[list(joint_state.name).index(gripper_joint)])
    poses = [streams['ee_pose'][1][index].pose.position for index in rows.ee_pose]
    proprio = proprio_from_robot([[p.x, p.y, p.z] for p in poses], gripper_positions,
                                 open_position)
    twists = [streams['twist'][1][index].twist.linear for index in rows.twist]
    actions = np.empty((len(rows), ACTION_DIM), dtype=np.float64)
    actions[:, :3] = np.array([[v.x, v.y, v.z] for v in twists], dtype=np.float64) / max_speed_mps
    actions[:, 3] = [streams['gripper'][1][index].data for index in rows.gripper]
    np.clip(actions, -1.0, 1.0, out=actions)
    images, full_size = None, image_size is None
    for row, frame in enumerate(rows.frames):
        try:
            rgb = frame_rgb(streams['image'][1][frame])
        except ValueError as exc:
            raise EpisodeFileError(path, f'frame {frame}: {exc}') from exc
        if images is None:
            image_size = rgb.shape[:2] if full_size else image_size
            images = np.empty((len(rows), image_size[0], image_size[1], 3), dtype=np.uint8)
        if full_size and rgb.shape[:2] != image_size:
            raise EpisodeFileError(path, f'frame {frame} is {rgb.shape[:2]}, the first '
                                         f'{image_size}: give an image_size to resize them')
        if rgb.shape[:2] != image_size:
            rgb = cv2.resize(rgb, (image_size[1], image_size[0]), interpolation=cv2.INTER_AREA)
        images[row] = rgb
    info = dict(metadata)
    info.update(path=str(path), frames_skipped=frame_count - len(rows),
                frames_dropped=dict(rows.dropped), commands_held=int(np.sum(rows.held)),
                alignment_clocks=dict(rows.clocks),
                frame_log_times_ns=times['image'].log_ns[rows.frames].tolist())
    joint_positions = None
    if joint_states:
        info['joint_names'], joint_positions = _joint_positions(streams['joint_states'][1],
                                                                rows.joint_states)
    try:
        return Episode(task=task, proprio=proprio, actions=actions.astype(np.float32),
                       images=images, success=metadata.get('success') == 'true', metadata=info,
                       joint_positions=joint_positions)
    except EpisodeError as exc:
        raise EpisodeFileError(path, str(exc)) from exc


def salvage_records(path):
    """
    Read every complete record of a possibly torn MCAP file, in file order.

    Reading stops at the first record that is cut off or fails its CRC; chunks are opened, so
    their messages come out one by one.

    :param path: file to read
    :return: (schemas {id: Schema}, channels {id: Channel}, messages [Message],
        metadata {name: dict}, stop_reason str or '' when the file ended cleanly)
    :raises EpisodeFileError: when not even the MCAP header can be read
    """
    schemas, channels, messages, metadata = {}, {}, [], {}
    stop_reason = ''
    with open(path, 'rb') as stream:
        try:
            records = StreamReader(stream, validate_crcs=True).records
            first = next(records)
        except Exception as exc:  # noqa: B902 - the mcap reader raises many types on a torn file
            raise EpisodeFileError(path, f'no readable MCAP header ({exc!r})') from exc
        del first
        try:
            for record in records:
                if isinstance(record, Schema):
                    schemas[record.id] = record
                elif isinstance(record, Channel):
                    channels[record.id] = record
                elif isinstance(record, Message):
                    messages.append(record)
                elif isinstance(record, Metadata):
                    metadata[record.name] = dict(record.metadata)
        except Exception as exc:  # noqa: B902 - the mcap reader raises many types on a torn file
            stop_reason = repr(exc)
    return schemas, channels, messages, metadata, stop_reason


def rewrite_salvaged(path, stream, metadata_updates):
    """
    Write the salvaged content of a torn episode file as a complete MCAP file.

    :param path: the torn file
    :param stream: writable binary stream for the new file
    :param metadata_updates: values merged into the episode metadata (e.g. recovered='true')
    :return: dict with 'messages', 'frames' (image messages), 'stop_reason', 'metadata'
    :raises EpisodeFileError: when the file has no readable header or no message at all
    """
    schemas, channels, messages, metadata, stop_reason = salvage_records(path)
    if not messages:
        raise EpisodeFileError(path, f'no complete message to recover ({stop_reason or "empty"})')
    writer = McapWriter(stream, compression=CompressionType.ZSTD)
    writer.start(profile='ros2', library='active_finetune recovery')
    schema_ids, channel_ids = {}, {}
    for schema in schemas.values():
        schema_ids[schema.id] = writer.register_schema(schema.name, schema.encoding, schema.data)
    for channel in channels.values():
        if channel.schema_id in schema_ids:
            channel_ids[channel.id] = writer.register_channel(
                channel.topic, channel.message_encoding, schema_ids[channel.schema_id],
                dict(channel.metadata))
    kept = 0
    for message in messages:
        if message.channel_id in channel_ids:
            writer.add_message(channel_ids[message.channel_id], message.log_time, message.data,
                               message.publish_time, message.sequence)
            kept += 1
    episode_metadata = dict(metadata.get(METADATA_NAME) or metadata.get(START_METADATA_NAME) or {})
    for name, values in metadata.items():
        if name not in (METADATA_NAME, START_METADATA_NAME):
            writer.add_metadata(name, values)
    if START_METADATA_NAME in metadata:
        writer.add_metadata(START_METADATA_NAME, metadata[START_METADATA_NAME])
    topics = _topics_of(path, episode_metadata)
    image_channels = {cid for cid, ch in channels.items() if ch.topic == topics['image']}
    frames = sum(1 for m in messages if m.channel_id in image_channels)
    episode_metadata.update({str(k): str(v) for k, v in metadata_updates.items()})
    episode_metadata['frames'] = str(frames)
    writer.add_metadata(METADATA_NAME, episode_metadata)
    writer.finish()
    return {'messages': kept, 'frames': frames, 'stop_reason': stop_reason,
            'metadata': episode_metadata}


def bag_metadata(data_file):
    """
    Describe an episode's MCAP file as rosbag2's ``metadata.yaml`` does (version 8, Jazzy).

    Topics come from the file's channels and schemas, counts and times from its summary
    statistics (log times: what ``ros2 bag play`` replays by).  Each topic's offered QoS is its
    channel's ``offered_qos_profiles`` (as rosbag2 stores it in MCAP channels; rosbags insists the
    two agree): the writer offers reliable, volatile, keep last 5 (images) or 10 (the rest), as
    the package's publishers do, so a played bag matches the policy node's reliable
    subscriptions.  Files written before carry none (''; ``ros2 bag play`` then offers its
    default, reliable).

    :param data_file: the episode's MCAP file
    :return: dict {'rosbag2_bagfile_information': {...}}
    :raises EpisodeFileError: when the file is torn or has no statistics
    """
    data_file = Path(data_file)
    with open(data_file, 'rb') as stream:
        _, summary = _open_reader(data_file, stream)
    statistics = summary.statistics
    if statistics is None:
        raise EpisodeFileError(data_file, 'no MCAP statistics record')
    topics = []
    for channel_id in sorted(summary.channels):
        channel = summary.channels[channel_id]
        schema = summary.schemas.get(channel.schema_id)
        if schema is None:
            continue
        topics.append({
            'topic_metadata': {
                'name': channel.topic, 'type': schema.name,
                'serialization_format': channel.message_encoding,
                'offered_qos_profiles': channel.metadata.get('offered_qos_profiles', ''),
                'type_description_hash': ''},
            'message_count': int(statistics.channel_message_counts.get(channel_id, 0))})
    count = int(statistics.message_count)
    start_ns = int(statistics.message_start_time) if count else 0
    duration_ns = int(statistics.message_end_time) - start_ns if count else 0
    span = {'starting_time': {'nanoseconds_since_epoch': start_ns},
            'duration': {'nanoseconds': duration_ns}}
    return {'rosbag2_bagfile_information': {
        'version': ROSBAG2_METADATA_VERSION, 'storage_identifier': 'mcap',
        'relative_file_paths': [data_file.name], **span, 'message_count': count,
        'topics_with_message_count': topics, 'compression_format': '', 'compression_mode': '',
        'files': [{'path': data_file.name, **span, 'message_count': count}],
        'custom_data': {}, 'ros_distro': 'jazzy'}}


def write_bag_metadata(bag_dir, data_file=None):
    """
    Write (atomically) a bag directory's ``metadata.yaml`` from its MCAP file.

    :param bag_dir: the bag directory
    :param data_file: its MCAP file (default: :func:`episode_data_file` of the directory)
    :return: Path of metadata.yaml
    :raises EpisodeFileError: when the MCAP file is missing or torn
    """
    bag_dir = Path(bag_dir)
    if data_file is None:
        data_file = episode_data_file(bag_dir)
    text = yaml.safe_dump(bag_metadata(data_file), default_flow_style=False, sort_keys=False)
    target = bag_dir / BAG_METADATA_FILE
    tmp = target.with_name(target.name + '.tmp')
    with open(tmp, 'w') as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, target)
    return target


def finalise_bag(data_file, bag_dir):
    """
    Make a finished episode file a rosbag2 bag: move it into ``bag_dir``, describe it, fsync.

    Order (crash-safe): the directory is created, the file is moved in under the directory's name
    (``<bag_dir name>.mcap``, one rename: its bytes, and so its sha256, do not change), then
    ``metadata.yaml`` is written, then both directories are fsynced.  A crash before the move
    leaves the file where it was; one after it leaves a directory that :func:`episode_data_file`
    reads without metadata.yaml and :func:`write_bag_metadata` completes.

    :param data_file: the finished MCAP file
    :param bag_dir: the bag directory to create (must not hold another episode)
    :return: Path of the MCAP file inside the bag
    :raises FileExistsError: when ``bag_dir`` already holds the file
    :raises EpisodeFileError: when the file is torn
    """
    bag_dir = Path(bag_dir)
    bag_dir.mkdir(exist_ok=True)
    target = bag_dir / f'{bag_dir.name}.mcap'
    if target.exists():
        raise FileExistsError(f'{target} exists')
    os.replace(data_file, target)
    write_bag_metadata(bag_dir, target)
    fsync_directory(bag_dir)
    fsync_directory(bag_dir.parent)
    return target
