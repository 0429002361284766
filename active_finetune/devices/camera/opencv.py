"""
:class:`OpenCVCamera`: ``cv2.VideoCapture`` on a device index, a device path or a video file.

Video files are played at their frame rate, optionally looped.
"""

import logging
from pathlib import Path
import time

import cv2

from .base import Camera, CameraDisconnected, CameraIntrinsics, CameraNotFound, EndOfStream
from .base import Frame, FramePacer

logger = logging.getLogger(__name__)


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
