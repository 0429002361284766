"""
3Dconnexion SpaceMouse behind one small interface: open, read, close (and ``with``).

- :class:`SpaceMouse`: the device through pyspacemouse (imported lazily), axes
  in the ROS convention (REP 103: x forward, y left, z up).
- :class:`FakeSpaceMouse`: a scripted sequence of states, unpluggable, for tests.
- :func:`shape_axes`: deadband, per-axis scale and sign (pure).
- :class:`ButtonToggle`: a value flipped on a button's rising edge (gripper).
"""

import abc
from dataclasses import dataclass, field
import logging
import math
import threading

import numpy as np

logger = logging.getLogger(__name__)

AXIS_NAMES = ('x', 'y', 'z', 'roll', 'pitch', 'yaw')

UDEV_HINT = (
    'if it is plugged in, the user may lack permission on /dev/hidraw*: add the udev rule '
    'KERNEL=="hidraw*", ATTRS{idVendor}=="256f", MODE="0666" (and 046d for older models) '
    'to /etc/udev/rules.d/99-spacemouse.rules, run `sudo udevadm control --reload-rules && '
    'sudo udevadm trigger`, and re-plug; stop spacenavd if it holds the device')

HIDAPI_HINT = ('the HID API library is missing: install the Debian packages libhidapi-hidraw0 '
               'and libhidapi-libusb0')


class SpaceMouseError(RuntimeError):
    """Base class of SpaceMouse failures."""


class SpaceMouseNotFound(SpaceMouseError):
    """No SpaceMouse can be opened (none connected, no permission, or no HID library)."""


class SpaceMouseDisconnected(SpaceMouseError):
    """An open SpaceMouse stopped answering (unplugged)."""


@dataclass(frozen=True)
class SpaceMouseState:
    """
    One reading of the SpaceMouse.

    :param axes: (6,) float64 x, y, z, roll, pitch, yaw, each in [-1, 1]
    :param buttons: button states, 0 or 1 each
    """

    axes: np.ndarray
    buttons: tuple = ()

    @classmethod
    def at_rest(cls, button_count=2):
        """
        State of an untouched SpaceMouse.

        :param button_count: number of buttons
        :return: :class:`SpaceMouseState` with zero axes and no button pressed
        """
        return cls(axes=np.zeros(6), buttons=(0,) * button_count)


class SpaceMouseDevice(abc.ABC):
    """A 6-axis input device: open, read the current state, close; usable with ``with``."""

    description = 'SpaceMouse'

    @abc.abstractmethod
    def open(self):  # noqa: A003 - the device verb, as in pyspacemouse
        """
        Open the device.

        :raises SpaceMouseNotFound: when it cannot be opened
        """

    @abc.abstractmethod
    def read(self):
        """
        Return the current state (does not block).

        :return: :class:`SpaceMouseState`
        :raises SpaceMouseDisconnected: when the device stopped answering
        :raises SpaceMouseError: when not open
        """

    @abc.abstractmethod
    def close(self):
        """Release the device (safe to call twice)."""

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.close()


class SpaceMouse(SpaceMouseDevice):
    """
    A 3Dconnexion SpaceMouse through pyspacemouse, with axes in the ROS convention.

    :param device_name: pyspacemouse device name (e.g. 'SpaceMouse Wireless'), or ''
        for the first supported device found
    :param max_reports_per_read: HID reports drained per read (the device sends
        translation, rotation and buttons in separate reports, hundreds per second)
    """

    def __init__(self, device_name='', max_reports_per_read=64):
        self.device_name = device_name
        self.max_reports_per_read = max_reports_per_read
        self._device = None
        self._hid_exception = OSError
        self.description = f'SpaceMouse {device_name!r}' if device_name else 'SpaceMouse'

    def open(self):  # noqa: A003 - the device verb, as in pyspacemouse
        """
        Open the device.

        :raises SpaceMouseNotFound: with a hint on udev permissions or the HID library
        """
        try:
            import pyspacemouse
        except ImportError as error:
            raise SpaceMouseNotFound(
                f'pyspacemouse cannot be imported ({error}); `pip install pyspacemouse`') \
                from error
        try:
            from easyhid import HIDException
            self._hid_exception = HIDException
        except ImportError:
            self._hid_exception = OSError
        try:
            self._device = pyspacemouse.open(
                device=self.device_name or None,
                axis_convention=pyspacemouse.AxisConvention.ROS)
        except (RuntimeError, ValueError, OSError) as error:
            raise SpaceMouseNotFound(describe_open_error(error)) from error
        self.description = f'SpaceMouse {self._device.name!r}'
        logger.info('opened %s', self._device.describe_connection())

    def read(self):
        """
        Drain pending HID reports and return the current state.

        :return: :class:`SpaceMouseState`
        :raises SpaceMouseDisconnected: when the device stopped answering
        """
        if self._device is None:
            raise SpaceMouseError('SpaceMouse is not open; call open() first')
        try:
            state = self._device.read()
            for _ in range(self.max_reports_per_read - 1):
                last_time = state.t
                state = self._device.read()
                if state.t == last_time:
                    break
        except (self._hid_exception, OSError) as error:
            raise SpaceMouseDisconnected(f'{self.description} stopped answering: {error}') \
                from error
        axes = np.array([getattr(state, name) for name in AXIS_NAMES], dtype=np.float64)
        return SpaceMouseState(axes=np.clip(axes, -1.0, 1.0),
                               buttons=tuple(int(b) for b in state.buttons))

    def close(self):
        """Close the device."""
        if self._device is not None:
            try:
                self._device.close()
            except (self._hid_exception, OSError) as error:
                logger.warning('closing %s: %s', self.description, error)
            self._device = None


