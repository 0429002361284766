"""
Safety decisions for motion commands, as pure functions and small state machines.

Everything here is ROS-free and clock-free: callers pass times in seconds.  Each
decision carries a short machine-readable ``code`` (for status topics and change
detection) and a human ``reason`` (for logs), e.g.
``'stale image: 0.31 s old > 0.15 s'``.

- :func:`check_fresh` / :func:`is_stale`: is an input recent enough to act on?
- :func:`sanitize_action`: zero a command with NaN/inf, clamp it per axis.
- :class:`ProprioLimits`, :func:`check_proprio`, :func:`check_proprio_rows`: is the
  proprioception plausible (inside the robot's workspace box, near the data the policy was
  trained on)?  For the policy's input and for training data.
- :class:`EstopLatch`: once engaged, stays engaged until explicitly released.
- :class:`CommandGate`: the last step before a command leaves a node (estop,
  then failed checks, then sanitising); used by the policy node and the mux.
- :class:`CommandMux`: chooses between the policy and the teleoperator.
"""

from dataclasses import dataclass, field
import json
import math

import numpy as np

OK = 'ok'
MISSING = 'missing'
STALE = 'stale'
FUTURE = 'future'
NON_FINITE = 'non_finite'
CLAMPED = 'clamped'
ESTOP = 'estop'
NO_SOURCE = 'no_source'
IMPLAUSIBLE = 'implausible'

DEFAULT_MAX_PROPRIO_STD = 6.0
"""Largest accepted distance of an end-effector coordinate from the training mean (std)."""
DEFAULT_WORKSPACE_MIN_M = (-1.5, -1.5, -0.5)
"""Lower corner (x, y, z) of the default workspace box in the robot base frame (m)."""
DEFAULT_WORKSPACE_MAX_M = (1.5, 1.5, 2.0)
"""Upper corner (x, y, z) of the default workspace box in the robot base frame (m)."""
PROPRIO_STD_FLOOR_M = 0.02
"""Smallest standard deviation the distance check divides by (m): a coordinate that hardly
varied in training (std clamped to 1 mm) must not make every ordinary position implausible."""
_AXES = ('x', 'y', 'z')


@dataclass(frozen=True)
class Check:
    """
    The verdict on one input.

    :param ok: True when the input may be acted on
    :param code: machine-readable kind of verdict (``'ok'``, ``'stale'``, ...)
    :param reason: human-readable explanation, empty when ok
    """

    ok: bool
    code: str = OK
    reason: str = ''


PASS = Check(ok=True)


def check_fresh(name, stamp_s, now_s, max_age_s):
    """
    Decide whether an input stamped at ``stamp_s`` is recent enough at ``now_s``.

    A stamp more than ``max_age_s`` in the future also fails: its age cannot be
    trusted (clock skew between machines, or a simulation clock reset).

    :param name: what the input is, for the reason (``'image'``)
    :param stamp_s: time of the input in seconds, or None when none has arrived
    :param now_s: current time in seconds, on the same clock as ``stamp_s``
    :param max_age_s: largest acceptable age in seconds (> 0)
    :return: :class:`Check`
    :raises ValueError: for a max_age_s that is not a positive finite number
    """
    if not (math.isfinite(max_age_s) and max_age_s > 0.0):
        raise ValueError(f'max_age_s must be a positive finite number, got {max_age_s!r}')
    if stamp_s is None:
        return Check(False, MISSING, f'no {name} received yet')
    age_s = now_s - stamp_s
    if age_s > max_age_s:
        return Check(False, STALE, f'stale {name}: {age_s:.2f} s old > {max_age_s:.2f} s')
    if -age_s > max_age_s:
        return Check(False, FUTURE,
                     f'{name} stamped {-age_s:.2f} s in the future > {max_age_s:.2f} s '
                     '(clock skew?)')
    return PASS


def is_stale(stamp_s, now_s, max_age_s):
    """
    Tell whether an input is too old (or missing, or implausibly in the future) to act on.

    :param stamp_s: time of the input in seconds, or None when none has arrived
    :param now_s: current time in seconds
    :param max_age_s: largest acceptable age in seconds
    :return: True when the input must not be acted on
    """
    return not check_fresh('input', stamp_s, now_s, max_age_s).ok


