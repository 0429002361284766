"""
Which recorded samples make the training rows of an episode (ROS-free).

The loader (:func:`active_finetune.data.mcap_episode.load_episode`) and the recorder (its step
count) both call :func:`align_rows`, so the steps a recorder reports are the rows the loader gives.

A training row is what the in-process rollout records at each step
(:func:`active_finetune.sim.rollouts.run_episode`): the observation at step t and the command the
operator issued *after seeing it*.  For a camera frame t (time f_t, next frame f_t+1):

- proprioception: the newest joint state (with the gripper joint) and the newest end-effector
  pose at or before f_t (the robot's state when the frame was taken);
- twist: the first teleop twist issued after f_t and no later than f_t+1.  When none was issued
  in that window (a command stream slower than the camera, or a gap), the newest twist issued
  before the frame is held if it is at most ``max_command_hold_ns`` older than the frame (the
  robot still executes it; set this to the command mux's ``command_timeout_s``), else the frame
  has no row (counted as 'no_command');
- gripper: the first gripper command after the frame and no later than the next frame, else the
  newest earlier one (a position command: the robot holds it, so it never expires);
- the last frame has no row: nothing bounds the window of its command, and the in-process rollout
  has no row for its final observation either.  Frames before the first joint state or pose have
  none ('no_state'), nor frames without any gripper command yet ('no_command').

Times: stamped streams (image, joint_states, ee_pose, teleop/twist) are compared by header stamp,
the time the source took or issued them (a real SpaceMouse stream is not locked to the camera,
and stamps do not depend on the order in which the recorder happened to receive messages).  A
stream in which a stamp is zero is unstamped: it and the frames are then compared by log time
(arrival at the recorder).  teleop/gripper (std_msgs/Float64) has no header, so the gripper is
always aligned by log time against the frames' log times.
"""

from dataclasses import dataclass, field

import numpy as np

DEFAULT_MAX_COMMAND_HOLD_S = 0.2
"""Default longest hold of a twist over frames without a new one (the mux's command timeout)."""

DROP_REASONS = ('no_state', 'no_command', 'last_frame')
"""Why a frame has no row (keys of :attr:`RowAlignment.dropped`)."""


@dataclass(frozen=True)
class StreamTimes:
    """
    Times of one recorded stream, one entry per message in the order the rows index them.

    :param stamps_ns: header stamps (ns); None or any zero entry: the stream is unstamped
    :param log_ns: log times (arrival at the recorder, ns)
    """

    stamps_ns: object
    log_ns: object

    def __post_init__(self):
        log = np.asarray(self.log_ns, dtype=np.int64).reshape(-1)
        object.__setattr__(self, 'log_ns', log)
        if self.stamps_ns is not None:
            stamps = np.asarray(self.stamps_ns, dtype=np.int64).reshape(-1)
            if stamps.shape != log.shape:
                raise ValueError(f'{len(stamps)} stamps for {len(log)} log times')
            object.__setattr__(self, 'stamps_ns', stamps)

    @property
    def stamped(self):
        """:return: whether every message has a non-zero header stamp."""
        return self.stamps_ns is not None and bool(np.all(self.stamps_ns > 0))

    def __len__(self):
        return len(self.log_ns)


@dataclass(frozen=True)
class RowAlignment:
    """
    The rows of an episode: for each, the index of its sample in every stream.

    :param frames: index of the row's camera frame
    :param joint_states: index of its joint state
    :param ee_pose: index of its end-effector pose
    :param twist: index of its teleop twist
    :param gripper: index of its teleop gripper command
    :param held: whether the row's twist was held from before the frame (none in its window)
    :param dropped: reason -> number of frames without a row (see :data:`DROP_REASONS`)
    :param clocks: stream role -> 'stamp' or 'log', the times it was compared with the frames by
    """

    frames: np.ndarray
    joint_states: np.ndarray
    ee_pose: np.ndarray
    twist: np.ndarray
    gripper: np.ndarray
    held: np.ndarray
    dropped: dict = field(default_factory=dict)
    clocks: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.frames)


