"""
Cameras behind one small interface: connect, read, disconnect (and ``with``).

- :class:`RealSenseCamera`: Intel RealSense through pyrealsense2 (imported
  lazily, so this module works without it), live or playing a recording.
- :class:`OpenCVCamera`: ``cv2.VideoCapture`` on a device index, a device path
  or a video file (played at its frame rate, optionally looped).
- :class:`FakeCamera`: synthetic frames at a fixed rate, unpluggable, for tests.

A read returns a :class:`Frame`: RGB uint8 (H, W, 3) and its capture time in
seconds on the system clock (``time.time()``), which is what ROS stamps use.
"""

import abc
from dataclasses import dataclass, field
import logging
import math
from pathlib import Path
import threading
import time

import cv2
import numpy as np

logger = logging.getLogger(__name__)

CAMERA_BACKENDS = ('realsense', 'opencv', 'bag')


class CameraError(RuntimeError):
    """Base class of camera failures."""


class CameraNotFound(CameraError):
    """The camera cannot be opened: not plugged in, wrong serial or path, or a missing library."""


class CameraDisconnected(CameraError):
    """A connected camera stopped delivering frames (unplugged, timed out, stream ended)."""


class EndOfStream(CameraDisconnected):
    """A recording played without looping reached its end."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """
    Pinhole intrinsics of the colour image, in pixels.

    All-zero focal lengths mean "uncalibrated" (ROS's convention for CameraInfo).

    :param width: image width (px)
    :param height: image height (px)
    :param fx: focal length x (px)
    :param fy: focal length y (px)
    :param cx: principal point x (px)
    :param cy: principal point y (px)
    :param distortion_model: ROS distortion model name
    :param distortion: distortion coefficients for that model
    """

    width: int
    height: int
    fx: float = 0.0
    fy: float = 0.0
    cx: float = 0.0
    cy: float = 0.0
    distortion_model: str = 'plumb_bob'
    distortion: tuple = (0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def calibrated(self):
        """:return: True when focal lengths are known."""
        return self.fx > 0.0 and self.fy > 0.0


@dataclass(frozen=True)
class Frame:
    """
    One captured image.

    :param rgb: (H, W, 3) uint8 RGB image
    :param capture_time_s: capture time on the system clock (s)
    :param sequence: the device's frame number when it has one (gaps mean dropped
        frames), else None
    :param depth_m: (H, W) float32 depth aligned to ``rgb`` in metres, when enabled
    """

    rgb: np.ndarray
    capture_time_s: float
    sequence: int | None = None
    depth_m: np.ndarray | None = None


class Camera(abc.ABC):
    """A camera: connect, read frames, disconnect; usable as a context manager."""

    description = 'camera'
    """Human-readable identity (device, serial number or file) for logs and status."""

    @abc.abstractmethod
    def connect(self):
        """
        Open the device or file.

        :raises CameraNotFound: when it cannot be opened
        """

    @abc.abstractmethod
    def read(self):
        """
        Wait for and return the next frame.

        :return: :class:`Frame`
        :raises CameraDisconnected: when no frame comes (unplugged, timeout, end of stream)
        :raises CameraError: when not connected
        """

    @abc.abstractmethod
    def disconnect(self):
        """Release the device (safe to call twice or when never connected)."""

    @property
    @abc.abstractmethod
    def is_connected(self):
        """:return: True between a successful connect() and disconnect()."""

    @property
    @abc.abstractmethod
    def intrinsics(self):
        """:return: :class:`CameraIntrinsics` of the colour stream."""

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.disconnect()

    def _require_connected(self):
        if not self.is_connected:
            raise CameraError(f'{self.description} is not connected; call connect() first')


class FramePacer:
    """
    Sleep so that successive ticks are ``1 / rate_hz`` apart (for files and fakes).

    Falls back in step when more than one period behind instead of bursting.

    :param rate_hz: tick rate
    """

    def __init__(self, rate_hz):
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f'rate_hz must be positive and finite, got {rate_hz!r}')
        self.period_s = 1.0 / rate_hz
        self._next_s = None

    def wait(self):
        """Sleep until the next tick."""
        now_s = time.monotonic()
        if self._next_s is None or now_s - self._next_s > self.period_s:
            self._next_s = now_s
        else:
            time.sleep(max(0.0, self._next_s - now_s))
        self._next_s += self.period_s


def parse_opencv_source(text):
    """
    Turn a device parameter into a cv2.VideoCapture source.

    :param text: ``'0'`` (device index), ``'/dev/video2'`` or a video file path
    :return: int index or str path
    :raises ValueError: for an empty string
    """
    text = str(text).strip()
    if not text:
        raise ValueError('an OpenCV camera needs a device index, a device path or a video file')
    return int(text) if text.isdigit() else text


class OpenCVCamera(Camera):
    """
    A camera or video file read through ``cv2.VideoCapture``.

    Files are played at their own frame rate (or ``fps``), looping when asked.
    When ``width`` and ``height`` are given, frames of another size are resized
    to it (devices do not always honour the requested size).

    :param source: device index, device path, stream URL or video file path
    :param width: wanted width (px) or None for the source's
    :param height: wanted height (px) or None for the source's
    :param fps: wanted rate (devices) or playback rate (files); None for the source's
    :param loop: restart a video file at its end instead of raising :class:`EndOfStream`
    :param intrinsics: calibration to report, or None for uncalibrated
    """

    def __init__(self, source, width=None, height=None, fps=None, loop=False, intrinsics=None):
        self.source = source
        self.width, self.height, self.fps = width, height, fps
        self.loop = loop
        self._given_intrinsics = intrinsics
        self._capture = None
        self._pacer = None
        self._sequence = 0
        self.is_file = isinstance(source, str) and not source.startswith('/dev/') \
            and Path(source).is_file()
        self.description = f'OpenCV {"file" if self.is_file else "device"} {source!r}'

    @property
    def is_connected(self):
        """:return: True while the capture is open."""
        return self._capture is not None

    @property
    def intrinsics(self):
        """:return: the given calibration, or uncalibrated intrinsics of the output size."""
        self._require_connected()
        if self._given_intrinsics is not None:
            return self._given_intrinsics
        return CameraIntrinsics(width=self._output_size[0], height=self._output_size[1])

    def connect(self):
        """
        Open the capture.

        :raises CameraNotFound: when OpenCV cannot open the source
        """
        if isinstance(self.source, str) and not self.is_file \
                and not self.source.startswith('/dev/') and '://' not in self.source:
            raise CameraNotFound(f'video file {self.source!r} does not exist')
        capture = cv2.VideoCapture(self.source)
        if not capture.isOpened():
            capture.release()
            raise CameraNotFound(
                f'OpenCV could not open {self.source!r}: no such device, no permission '
                '(video group), or an unsupported file')
        if not self.is_file:
            if self.width:
                capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            if self.height:
                capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if self.fps:
                capture.set(cv2.CAP_PROP_FPS, self.fps)
        source_size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                       int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self._output_size = (self.width or source_size[0], self.height or source_size[1])
        if self.is_file:
            rate_hz = self.fps or capture.get(cv2.CAP_PROP_FPS) or 30.0
            self._pacer = FramePacer(rate_hz)
        self._capture = capture
        self._sequence = 0
        logger.info('opened %s (%dx%d)', self.description, *self._output_size)

    def read(self):
        """
        Return the next frame (files: paced at their frame rate).

        :return: :class:`Frame`
        :raises EndOfStream: at the end of a file played without loop
        :raises CameraDisconnected: when a device delivers no frame
        """
        self._require_connected()
        if self._pacer is not None:
            self._pacer.wait()
        ok, bgr = self._capture.read()
        if not ok and self.is_file and self.loop:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._capture.read()
        capture_time_s = time.time()
        if not ok:
            if self.is_file:
                raise EndOfStream(f'{self.description} reached its end (loop is off)')
            raise CameraDisconnected(f'{self.description} delivered no frame (unplugged?)')
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if (rgb.shape[1], rgb.shape[0]) != self._output_size:
            rgb = cv2.resize(rgb, self._output_size, interpolation=cv2.INTER_AREA)
        self._sequence += 1
        return Frame(rgb=rgb, capture_time_s=capture_time_s,
                     sequence=self._sequence if self.is_file else None)

    def disconnect(self):
        """Release the capture."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def import_pyrealsense2():
    """
    Import pyrealsense2 on first use.

    :return: the pyrealsense2 module
    :raises CameraNotFound: when it is not installed or its libraries are missing
    """
    try:
        import pyrealsense2
    except (ImportError, OSError) as error:
        raise CameraNotFound(
            f'pyrealsense2 cannot be imported ({error}); install it with '
            '`pip install pyrealsense2` and the Debian package libusb-1.0-0') from error
    return pyrealsense2


