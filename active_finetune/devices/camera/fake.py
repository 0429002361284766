""":class:`FakeCamera`: synthetic frames at a fixed rate, unpluggable, for tests."""

import threading
import time

import numpy as np

from .base import Camera, CameraDisconnected, CameraIntrinsics, CameraNotFound, Frame
from .base import FramePacer


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
