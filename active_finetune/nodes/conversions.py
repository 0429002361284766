"""
Message <-> numpy conversions: the only place in the package where they live.

Plain numpy, no cv_bridge (no wheel of it exists).  Stamps are always taken from
the message header (the source's time), never from the arrival time.
"""

from dataclasses import dataclass
import math

from builtin_interfaces.msg import Time
from geometry_msgs.msg import TwistStamped
import numpy as np
from sensor_msgs.msg import CameraInfo, Image

IMAGE_CHANNELS = {'rgb8': 3, 'bgr8': 3, 'mono8': 1}
"""Image encodings this module reads, with their number of 8-bit channels."""


class ConversionError(ValueError):
    """A message cannot be converted because its content is inconsistent or unsupported."""


class MalformedImageError(ConversionError):
    """An Image whose size, step or data length do not agree with each other."""


class UnsupportedEncodingError(ConversionError):
    """An Image with an encoding other than rgb8, bgr8 or mono8."""


class MalformedJointStateError(ConversionError):
    """A JointState whose name and position arrays differ in length."""


class ImageTooLargeError(ConversionError):
    """An Image larger than the receiver accepts (refused before any conversion)."""


class MalformedCdrError(ConversionError):
    """Serialised message bytes that are not a CDR-encoded std_msgs/String."""


def stamp_to_s(stamp):
    """
    Convert a builtin_interfaces/Time to float seconds.

    :param stamp: builtin_interfaces.msg.Time
    :return: seconds as float
    """
    return stamp.sec + stamp.nanosec * 1e-9