def ros_distortion_model(rs, model):
    """
    Name a librealsense distortion model the way CameraInfo does.

    :param rs: the pyrealsense2 module
    :param model: a ``rs.distortion`` value
    :return: 'equidistant' for Kannala-Brandt, else 'plumb_bob' (Brown-Conrady
        and no distortion, whose coefficients are zero)
    """
    if model == rs.distortion.kannala_brandt4:
        return 'equidistant'
    return 'plumb_bob'


class RealSenseCamera(Camera):
    """
    An Intel RealSense colour stream (optionally with depth aligned to it), live or recorded.

    Recordings are what librealsense writes: ``.bag`` (rosbag 1, up to 2.5x) or
    ``.db3`` (rosbag2, librealsense 2.59's recorder).

    :param serial_number: device to open; '' for the first one found
    :param width: colour width (px)
    :param height: colour height (px)
    :param fps: frame rate (a rate the device supports: 6, 15, 30, 60)
    :param enable_depth: also stream depth, aligned to the colour image
    :param bag_path: play this recording (.bag or .db3) instead of a device
    :param loop: replay the recording at its end, else raise :class:`EndOfStream`
    :param read_timeout_s: how long a read waits before the camera counts as disconnected
    """

    def __init__(self, serial_number='', width=640, height=480, fps=30, enable_depth=False,
                 bag_path=None, loop=True, read_timeout_s=1.0):
        self.serial_number = serial_number
        self.width, self.height, self.fps = int(width), int(height), int(round(fps))
        self.enable_depth = enable_depth
        self.bag_path = None if bag_path is None else Path(bag_path)
        self.loop = loop
        self.read_timeout_s = read_timeout_s
        self._pipeline = None
        self._align = None
        self._playback = None
        self._depth_scale_m = 1.0
        self._intrinsics = None
        if self.bag_path is not None:
            self.description = f'RealSense recording {str(self.bag_path)!r}'
        else:
            self.description = f'RealSense {serial_number or "(first found)"}'

    @property
    def is_connected(self):
        """:return: True while the pipeline runs."""
        return self._pipeline is not None

    @property
    def intrinsics(self):
        """:return: the colour stream's factory calibration."""
        self._require_connected()
        return self._intrinsics

    def connect(self):
        """
        Start the pipeline on the device or the recording.

        :raises CameraNotFound: when pyrealsense2 is missing, no (matching) device is
            connected, the recording does not exist, or the stream cannot start
        """
        rs = import_pyrealsense2()
        config = rs.config()
        if self.bag_path is not None:
            if not self.bag_path.is_file():
                raise CameraNotFound(f'RealSense recording {str(self.bag_path)!r} does not exist')
            config.enable_device_from_file(str(self.bag_path), repeat_playback=self.loop)
        else:
            serials = [d.get_info(rs.camera_info.serial_number)
                       for d in rs.context().query_devices()]
            if not serials:
                raise CameraNotFound(
                    'no RealSense device connected (pyrealsense2 found none); check the USB 3 '
                    'cable and that the udev rules of librealsense are installed')
            if self.serial_number and self.serial_number not in serials:
                raise CameraNotFound(
                    f'RealSense {self.serial_number!r} is not connected; connected: {serials}')
            if self.serial_number:
                config.enable_device(self.serial_number)
            config.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8,
                                 self.fps)
            if self.enable_depth:
                config.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16,
                                     self.fps)
        pipeline = rs.pipeline()
        try:
            profile = pipeline.start(config)
        except RuntimeError as error:
            raise CameraNotFound(f'{self.description} could not start streaming: {error}') \
                from error
        try:
            color = profile.get_stream(rs.stream.color).as_video_stream_profile()
            raw = color.get_intrinsics()
            self._intrinsics = CameraIntrinsics(
                width=raw.width, height=raw.height, fx=raw.fx, fy=raw.fy, cx=raw.ppx, cy=raw.ppy,
                distortion_model=ros_distortion_model(rs, raw.model),
                distortion=tuple(float(c) for c in raw.coeffs))
            if self.enable_depth:
                self._depth_scale_m = profile.get_device().first_depth_sensor().get_depth_scale()
                self._align = rs.align(rs.stream.color)
            if self.bag_path is not None:
                self._playback = profile.get_device().as_playback()
                self._playback.set_real_time(True)
        except RuntimeError as error:
            pipeline.stop()
            raise CameraNotFound(f'{self.description} has no usable colour stream: {error}') \
                from error
        self._rs = rs
        self._pipeline = pipeline
        logger.info('opened %s (%dx%d at %d Hz)', self.description, self._intrinsics.width,
                    self._intrinsics.height, self.fps)

    def read(self):
        """
        Wait for the next frame set.

        :return: :class:`Frame` (with ``depth_m`` when depth is enabled)
        :raises CameraDisconnected: when no frame arrives within ``read_timeout_s``
        """
        self._require_connected()
        rs = self._rs
        try:
            frames = self._pipeline.wait_for_frames(int(self.read_timeout_s * 1000))
        except RuntimeError as error:
            if self._playback is not None \
                    and self._playback.current_status() == rs.playback_status.stopped:
                raise EndOfStream(f'{self.description} reached its end (loop is off)') \
                    from error
            raise CameraDisconnected(
                f'{self.description} delivered no frame within {self.read_timeout_s} s '
                f'(unplugged?): {error}') from error
        if self._align is not None:
            frames = self._align.process(frames)
        color = frames.get_color_frame()
        if not color:
            raise CameraDisconnected(f'{self.description} delivered a frame set without colour')
        rgb = np.asanyarray(color.get_data()).copy()
        if color.get_profile().format() == rs.format.bgr8:
            rgb = np.ascontiguousarray(rgb[:, :, ::-1])
        if color.get_frame_timestamp_domain() == rs.timestamp_domain.global_time:
            capture_time_s = color.get_timestamp() / 1000.0
        else:
            capture_time_s = time.time()
        depth_m = None
        if self._align is not None:
            depth = frames.get_depth_frame()
            if depth:
                depth_m = np.asanyarray(depth.get_data()).astype(np.float32) * self._depth_scale_m
        return Frame(rgb=rgb, capture_time_s=capture_time_s,
                     sequence=int(color.get_frame_number()), depth_m=depth_m)

    def disconnect(self):
        """Stop the pipeline."""
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            except RuntimeError as error:
                logger.warning('stopping %s: %s', self.description, error)
            self._pipeline = None
            self._align = None
            self._playback = None


