"""
:class:`RealSenseCamera`: Intel RealSense through pyrealsense2, live or playing a recording.

pyrealsense2 is imported lazily (:func:`import_pyrealsense2`), so this module
works without it.
"""

import logging
from pathlib import Path
import time

import numpy as np

from .base import Camera, CameraDisconnected, CameraIntrinsics, CameraNotFound, EndOfStream
from .base import Frame

logger = logging.getLogger(__name__)


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