def describe_open_error(error):
    """
    Explain a pyspacemouse open failure with what to do about it.

    :param error: the exception pyspacemouse raised
    :return: message for :class:`SpaceMouseNotFound`
    """
    text = str(error)
    if 'HID API is probably not installed' in text:
        return f'cannot open a SpaceMouse: {HIDAPI_HINT} (pyspacemouse: {text})'
    if 'No connected or supported devices found' in text:
        return f'no SpaceMouse found (pyspacemouse: {text}); plug it in; {UDEV_HINT}'
    return f'cannot open the SpaceMouse (pyspacemouse: {text}); {UDEV_HINT}'


class FakeSpaceMouse(SpaceMouseDevice):
    """
    A scripted SpaceMouse: each read returns the next state, then the last one forever.

    Thread-safe; tests may change the script while a node reads it.

    :param states: sequence of :class:`SpaceMouseState` (default: one state at rest)
    """

    description = 'fake SpaceMouse'

    def __init__(self, states=None):
        self._lock = threading.Lock()
        self._states = list(states) if states else [SpaceMouseState.at_rest()]
        self._index = 0
        self._plugged = True
        self._open = False
        self.open_count = 0

    def set_state(self, state):
        """
        Replace the script with one state returned from now on.

        :param state: :class:`SpaceMouseState`
        """
        with self._lock:
            self._states, self._index = [state], 0

    def unplug(self):
        """Simulate pulling the cable: reads and opens fail until :meth:`plug`."""
        with self._lock:
            self._plugged = False

    def plug(self):
        """Simulate plugging the cable back in."""
        with self._lock:
            self._plugged = True

    def open(self):  # noqa: A003 - the device verb, as in pyspacemouse
        """
        Open when plugged.

        :raises SpaceMouseNotFound: while unplugged
        """
        with self._lock:
            if not self._plugged:
                raise SpaceMouseNotFound('fake SpaceMouse is unplugged')
            self._open = True
            self.open_count += 1

    def read(self):
        """
        Return the next scripted state.

        :return: :class:`SpaceMouseState`
        :raises SpaceMouseDisconnected: while unplugged
        """
        with self._lock:
            if not self._open:
                raise SpaceMouseError('fake SpaceMouse is not open')
            if not self._plugged:
                raise SpaceMouseDisconnected('fake SpaceMouse was unplugged')
            state = self._states[self._index]
            self._index = min(self._index + 1, len(self._states) - 1)
            return state

    def close(self):
        """Close."""
        self._open = False


def shape_axes(raw_axes, deadband, scale, sign):
    """
    Apply a deadband, then a per-axis scale and sign, and clip to [-1, 1].

    The deadband is continuous: values with ``|v| <= deadband`` give 0 and the rest
    is stretched so that 1 still maps to 1 (no jump at the edge of the band).

    :param raw_axes: (N,) values in [-1, 1]
    :param deadband: fraction of the range ignored around zero, in [0, 1)
    :param scale: scalar or (N,) non-negative gains
    :param sign: scalar or (N,) of +1 / -1
    :return: (N,) float64 in [-1, 1]
    :raises ValueError: for a deadband outside [0, 1), negative scales, signs
        other than +-1, or non-finite axes
    """
    axes = np.asarray(raw_axes, dtype=np.float64)
    if not (0.0 <= deadband < 1.0):
        raise ValueError(f'deadband must be in [0, 1), got {deadband!r}')
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), axes.shape)
    sign = np.broadcast_to(np.asarray(sign, dtype=np.float64), axes.shape)
    if (scale < 0).any() or not np.isfinite(scale).all():
        raise ValueError(f'scales must be finite and >= 0, got {scale.tolist()}')
    if not np.isin(sign, (-1.0, 1.0)).all():
        raise ValueError(f'signs must be +1 or -1, got {sign.tolist()}')
    if not np.isfinite(axes).all():
        raise ValueError(f'axes must be finite, got {axes.tolist()}')
    magnitude = np.clip((np.abs(axes) - deadband) / (1.0 - deadband), 0.0, None)
    return np.clip(np.sign(axes) * magnitude * scale * sign, -1.0, 1.0)


