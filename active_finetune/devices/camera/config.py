""":class:`CameraConfig` (a camera node's parameters) and :func:`open_camera`, which builds it."""

from dataclasses import dataclass, field
import math

from .base import CameraIntrinsics
from .opencv import OpenCVCamera, parse_opencv_source
from .realsense import RealSenseCamera

CAMERA_BACKENDS = ('realsense', 'opencv', 'bag')


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
