"""
Cameras behind one small interface: connect, read, disconnect (and ``with``).

One module per job, as LeRobot splits its camera backends:

- :mod:`.base`: the :class:`Camera` interface, :class:`Frame`,
  :class:`CameraIntrinsics`, the errors, :class:`FramePacer` and
  :class:`FrameRateMonitor`.
- :mod:`.realsense`: :class:`RealSenseCamera`, Intel RealSense through
  pyrealsense2 (imported lazily, so this package works without it), live or
  playing a recording.
- :mod:`.opencv`: :class:`OpenCVCamera`, ``cv2.VideoCapture`` on a device
  index, a device path or a video file (played at its frame rate, optionally
  looped).
- :mod:`.fake`: :class:`FakeCamera`, synthetic frames at a fixed rate,
  unpluggable, for tests.
- :mod:`.config`: :class:`CameraConfig` and :func:`open_camera`, which builds
  the camera a configuration describes.

A read returns a :class:`Frame`: RGB uint8 (H, W, 3) and its capture time in
seconds on the system clock (``time.time()``), which is what ROS stamps use.

Everything public is re-exported here. To patch a name in a test, patch it in
the module that looks it up (for instance
``active_finetune.devices.camera.config.OpenCVCamera`` for :func:`open_camera`),
not in this package.
"""

from .base import Camera, CameraDisconnected, CameraError, CameraIntrinsics, CameraNotFound
from .base import EndOfStream, Frame, FramePacer, FrameRateMonitor
from .config import CAMERA_BACKENDS, CameraConfig, open_camera
from .fake import FakeCamera
from .opencv import OpenCVCamera, parse_opencv_source
from .realsense import import_pyrealsense2, RealSenseCamera, ros_distortion_model

__all__ = [
    'CAMERA_BACKENDS',
    'Camera',
    'CameraConfig',
    'CameraDisconnected',
    'CameraError',
    'CameraIntrinsics',
    'CameraNotFound',
    'EndOfStream',
    'FakeCamera',
    'Frame',
    'FramePacer',
    'FrameRateMonitor',
    'import_pyrealsense2',
    'open_camera',
    'OpenCVCamera',
    'parse_opencv_source',
    'RealSenseCamera',
    'ros_distortion_model',
]