def _clock(frames, stream):
    if frames.stamped and stream.stamped:
        return 'stamp', frames.stamps_ns, stream.stamps_ns
    return 'log', frames.log_ns, stream.log_ns


def _newest_at_or_before(times, query):
    """Index (into ``times``' own order) of the newest time <= each query; -1 where none."""
    query = np.asarray(query)
    if len(times) == 0:
        return np.full(query.shape, -1, dtype=np.int64)
    order = np.argsort(times, kind='stable')
    position = np.searchsorted(times[order], query, side='right') - 1
    return np.where(position >= 0, order[np.maximum(position, 0)], -1)


def _first_in_window(times, after, until):
    """Index of the earliest time in (after, until] for each window; -1 where none."""
    after = np.asarray(after)
    if len(times) == 0:
        return np.full(after.shape, -1, dtype=np.int64)
    order = np.argsort(times, kind='stable')
    ordered = times[order]
    position = np.searchsorted(ordered, after, side='right')
    clipped = np.minimum(position, len(times) - 1)
    inside = (position < len(times)) & (ordered[clipped] <= until)
    return np.where(inside, order[clipped], -1)


def align_rows(frames, joint_states, ee_pose, twist, gripper,
               max_command_hold_ns=int(DEFAULT_MAX_COMMAND_HOLD_S * 1e9)):
    """
    Match every camera frame with its state and the operator's command (the module's rule).

    :param frames: :class:`StreamTimes` of the camera frames, in recording order
    :param joint_states: :class:`StreamTimes` of the joint states that carry the gripper joint
    :param ee_pose: :class:`StreamTimes` of the end-effector poses
    :param twist: :class:`StreamTimes` of the teleop twists
    :param gripper: :class:`StreamTimes` of the teleop gripper commands (log times used)
    :param max_command_hold_ns: longest hold of a twist over frames without a new one (ns, >= 0)
    :return: :class:`RowAlignment` (rows in frame order)
    :raises ValueError: for a negative ``max_command_hold_ns``
    """
    if max_command_hold_ns < 0:
        raise ValueError(f'max_command_hold_ns must be >= 0, got {max_command_hold_ns!r}')
    count = len(frames)
    frame_order = np.argsort(frames.stamps_ns if frames.stamped else frames.log_ns,
                             kind='stable')
    frames = StreamTimes(None if frames.stamps_ns is None else frames.stamps_ns[frame_order],
                         frames.log_ns[frame_order])
    clocks = {}
    state = {}
    for role, stream in (('joint_states', joint_states), ('ee_pose', ee_pose)):
        clocks[role], frame_times, times = _clock(frames, stream)
        state[role] = _newest_at_or_before(times, frame_times)
    # Every frame but the last has a window (f_t, f_t+1] for the command issued after it.
    clocks['twist'], frame_times, times = _clock(frames, twist)
    twist_index = _first_in_window(times, frame_times[:-1], frame_times[1:])
    previous = _newest_at_or_before(times, frame_times[:-1])
    fresh = previous >= 0
    if len(times):
        fresh &= frame_times[:-1] - times[np.maximum(previous, 0)] <= max_command_hold_ns
    held = (twist_index < 0) & fresh
    twist_index = np.where(held, previous, twist_index)
    clocks['gripper'] = 'log'
    gripper_index = _first_in_window(gripper.log_ns, frames.log_ns[:-1], frames.log_ns[1:])
    gripper_index = np.where(gripper_index >= 0, gripper_index,
                             _newest_at_or_before(gripper.log_ns, frames.log_ns[:-1]))
    has_state = (state['joint_states'][:-1] >= 0) & (state['ee_pose'][:-1] >= 0)
    has_command = (twist_index >= 0) & (gripper_index >= 0)
    rows = np.flatnonzero(has_state & has_command)
    dropped = {'no_state': int(np.sum(~has_state)),
               'no_command': int(np.sum(has_state & ~has_command)),
               'last_frame': int(count > 0)}
    return RowAlignment(frames=frame_order[rows], joint_states=state['joint_states'][rows],
                        ee_pose=state['ee_pose'][rows], twist=twist_index[rows],
                        gripper=gripper_index[rows], held=held[rows], dropped=dropped,
                        clocks=clocks)