def s_to_stamp(time_s):
    """
    Convert float seconds to a builtin_interfaces/Time.

    :param time_s: seconds (finite, >= 0)
    :return: builtin_interfaces.msg.Time
    :raises ValueError: for a negative or non-finite time
    """
    if not math.isfinite(time_s) or time_s < 0.0:
        raise ValueError(f'a stamp needs a finite time >= 0 s, got {time_s!r}')
    sec = int(time_s)
    nanosec = int(round((time_s - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=sec, nanosec=nanosec)


def header_stamp_s(msg):
    """
    Read the source time of a stamped message.

    :param msg: any message with a ``header``
    :return: header stamp in seconds
    """
    return stamp_to_s(msg.header.stamp)


@dataclass(frozen=True)
class ImageSize:
    """
    What a serialised sensor_msgs/Image says about its size (read without deserialising it).

    :param width: width (px)
    :param height: height (px)
    :param encoding: the encoding name
    :param data_bytes: length of the pixel data (bytes)
    """

    width: int
    height: int
    encoding: str
    data_bytes: int


def check_image_dimensions(width, height, data_bytes, max_pixels):
    """
    Refuse an image too large to be worth converting, by its size only.

    :param width: width (px)
    :param height: height (px)
    :param data_bytes: length of its pixel data (bytes)
    :param max_pixels: most pixels (width x height) accepted; the data may hold at most 4 bytes
        per such pixel (3 channels and row padding)
    :raises ImageTooLargeError: naming the size, when either limit is exceeded
    """
    pixels = width * height
    if pixels > max_pixels:
        raise ImageTooLargeError(
            f'image {width}x{height} ({pixels} pixels) exceeds max_image_pixels '
            f'{max_pixels}; refused before conversion')
    if data_bytes > 4 * max_pixels:
        raise ImageTooLargeError(
            f'image data of {data_bytes} bytes exceeds {4 * max_pixels} bytes (4 x '
            f'max_image_pixels {max_pixels}); refused before conversion')


def check_image_size(msg, max_pixels):
    """
    Refuse an Image too large to be worth converting, by its header and data length only.

    :param msg: sensor_msgs.msg.Image
    :param max_pixels: see :func:`check_image_dimensions`
    :raises ImageTooLargeError: naming the size, when either limit is exceeded
    """
    check_image_dimensions(msg.width, msg.height, len(msg.data), max_pixels)


class _CdrReader:
    """Read CDR primitives from serialised bytes (offsets aligned from after the 4-byte header)."""

    def __init__(self, raw):
        self.view = memoryview(raw).cast('B')
        if len(self.view) < 4:
            raise MalformedCdrError(f'serialised message of {len(self.view)} bytes is too short')
        kind = bytes(self.view[:2])
        if kind not in (b'\x00\x00', b'\x00\x01'):
            raise MalformedCdrError(
                f'unknown CDR encapsulation {kind.hex()} (expected 0000 or 0001)')
        self.order = 'little' if kind == b'\x00\x01' else 'big'
        self.offset = 4

    def _take(self, size, align):
        self.offset += -(self.offset - 4) % align
        end = self.offset + size
        if end > len(self.view):
            raise MalformedCdrError(
                f'serialised message of {len(self.view)} bytes ends before byte {end}')
        start, self.offset = self.offset, end
        return self.view[start:end]

    def uint32(self):
        return int.from_bytes(self._take(4, 4), self.order)

    def uint8(self):
        return self._take(1, 1)[0]

    def string(self):
        length = self.uint32()
        return bytes(self._take(length, 1)).rstrip(b'\x00').decode(errors='replace')


def cdr_image_size(raw):
    """
    Read the size of a serialised sensor_msgs/Image (a raw subscription's bytes), not its pixels.

    :param raw: the serialised message (bytes)
    :return: :class:`ImageSize`
    :raises MalformedCdrError: when the bytes are not a serialised Image
    """
    reader = _CdrReader(raw)
    reader.uint32()  # header.stamp.sec
    reader.uint32()  # header.stamp.nanosec
    reader.string()  # header.frame_id
    height, width = reader.uint32(), reader.uint32()
    encoding = reader.string()
    reader.uint8()  # is_bigendian
    reader.uint32()  # step
    data_bytes = reader.uint32()
    if reader.offset + data_bytes > len(reader.view):
        raise MalformedCdrError(f'serialised Image announces {data_bytes} bytes of data but '
                                f'holds {len(reader.view) - reader.offset}')
    return ImageSize(width=width, height=height, encoding=encoding, data_bytes=data_bytes)


def cdr_string_data(raw):
    """
    Point at the text of a serialised std_msgs/String (a raw subscription's bytes) without a copy.

    Layout: 4-byte encapsulation header (``00 01`` little endian, ``00 00`` big endian), a
    uint32 length counting the terminating NUL, the UTF-8 bytes, the NUL.

    :param raw: the serialised message (bytes)
    :return: memoryview of the UTF-8 text (without the NUL)
    :raises MalformedCdrError: for an unknown encapsulation or a length that does not fit
    """
    reader = _CdrReader(raw)
    if len(reader.view) < 8:
        raise MalformedCdrError(
            f'serialised std_msgs/String of {len(reader.view)} bytes is too short')
    length = reader.uint32()
    if length < 1 or 8 + length > len(reader.view):
        raise MalformedCdrError(
            f'CDR string length {length} does not fit a message of {len(reader.view)} bytes')
    return reader.view[8:8 + length - 1]


def image_to_rgb(msg):
    """
    Convert a sensor_msgs/Image to an RGB array.

    rgb8 is returned as is (a copy), bgr8 has its channels swapped and mono8 is
    repeated over three channels.  Row padding (``step`` larger than a row) is
    removed.

    :param msg: sensor_msgs.msg.Image
    :return: (height, width, 3) uint8 array
    :raises UnsupportedEncodingError: for an encoding other than rgb8, bgr8, mono8
    :raises MalformedImageError: when step, height and data length disagree
    """
    channels = IMAGE_CHANNELS.get(msg.encoding)
    if channels is None:
        raise UnsupportedEncodingError(
            f'image encoding {msg.encoding!r} is not supported; '
            f'use one of {sorted(IMAGE_CHANNELS)}')
    height, width, step = msg.height, msg.width, msg.step
    row_bytes = width * channels
    if height == 0 or width == 0:
        raise MalformedImageError(f'image has no pixels: {width}x{height}')
    if step < row_bytes:
        raise MalformedImageError(
            f'image step {step} is smaller than a {msg.encoding} row of width {width} '
            f'({row_bytes} bytes)')
    if len(msg.data) != step * height:
        raise MalformedImageError(
            f'image data has {len(msg.data)} bytes, expected step*height = {step}*{height} = '
            f'{step * height}')
    flat = np.frombuffer(msg.data, dtype=np.uint8)
    pixels = flat.reshape(height, step)[:, :row_bytes].reshape(height, width, channels)
    if msg.encoding == 'rgb8':
        return pixels.copy()
    if msg.encoding == 'bgr8':
        return np.ascontiguousarray(pixels[:, :, ::-1])
    return np.repeat(pixels, 3, axis=2)


def rgb_to_image(rgb, stamp_s, frame_id):
    """
    Build an rgb8 sensor_msgs/Image from an RGB array.

    :param rgb: (height, width, 3) uint8 array
    :param stamp_s: source time of the image in seconds (goes into the header)
    :param frame_id: optical frame of the camera
    :return: sensor_msgs.msg.Image
    :raises MalformedImageError: for an array that is not (H, W, 3) uint8
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3:
        shape = getattr(rgb, 'shape', None)
        dtype = getattr(rgb, 'dtype', type(rgb).__name__)
        raise MalformedImageError(f'expected an (H, W, 3) uint8 array, got shape {shape} {dtype}')
    msg = Image()
    msg.header.stamp = s_to_stamp(stamp_s)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = 'rgb8'
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


def camera_info_from_intrinsics(intrinsics, stamp_s, frame_id):
    """
    Build a sensor_msgs/CameraInfo for an unrectified pinhole camera.

    An uncalibrated camera (fx == 0) gives all-zero K and P, which ROS reads as
    "no calibration".

    :param intrinsics: any object with ``width``, ``height``, ``fx``, ``fy``,
        ``cx``, ``cy``, ``distortion_model`` and ``distortion`` (a sequence of floats),
        such as :class:`active_finetune.devices.camera.CameraIntrinsics`
    :param stamp_s: source time in seconds, the same as the image it describes
    :param frame_id: optical frame of the camera
    :return: sensor_msgs.msg.CameraInfo
    """
    msg = CameraInfo()
    msg.header.stamp = s_to_stamp(stamp_s)
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(intrinsics.width), int(intrinsics.height)
    msg.distortion_model = intrinsics.distortion_model
    msg.d = [float(c) for c in intrinsics.distortion]
    fx, fy, cx, cy = (float(v) for v in (intrinsics.fx, intrinsics.fy, intrinsics.cx,
                                         intrinsics.cy))
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def joint_positions(msg):
    """
    Read joint positions by name from a sensor_msgs/JointState.

    :param msg: sensor_msgs.msg.JointState
    :return: dict joint name -> position (rad or m)
    :raises MalformedJointStateError: when names and positions differ in length
    """
    if len(msg.name) != len(msg.position):
        raise MalformedJointStateError(
            f'joint state has {len(msg.name)} names but {len(msg.position)} positions')
    return {name: float(position) for name, position in zip(msg.name, msg.position)}


def pose_position(msg):
    """
    Read the position of a geometry_msgs/PoseStamped.

    :param msg: geometry_msgs.msg.PoseStamped
    :return: (3,) float64 array x, y, z in metres
    """
    p = msg.pose.position
    return np.array([p.x, p.y, p.z], dtype=np.float64)


def twist_linear(twist):
    """
    Read the linear velocity of a geometry_msgs/Twist.

    :param twist: geometry_msgs.msg.Twist (for a TwistStamped pass ``msg.twist``)
    :return: (3,) float64 array vx, vy, vz in m/s
    """
    v = twist.linear
    return np.array([v.x, v.y, v.z], dtype=np.float64)


def twist_angular(twist):
    """
    Read the angular velocity of a geometry_msgs/Twist.

    :param twist: geometry_msgs.msg.Twist
    :return: (3,) float64 array wx, wy, wz in rad/s
    """
    w = twist.angular
    return np.array([w.x, w.y, w.z], dtype=np.float64)


def twist_stamped_to_linear(msg):
    """
    Read the linear velocity of a geometry_msgs/TwistStamped.

    :param msg: geometry_msgs.msg.TwistStamped
    :return: (3,) float64 array vx, vy, vz in m/s
    """
    return twist_linear(msg.twist)


def linear_to_twist_stamped(linear_mps, stamp_s, frame_id):
    """
    Build a geometry_msgs/TwistStamped with a linear velocity and zero angular velocity.

    :param linear_mps: (3,) vx, vy, vz in m/s
    :param stamp_s: time of the command in seconds
    :param frame_id: frame the velocity is expressed in (the robot base, REP 103)
    :return: geometry_msgs.msg.TwistStamped
    :raises ValueError: when ``linear_mps`` does not have 3 elements
    """
    linear = np.asarray(linear_mps, dtype=np.float64).reshape(-1)
    if linear.shape != (3,):
        raise ValueError(f'a linear velocity needs 3 elements, got shape {linear.shape}')
    msg = TwistStamped()
    msg.header.stamp = s_to_stamp(stamp_s)
    msg.header.frame_id = frame_id
    msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(v) for v in linear)
    return msg