def validate_limits(limits, size):
    """
    Broadcast per-axis limits to ``size`` axes and check they are positive and finite.

    :param limits: scalar or sequence of ``size`` limits
    :param size: number of axes
    :return: (size,) float64 array
    :raises ValueError: for non-positive, non-finite or wrongly sized limits
    """
    array = np.asarray(limits, dtype=np.float64)
    try:
        array = np.broadcast_to(array, (size,)).copy()
    except ValueError as error:
        raise ValueError(f'limits {limits!r} do not fit {size} axes') from error
    if not (np.isfinite(array).all() and (array > 0.0).all()):
        raise ValueError(f'limits must be positive and finite, got {array.tolist()}')
    return array


@dataclass(frozen=True)
class SanitizedAction:
    """
    A command made safe to send.

    :param values: the command to send (float64 array)
    :param code: ``'ok'``, ``'clamped'`` or ``'non_finite'``
    :param reason: what was changed and why, empty when nothing was
    """

    values: np.ndarray
    code: str = OK
    reason: str = ''

    @property
    def zeroed(self):
        """:return: True when the command was replaced by zero."""
        return self.code == NON_FINITE


def _format_values(values):
    return '[' + ', '.join(f'{v:.3g}' for v in values) + ']'


def sanitize_action(action, limits):
    """
    Zero a command containing NaN or inf, and clamp every axis to [-limit, limit].

    :param action: 1-D command
    :param limits: scalar or per-axis positive limits
    :return: :class:`SanitizedAction`
    :raises ValueError: for a command that is not 1-D or for bad limits
    """
    values = np.asarray(action, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f'a command must be 1-D, got shape {values.shape}')
    limit_array = validate_limits(limits, values.shape[0])
    if not np.isfinite(values).all():
        return SanitizedAction(np.zeros_like(values), NON_FINITE,
                               f'non-finite command {_format_values(values)} -> zero')
    clamped = np.clip(values, -limit_array, limit_array)
    if not np.array_equal(clamped, values):
        return SanitizedAction(clamped, CLAMPED,
                               f'command {_format_values(values)} clamped to '
                               f'+/-{_format_values(limit_array)}')
    return SanitizedAction(values.copy())


def _finite_vector(values, name, size):
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.shape != (size,) or not np.isfinite(array).all():
        raise ValueError(f'{name} must be {size} finite numbers, got {values!r}')
    return array


@dataclass(frozen=True)
class ProprioLimits:
    """
    What end-effector positions a policy may act on (and training data may contain).

    Two checks on the position x, y, z (the gripper opening is bounded to [0, 1] by
    construction): inside the robot's workspace box, and within ``max_std`` standard
    deviations of the mean of the data the policy was trained on (per axis, the std floored at
    :data:`PROPRIO_STD_FLOOR_M`).  A pose in millimetres, or in another frame, fails both.

    :param workspace_min_m: (3,) lower corner of the workspace box, robot base frame (m)
    :param workspace_max_m: (3,) upper corner (m)
    :param mean: (>= 3,) training mean of the proprioception (the checkpoint's
        ``proprio_mean``), or None to skip the distance check
    :param std: (>= 3,) training standard deviation (``proprio_std``), or None
    :param max_std: largest accepted distance from the mean (std); 0 skips the distance check
    :raises ValueError: for a box that is not 3 finite numbers per corner with min < max, or
        statistics that are not finite
    """

    workspace_min_m: tuple = DEFAULT_WORKSPACE_MIN_M
    workspace_max_m: tuple = DEFAULT_WORKSPACE_MAX_M
    mean: tuple | None = None
    std: tuple | None = None
    max_std: float = DEFAULT_MAX_PROPRIO_STD

    def __post_init__(self):
        low = _finite_vector(self.workspace_min_m, 'workspace_min_m', 3)
        high = _finite_vector(self.workspace_max_m, 'workspace_max_m', 3)
        if not (low < high).all():
            raise ValueError(f'workspace_min_m {self.workspace_min_m!r} must be below '
                             f'workspace_max_m {self.workspace_max_m!r} on every axis')
        if not (math.isfinite(self.max_std) and self.max_std >= 0.0):
            raise ValueError(f'max_std must be a finite number >= 0, got {self.max_std!r}')
        if (self.mean is None) != (self.std is None):
            raise ValueError('mean and std must be given together')
        if self.mean is not None:
            mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
            std = np.asarray(self.std, dtype=np.float64).reshape(-1)
            if mean.size < 3 or std.shape != mean.shape or not (
                    np.isfinite(mean).all() and np.isfinite(std).all()):
                raise ValueError(f'mean and std must be finite vectors of the same length '
                                 f'>= 3, got {self.mean!r} and {self.std!r}')

    @classmethod
    def from_policy(cls, policy, workspace_min_m=DEFAULT_WORKSPACE_MIN_M,
                    workspace_max_m=DEFAULT_WORKSPACE_MAX_M, max_std=DEFAULT_MAX_PROPRIO_STD):
        """
        Take the normalisation statistics of a policy (``proprio_mean``, ``proprio_std``).

        :param policy: an object with ``proprio_mean`` and ``proprio_std`` tensors or arrays
            (:class:`active_finetune.policy.model.TaskPolicy`)
        :param workspace_min_m: (3,) lower corner of the workspace box (m)
        :param workspace_max_m: (3,) upper corner (m)
        :param max_std: largest accepted distance from the mean (std); 0 skips that check
        :return: :class:`ProprioLimits`
        """
        def values(tensor):
            if hasattr(tensor, 'detach'):
                tensor = tensor.detach().cpu().numpy()
            return tuple(float(v) for v in np.asarray(tensor).reshape(-1))
        return cls(tuple(workspace_min_m), tuple(workspace_max_m), values(policy.proprio_mean),
                   values(policy.proprio_std), float(max_std))