class FakeCamera(Camera):
    """
    Synthetic frames at a fixed rate; can be unplugged and plugged back (thread-safe).

    Frame ``n`` has every pixel of the red channel equal to ``n % 256``, so tests
    can tell frames apart.

    :param width: image width (px)
    :param height: image height (px)
    :param fps: frame rate
    """

    description = 'fake camera'

    def __init__(self, width=64, height=48, fps=30.0):
        self.width, self.height = width, height
        self._pacer = FramePacer(fps)
        self._lock = threading.Lock()
        self._plugged = True
        self._connected = False
        self.sequence = 0
        self.connect_count = 0

    @property
    def is_connected(self):
        """:return: True between connect() and disconnect()."""
        return self._connected

    @property
    def intrinsics(self):
        """:return: a plausible calibration for the image size."""
        return CameraIntrinsics(width=self.width, height=self.height, fx=float(self.width),
                                fy=float(self.width), cx=self.width / 2.0, cy=self.height / 2.0)

    def unplug(self):
        """Simulate pulling the cable: reads and connects fail until :meth:`plug`."""
        with self._lock:
            self._plugged = False

    def plug(self):
        """Simulate plugging the cable back in."""
        with self._lock:
            self._plugged = True

    def connect(self):
        """
        Connect when plugged.

        :raises CameraNotFound: while unplugged
        """
        with self._lock:
            if not self._plugged:
                raise CameraNotFound('fake camera is unplugged')
            self._connected = True
            self.connect_count += 1

    def read(self):
        """
        Return the next synthetic frame, paced at ``fps``.

        :return: :class:`Frame`
        :raises CameraDisconnected: while unplugged
        """
        self._require_connected()
        self._pacer.wait()
        with self._lock:
            if not self._plugged:
                raise CameraDisconnected('fake camera was unplugged')
            self.sequence += 1
            sequence = self.sequence
        rgb = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        rgb[:, :, 0] = sequence % 256
        rgb[:, :, 1] = np.arange(self.width, dtype=np.uint8)[None, :]
        return Frame(rgb=rgb, capture_time_s=time.time(), sequence=sequence)

    def disconnect(self):
        """Disconnect."""
        self._connected = False


