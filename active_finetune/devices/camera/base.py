"""
The camera interface every backend implements, and the helpers they share.

A read returns a :class:`Frame`: RGB uint8 (H, W, 3) and its capture time in
seconds on the system clock (``time.time()``), which is what ROS stamps use.
:class:`FramePacer` paces files and fakes; :class:`FrameRateMonitor` measures
what a camera delivers. This module imports no backend.
"""

import abc
from dataclasses import dataclass
import math
import time

import numpy as np


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