def check_proprio_rows(proprio, limits):
    """
    Check proprioception rows (an episode, or one observation) against :class:`ProprioLimits`.

    :param proprio: (N, D) or (D,) array, D >= 3; columns 0..2 are the end-effector x, y, z (m)
    :param limits: :class:`ProprioLimits`
    :return: :class:`Check`: ``'non_finite'`` or ``'implausible'`` with the first bad row, the
        number of bad rows and what is wrong, else ok
    :raises ValueError: for an array with fewer than 3 columns
    """
    rows = np.asarray(proprio, dtype=np.float64)
    single = rows.ndim == 1
    rows = rows.reshape(1, -1) if single else rows
    if rows.ndim != 2 or rows.shape[1] < 3:
        raise ValueError(f'proprioception needs at least 3 columns (x, y, z), got shape '
                         f'{np.shape(proprio)}')
    if rows.shape[0] == 0:
        return PASS
    position = rows[:, :3]
    where = '' if single else ' in row {row} ({count} of {total} rows)'
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        return Check(False, NON_FINITE,
                     f'non-finite proprioception {_format_values(rows[row])}'
                     + where.format(row=row, count=int((~finite).sum()), total=len(rows)))
    low = np.asarray(limits.workspace_min_m, dtype=np.float64)
    high = np.asarray(limits.workspace_max_m, dtype=np.float64)
    outside = ((position < low) | (position > high)).any(axis=1)
    if outside.any():
        row = int(np.argmax(outside))
        box = ', '.join(f'{axis} [{lo:.3g}, {hi:.3g}]' for axis, lo, hi in zip(_AXES, low, high))
        return Check(False, IMPLAUSIBLE,
                     f'implausible end-effector position {_format_values(position[row])} m'
                     + where.format(row=row, count=int(outside.sum()), total=len(rows))
                     + f': outside the workspace box {box} m (workspace_min_m/_max_m; a pose '
                     'in millimetres or another frame?)')
    if limits.mean is not None and limits.max_std > 0.0:
        mean = np.asarray(limits.mean, dtype=np.float64)[:3]
        std = np.maximum(np.asarray(limits.std, dtype=np.float64)[:3], PROPRIO_STD_FLOOR_M)
        distance = np.abs(position - mean) / std
        far = (distance > limits.max_std).any(axis=1)
        if far.any():
            row = int(np.argmax(far))
            axis = int(np.argmax(distance[row]))
            return Check(False, IMPLAUSIBLE,
                         f'implausible end-effector position {_format_values(position[row])} m'
                         + where.format(row=row, count=int(far.sum()), total=len(rows))
                         + f': {_AXES[axis]} is {distance[row, axis]:.3g} std from the training '
                         f'mean {mean[axis]:.3g} m (std {std[axis]:.3g} m, limit '
                         f'{limits.max_std:g} std): far outside what the policy was trained on')
    return PASS