class FrameRateMonitor:
    """
    Measure the delivered frame rate and count dropped frames.

    Drops are counted from gaps in the device's frame numbers when it has them,
    else from intervals longer than 1.5 expected periods.

    :param expected_rate_hz: the rate the camera should deliver
    :param window_s: the rate is measured over this recent window
    """

    def __init__(self, expected_rate_hz, window_s=2.0):
        self.expected_rate_hz = expected_rate_hz
        self.window_s = window_s
        self.dropped_frames = 0
        self.frames = 0
        self._times_s = []
        self._last_sequence = None

    def record(self, time_s, sequence=None):
        """
        Account for one delivered frame.

        :param time_s: when it was read (monotonic seconds)
        :param sequence: the device's frame number, or None
        """
        if sequence is not None and self._last_sequence is not None \
                and sequence > self._last_sequence + 1:
            self.dropped_frames += sequence - self._last_sequence - 1
        elif sequence is None and self._times_s:
            gap_periods = (time_s - self._times_s[-1]) * self.expected_rate_hz
            if gap_periods > 1.5:
                self.dropped_frames += int(round(gap_periods)) - 1
        self._last_sequence = sequence
        self.frames += 1
        self._times_s.append(time_s)
        while self._times_s and self._times_s[0] < time_s - self.window_s:
            self._times_s.pop(0)

    def restart(self):
        """Forget the last frame (after a reconnect) so the outage does not count as drops."""
        self._times_s.clear()
        self._last_sequence = None

    def rate_hz(self, now_s):
        """
        Frames per second over the recent window.

        :param now_s: current monotonic time
        :return: measured rate (0 when no frame in the window)
        """
        recent = [t for t in self._times_s if t >= now_s - self.window_s]
        if len(recent) < 2:
            return 0.0
        span_s = max(now_s, recent[-1]) - recent[0]
        return (len(recent) - 1) / span_s if span_s > 0 else 0.0


