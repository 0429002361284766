"""One demonstration or rollout as aligned numpy arrays."""

from dataclasses import dataclass, field

import numpy as np

PROPRIO_DIM = 4
"""Proprioception: end-effector position x, y, z (m, robot base frame) and gripper opening."""

ACTION_DIM = 4
"""Action: end-effector linear velocity x, y, z and gripper command, all normalised to [-1, 1]."""


class EpisodeError(ValueError):
    """Raised when an episode's arrays are inconsistent."""


@dataclass
class Episode:
    """
    A trajectory of (observation, action) pairs for one task.

    Row t of every array belongs to control step t.  ``images`` is None for
    state-only episodes and ``states`` is None for episodes recorded on a real
    robot (no privileged simulator state there).  ``joint_positions`` (and
    ``metadata['joint_names']``) are filled only when asked for (exporting recorded episodes).
    """

    task: str
    proprio: np.ndarray
    actions: np.ndarray
    images: np.ndarray | None = None
    states: np.ndarray | None = None
    success: bool = False
    metadata: dict = field(default_factory=dict)
    joint_positions: np.ndarray | None = None

    def __post_init__(self):
        self.proprio = np.asarray(self.proprio, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        n = len(self.actions)
        if self.actions.ndim != 2 or self.actions.shape[1] != ACTION_DIM:
            raise EpisodeError(f'actions must have shape (T, {ACTION_DIM}), '
                               f'got {self.actions.shape}')
        if self.proprio.shape != (n, PROPRIO_DIM):
            raise EpisodeError(f'proprio must have shape ({n}, {PROPRIO_DIM}), '
                               f'got {self.proprio.shape}')
        if self.images is not None:
            self.images = np.asarray(self.images, dtype=np.uint8)
            if self.images.ndim != 4 or self.images.shape[0] != n or self.images.shape[3] != 3:
                raise EpisodeError(f'images must have shape ({n}, H, W, 3), '
                                   f'got {self.images.shape}')
        if self.states is not None:
            self.states = np.asarray(self.states, dtype=np.float32)
            if self.states.ndim != 2 or self.states.shape[0] != n:
                raise EpisodeError(f'states must have shape ({n}, D), got {self.states.shape}')
        if self.joint_positions is not None:
            self.joint_positions = np.asarray(self.joint_positions, dtype=np.float64)
            if self.joint_positions.ndim != 2 or self.joint_positions.shape[0] != n:
                raise EpisodeError(f'joint_positions must have shape ({n}, J), '
                                   f'got {self.joint_positions.shape}')
        if n == 0:
            raise EpisodeError(f'episode of task {self.task!r} has no steps')
        if not np.isfinite(self.actions).all() or not np.isfinite(self.proprio).all():
            raise EpisodeError(f'episode of task {self.task!r} contains NaN or inf')

    def __len__(self):
        return len(self.actions)