def check_proprio(proprio, limits):
    """
    Decide whether one proprioception vector is plausible enough to act on.

    :param proprio: (D,) with D >= 3: end-effector x, y, z (m), then e.g. the gripper opening
    :param limits: :class:`ProprioLimits`
    :return: :class:`Check` (``'implausible'`` or ``'non_finite'`` with the reason, else ok)
    :raises ValueError: for a vector with fewer than 3 entries
    """
    return check_proprio_rows(np.asarray(proprio, dtype=np.float64).reshape(-1), limits)


class EstopLatch:
    """
    Emergency stop that stays engaged until explicitly released.

    ``update(True)`` engages it; it stays engaged (whatever else happens, and
    without the estop being repeated) until ``update(False)`` arrives.

    :param engaged: initial state
    """

    def __init__(self, engaged=False):
        self.engaged = bool(engaged)

    def update(self, engaged):
        """
        Apply an estop message.

        :param engaged: True to engage, False to release
        :return: True when the state changed
        """
        engaged = bool(engaged)
        changed = engaged != self.engaged
        self.engaged = engaged
        return changed

    @property
    def reason(self):
        """:return: why output is blocked, or '' when released."""
        return 'estop engaged: output held at zero until released' if self.engaged else ''


@dataclass(frozen=True)
class GateDecision:
    """
    What a :class:`CommandGate` lets through.

    :param command: the command to publish (zero when blocked)
    :param code: ``'ok'``, ``'clamped'``, or why it was blocked (``'estop'``, ``'stale'``, ...)
    :param reason: human-readable explanation, empty when passed unchanged
    """

    command: np.ndarray
    code: str = OK
    reason: str = ''

    @property
    def blocked(self):
        """:return: True when the command was replaced by zero."""
        return self.code not in (OK, CLAMPED)


class CommandGate:
    """
    The last step before a command leaves a node: estop, then input checks, then sanitising.

    :param limits: scalar or per-axis positive limits for the command
    """

    def __init__(self, limits):
        self.limits = np.asarray(limits, dtype=np.float64)
        validate_limits(self.limits, self.limits.size if self.limits.ndim else 1)
        self.estop = EstopLatch()

    def set_estop(self, engaged):
        """
        Apply an estop message.

        :param engaged: True to engage, False to release
        :return: True when the estop state changed
        """
        return self.estop.update(engaged)

    def decide(self, action, checks=()):
        """
        Decide what to publish for ``action``.

        :param action: the 1-D command wanted
        :param checks: :class:`Check` verdicts on the inputs the command came from;
            the first failing one blocks the command
        :return: :class:`GateDecision`
        """
        values = np.asarray(action, dtype=np.float64)
        zero = np.zeros(values.shape, dtype=np.float64)
        if self.estop.engaged:
            return GateDecision(zero, ESTOP, self.estop.reason)
        for check in checks:
            if not check.ok:
                return GateDecision(zero, check.code, check.reason)
        sanitized = sanitize_action(values, self.limits)
        return GateDecision(sanitized.values, sanitized.code, sanitized.reason)


TELEOP = 'teleop'
POLICY = 'policy'
NONE = 'none'