@dataclass
class CameraConfig:
    """
    Parameters of a camera node (see :func:`open_camera`).

    :param backend: 'realsense', 'opencv' or 'bag'
    :param device: realsense: serial number ('' = first found); opencv: index,
        device path or video file; bag: path of the .bag recording
    :param width: image width (px)
    :param height: image height (px)
    :param fps: frame rate (Hz)
    :param loop: replay video files and recordings at their end
    :param frame_id: optical frame of the images
    :param reconnect_period_s: wait between connection attempts
    :param read_timeout_s: RealSense read timeout before the camera counts as disconnected
    :param status_period_s: how often camera/status is published
    :param fx: focal length x for an OpenCV camera (px); 0 = uncalibrated
    :param fy: focal length y (px)
    :param cx: principal point x (px)
    :param cy: principal point y (px)
    :param policy_image_size: side of the square policy-resolution image published besides the
        full one (the policy's input size, px); 0 = no such stream
    """

    backend: str = field(default='realsense', metadata={
        'description': "camera backend: 'realsense', 'opencv' or 'bag'", 'read_only': True})
    device: str = field(default='', metadata={
        'description': "realsense: serial number ('' = first found); opencv: device index, "
                       'device path or video file; bag: .bag or .db3 recording path (digits '
                       'given unquoted, -p device:=123456789, are taken as text)',
        'read_only': True, 'digits_as_text': True})
    width: int = field(default=640, metadata={
        'description': 'image width (px)', 'range': (1, 8192), 'read_only': True})
    height: int = field(default=480, metadata={
        'description': 'image height (px)', 'range': (1, 8192), 'read_only': True})
    fps: float = field(default=30.0, metadata={
        'description': 'frame rate (Hz)', 'range': (0.1, 1000.0), 'read_only': True})
    loop: bool = field(default=True, metadata={
        'description': 'replay video files and .bag recordings at their end', 'read_only': True})
    frame_id: str = field(default='camera_color_optical_frame', metadata={
        'description': 'frame_id of the images (optical frame)', 'read_only': True})
    reconnect_period_s: float = field(default=1.0, metadata={
        'description': 'wait between connection attempts after a failure (s)',
        'range': (0.01, 60.0)})
    read_timeout_s: float = field(default=1.0, metadata={
        'description': 'RealSense read timeout before the camera counts as disconnected (s)',
        'range': (0.01, 60.0), 'read_only': True})
    status_period_s: float = field(default=1.0, metadata={
        'description': 'period of camera/status (s)', 'range': (0.01, 60.0),
        'read_only': True})
    fx: float = field(default=0.0, metadata={
        'description': 'opencv backend: focal length x (px); 0 = uncalibrated',
        'range': (0.0, None), 'read_only': True})
    fy: float = field(default=0.0, metadata={
        'description': 'opencv backend: focal length y (px)', 'range': (0.0, None),
        'read_only': True})
    cx: float = field(default=0.0, metadata={
        'description': 'opencv backend: principal point x (px)', 'range': (0.0, None),
        'read_only': True})
    cy: float = field(default=0.0, metadata={
        'description': 'opencv backend: principal point y (px)', 'range': (0.0, None),
        'read_only': True})
    policy_image_size: int = field(default=96, metadata={
        'description': 'side of the square image on camera/image_policy: each frame area-resized '
                       "at the source to the policy's input size, same stamp as the full frame "
                       '(px); 0 = no policy stream', 'range': (0, 8192), 'read_only': True})

    def __post_init__(self):
        if self.backend not in CAMERA_BACKENDS:
            raise ValueError(f'backend must be one of {CAMERA_BACKENDS}, got {self.backend!r}')
        if self.backend in ('opencv', 'bag') and not self.device:
            raise ValueError(f"backend {self.backend!r} needs 'device' (index, path or file)")
        for name in ('width', 'height'):
            if getattr(self, name) <= 0:
                raise ValueError(f'{name} must be positive, got {getattr(self, name)!r}')
        if self.policy_image_size < 0:
            raise ValueError(f'policy_image_size must be >= 0 (0 = off), got '
                             f'{self.policy_image_size!r}')
        for name in ('fps', 'reconnect_period_s', 'read_timeout_s', 'status_period_s'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f'{name} must be a positive finite number, got {value!r}')
        if not self.frame_id:
            raise ValueError('frame_id must not be empty')


def open_camera(config):
    """
    Build (without connecting) the camera a :class:`CameraConfig` describes.

    :param config: :class:`CameraConfig`
    :return: :class:`Camera`
    """
    if config.backend == 'opencv':
        intrinsics = None
        if config.fx > 0 and config.fy > 0:
            intrinsics = CameraIntrinsics(width=config.width, height=config.height,
                                          fx=config.fx, fy=config.fy, cx=config.cx, cy=config.cy)
        return OpenCVCamera(parse_opencv_source(config.device), width=config.width,
                            height=config.height, fps=config.fps, loop=config.loop,
                            intrinsics=intrinsics)
    return RealSenseCamera(
        serial_number=config.device if config.backend == 'realsense' else '',
        width=config.width, height=config.height, fps=config.fps,
        bag_path=config.device if config.backend == 'bag' else None, loop=config.loop,
        read_timeout_s=config.read_timeout_s)