class ButtonToggle:
    """
    A two-valued output flipped on each rising edge of a button.

    :param released_value: the value before the first press (e.g. -1, gripper open)
    :param pressed_value: the other value (e.g. +1, gripper closed)
    """

    def __init__(self, released_value=-1.0, pressed_value=1.0):
        self.values = (released_value, pressed_value)
        self.value = released_value
        self._was_pressed = False

    def update(self, pressed):
        """
        Feed the button's current state.

        :param pressed: True while the button is held
        :return: the output value
        """
        pressed = bool(pressed)
        if pressed and not self._was_pressed:
            self.value = self.values[1] if self.value == self.values[0] else self.values[0]
        self._was_pressed = pressed
        return self.value

    def release(self):
        """Forget the button state (after a device loss), keeping the output value."""
        self._was_pressed = False


SPACEMOUSE_SOURCES = ('device', 'spacenav')


@dataclass
class SpaceMouseConfig:
    """
    Parameters of the SpaceMouse node.

    :param source: 'device' (pyspacemouse) or 'spacenav' (spacenav_node's topics)
    :param device_name: pyspacemouse device name, '' for the first found
    :param rate_hz: publish rate
    :param max_linear_velocity_mps: linear velocity at full deflection
    :param deadband: fraction of each axis ignored around zero
    :param axis_scale: per-axis gain (x, y, z, roll, pitch, yaw)
    :param axis_sign: per-axis sign, +1 or -1
    :param gripper_button: index of the button toggling the gripper
    :param frame_id: frame of the published twist
    :param reconnect_period_s: wait between attempts to open the device
    :param input_timeout_s: spacenav input older than this counts as lost
    """

    source: str = field(default='device', metadata={
        'description': "'device' reads the SpaceMouse through pyspacemouse; 'spacenav' "
                       'republishes spacenav_node (spacenav/twist, spacenav/joy)',
        'read_only': True})
    device_name: str = field(default='', metadata={
        'description': "pyspacemouse device name, '' for the first supported device found",
        'read_only': True})
    rate_hz: float = field(default=50.0, metadata={
        'description': 'publish rate of teleop/twist, teleop/joy, teleop/gripper (Hz)',
        'range': (1.0, 1000.0), 'read_only': True})
    max_linear_velocity_mps: float = field(default=0.1, metadata={
        'description': 'linear velocity at full deflection (m/s)', 'range': (0.0, 5.0)})
    deadband: float = field(default=0.05, metadata={
        'description': 'fraction of each axis range ignored around zero (unitless, 0..1)',
        'range': (0.0, 0.95)})
    axis_scale: tuple = field(default=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0), metadata={
        'description': 'per-axis gain for x, y, z, roll, pitch, yaw (unitless, >= 0)'})
    axis_sign: tuple = field(default=(1, 1, 1, 1, 1, 1), metadata={
        'description': 'per-axis sign for x, y, z, roll, pitch, yaw (+1 or -1)'})
    gripper_button: int = field(default=1, metadata={
        'description': 'index of the button that toggles the gripper (rising edge)',
        'range': (0, 31)})
    frame_id: str = field(default='base_link', metadata={
        'description': 'frame_id of teleop/twist (robot base frame, REP 103)',
        'read_only': True})
    reconnect_period_s: float = field(default=1.0, metadata={
        'description': 'wait between attempts to open the SpaceMouse (s)', 'range': (0.01, 60.0)})
    input_timeout_s: float = field(default=0.5, metadata={
        'description': 'device or spacenav input older than this counts as lost (s)',
        'range': (0.01, 60.0)})

    def __post_init__(self):
        if self.source not in SPACEMOUSE_SOURCES:
            raise ValueError(f'source must be one of {SPACEMOUSE_SOURCES}, got {self.source!r}')
        self.axis_scale = tuple(float(v) for v in self.axis_scale)
        self.axis_sign = tuple(int(v) for v in self.axis_sign)
        if len(self.axis_scale) != 6 or any(not math.isfinite(v) or v < 0
                                            for v in self.axis_scale):
            raise ValueError(f'axis_scale needs 6 finite values >= 0, got {self.axis_scale}')
        if len(self.axis_sign) != 6 or any(v not in (-1, 1) for v in self.axis_sign):
            raise ValueError(f'axis_sign needs 6 values of +1 or -1, got {self.axis_sign}')
        if not (0.0 <= self.deadband < 1.0):
            raise ValueError(f'deadband must be in [0, 1), got {self.deadband!r}')
        for name in ('rate_hz', 'reconnect_period_s', 'input_timeout_s'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f'{name} must be a positive finite number, got {value!r}')
        if not (math.isfinite(self.max_linear_velocity_mps) and self.max_linear_velocity_mps >= 0):
            raise ValueError(
                f'max_linear_velocity_mps must be finite and >= 0, got '
                f'{self.max_linear_velocity_mps!r}')
        if self.gripper_button < 0:
            raise ValueError(f'gripper_button must be >= 0, got {self.gripper_button!r}')
        if not self.frame_id:
            raise ValueError('frame_id must not be empty')