@dataclass
class CommandMuxConfig:
    """
    Parameters of the command mux (see :class:`CommandMux`).

    :param rate_hz: command publish rate
    :param max_linear_velocity_mps: per-axis limit on the commanded linear velocity
    :param teleop_motion_threshold_mps: teleop speed above which the operator takes over
    :param teleop_hold_s: how long the operator keeps control after the last motion
    :param command_timeout_s: a source whose newest command is older counts as absent
    :param frame_id: frame of the published twist (robot base, REP 103)
    :param forward_source_stamp: stamp a forwarded twist with its source's header stamp (its
        issue time) instead of the time of publishing
    """

    rate_hz: float = field(default=50.0, metadata={
        'description': 'rate at which cmd/twist and cmd/gripper are published (Hz)',
        'range': (1.0, 1000.0), 'read_only': True})
    max_linear_velocity_mps: float = field(default=0.25, metadata={
        'description': 'per-axis limit on the commanded linear velocity (m/s)',
        'range': (0.0, 5.0)})
    teleop_motion_threshold_mps: float = field(default=0.005, metadata={
        'description': 'teleop linear speed above which the operator takes over (m/s)',
        'range': (0.0, 5.0)})
    teleop_hold_s: float = field(default=1.0, metadata={
        'description': 'time the operator keeps control after the last teleop motion (s)',
        'range': (0.0, 60.0)})
    command_timeout_s: float = field(default=0.2, metadata={
        'description': 'a source whose newest command is older than this counts as absent (s)',
        'range': (0.001, 10.0)})
    frame_id: str = field(default='base_link', metadata={
        'description': 'frame_id of the published cmd/twist (robot base frame, REP 103)',
        'read_only': True})
    forward_source_stamp: bool = field(default=False, metadata={
        'description': 'stamp a forwarded cmd/twist with the header stamp of the command it '
                       'forwards (its issue time: the image stamp for the policy) instead of the '
                       'time of publishing; the simulation bridge needs it to execute each '
                       'scripted-operator command for its own frame (config/sim.yaml).  Off for '
                       'arm drivers that take the stamp as the time of the command: MoveIt Servo '
                       'counts a twist older than its incoming_command_timeout (0.1 s by '
                       'default) as stale, and a held policy command grows older than that '
                       'between two camera frames', 'read_only': True})

    def __post_init__(self):
        for name in ('rate_hz', 'max_linear_velocity_mps', 'command_timeout_s'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f'{name} must be a positive finite number, got {value!r}')
        for name in ('teleop_motion_threshold_mps', 'teleop_hold_s'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f'{name} must be a finite number >= 0, got {value!r}')
        if not self.frame_id:
            raise ValueError('frame_id must not be empty')


@dataclass(frozen=True)
class MuxDecision:
    """
    One cycle's output of the mux.

    :param twist_mps: linear velocity to publish (3,)
    :param gripper: gripper command in [-1, 1], or None while no gripper command
        has ever been valid (publish nothing then)
    :param source: ``'teleop'``, ``'policy'`` or ``'none'``
    :param estop: whether the estop is engaged
    :param code: ``'ok'``, ``'clamped'`` or why the output is zero
    :param reason: human-readable explanation
    :param stamp_s: header stamp of the source command it forwards (its issue time), or None
        for a command the mux makes itself (zero): stamp that with the current time
    """

    twist_mps: np.ndarray
    gripper: float | None
    source: str
    estop: bool
    code: str
    reason: str
    stamp_s: float | None = None

    def status(self):
        """:return: the status as a JSON string (source, estop, code, reason)."""
        return json.dumps({'source': self.source, 'estop': self.estop, 'code': self.code,
                           'reason': self.reason})

    def status_key(self):
        """:return: what must change for the status to be worth publishing again."""
        return (self.source, self.estop, self.code)


class CommandMux:
    """
    Choose the command that reaches the robot: the teleoperator's or the policy's.

    Rules, checked every cycle:

    - The teleoperator has control while the recorder state is ``'recording'``,
      or for ``teleop_hold_s`` after the last teleop twist faster than
      ``teleop_motion_threshold_mps``.  While it has control and its command is
      older than ``command_timeout_s``, the output is zero (never the policy).
    - Otherwise the policy's command is used when it is fresh, else zero.
    - Then the :class:`CommandGate`: estop (latched) -> zero, NaN/inf -> zero,
      per-axis clamp to ``max_linear_velocity_mps``.
    - The gripper is a position command, so it is never zeroed: on estop or
      without a fresh source it holds its last value.  When the teleoperator
      takes over, the gripper keeps its value until the teleop gripper command
      changes (a nudge of the SpaceMouse must not drop what the policy holds).

    Times are seconds on one clock (the receiving node's), passed by the caller.

    :param config: :class:`CommandMuxConfig`
    """

    def __init__(self, config):
        self.config = config
        self.gate = CommandGate(config.max_linear_velocity_mps)
        self._twist = {TELEOP: None, POLICY: None}
        self._twist_time_s = {TELEOP: None, POLICY: None}
        self._twist_stamp_s = {TELEOP: None, POLICY: None}
        self._gripper = {TELEOP: None, POLICY: None}
        self._gripper_time_s = {TELEOP: None, POLICY: None}
        self._last_teleop_motion_s = None
        self._recording = False
        self._source = NONE
        self._teleop_gripper_at_takeover = None
        self._gripper_output = None

    def set_config(self, config):
        """
        Replace the parameters (limits, timeouts) between two cycles.

        :param config: :class:`CommandMuxConfig`
        """
        self.config = config
        self.gate.limits = np.asarray(config.max_linear_velocity_mps, dtype=np.float64)

    def on_twist(self, source, linear_mps, now_s, stamp_s=None):
        """
        Store a source's newest linear velocity command.

        :param source: ``'teleop'`` or ``'policy'``
        :param linear_mps: (3,) vx, vy, vz
        :param now_s: arrival time
        :param stamp_s: its header stamp (issue time; None or 0: unstamped), handed on in
            :attr:`MuxDecision.stamp_s` while it is the output
        :raises ValueError: for an unknown source or a command without 3 elements
        """
        linear = np.asarray(linear_mps, dtype=np.float64).reshape(-1)
        if source not in self._twist:
            raise ValueError(f"source must be 'teleop' or 'policy', got {source!r}")
        if linear.shape != (3,):
            raise ValueError(f'a linear velocity needs 3 elements, got shape {linear.shape}')
        self._twist[source] = linear
        self._twist_time_s[source] = now_s
        self._twist_stamp_s[source] = stamp_s or None
        if source == TELEOP and np.linalg.norm(linear) > self.config.teleop_motion_threshold_mps:
            self._last_teleop_motion_s = now_s

    def on_gripper(self, source, value, now_s):
        """
        Store a source's newest gripper command.

        :param source: ``'teleop'`` or ``'policy'``
        :param value: gripper command, -1 open .. +1 closed
        :param now_s: arrival time
        :raises ValueError: for an unknown source
        """
        if source not in self._gripper:
            raise ValueError(f"source must be 'teleop' or 'policy', got {source!r}")
        self._gripper[source] = float(value)
        self._gripper_time_s[source] = now_s

    def on_recorder_state(self, state):
        """
        Apply the recorder's state; the teleoperator has priority while it is ``'recording'``.

        :param state: recorder state string
        """
        self._recording = state == 'recording'

    def on_estop(self, engaged):
        """
        Apply an estop message (latched until a release arrives).

        :param engaged: True to engage, False to release
        :return: True when the estop state changed
        """
        return self.gate.set_estop(engaged)

    def _choose_source(self, now_s):
        timeout_s = self.config.command_timeout_s
        teleop_claims = self._recording or (
            self._last_teleop_motion_s is not None
            and now_s - self._last_teleop_motion_s <= self.config.teleop_hold_s)
        if teleop_claims:
            why = 'recording' if self._recording else 'operator moved the SpaceMouse'
            check = check_fresh(f'teleop command ({why})', self._twist_time_s[TELEOP], now_s,
                                timeout_s)
            return TELEOP, check
        policy = check_fresh('policy command', self._twist_time_s[POLICY], now_s, timeout_s)
        if policy.ok:
            return POLICY, policy
        return NONE, Check(False, NO_SOURCE, f'no fresh command: {policy.reason}')

    def _choose_gripper(self, source, now_s):
        if self.gate.estop.engaged or source == NONE:
            return self._gripper_output
        value = self._gripper[source]
        fresh = check_fresh('gripper', self._gripper_time_s[source], now_s,
                            self.config.command_timeout_s).ok
        if not fresh or not math.isfinite(value):
            return self._gripper_output
        if source == TELEOP and value == self._teleop_gripper_at_takeover:
            return self._gripper_output
        if source == TELEOP:
            self._teleop_gripper_at_takeover = None
        return float(np.clip(value, -1.0, 1.0))

    def decide(self, now_s):
        """
        Compute this cycle's output.

        :param now_s: current time, same clock as the arrival times
        :return: :class:`MuxDecision`
        """
        source, check = self._choose_source(now_s)
        if source == TELEOP and self._source != TELEOP:
            self._teleop_gripper_at_takeover = self._gripper[TELEOP]
        self._source = source
        wanted = self._twist[source] if source != NONE and check.ok else np.zeros(3)
        decision = self.gate.decide(wanted, [check])
        self._gripper_output = self._choose_gripper(source, now_s)
        forwarded = source != NONE and decision.code in (OK, CLAMPED)
        return MuxDecision(
            twist_mps=decision.command, gripper=self._gripper_output, source=source,
            estop=self.gate.estop.engaged, code=decision.code, reason=decision.reason,
            stamp_s=self._twist_stamp_s[source] if forwarded else None)
