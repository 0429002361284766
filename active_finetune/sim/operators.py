"""Scripted operators: Meta-World's expert policies acting as a demonstrating human."""

import numpy as np


class ScriptedOperator:
    """
    A scripted expert for one task, with the paper's Gaussian action noise a = pi*(s) + eps.

    :param task: Meta-World v3 task name
    :param noise_std: standard deviation of the action noise (normalised action units)
    :param seed: seed of the noise generator
    """

    def __init__(self, task, noise_std=0.0, seed=0):
        from metaworld.policies import ENV_POLICY_MAP
        if task not in ENV_POLICY_MAP:
            raise ValueError(f'no scripted expert for task {task!r}')
        if noise_std < 0:
            raise ValueError(f'noise_std must be >= 0, got {noise_std}')
        self.task = task
        self.noise_std = noise_std
        self._policy = ENV_POLICY_MAP[task]()
        self._rng = np.random.default_rng(seed)

    def act(self, state):
        """
        Choose the expert's action for a Meta-World state.

        :param state: (39,) Meta-World state
        :return: (4,) float32 action in [-1, 1]
        """
        action = np.asarray(self._policy.get_action(np.asarray(state, dtype=np.float64)))
        if self.noise_std > 0:
            action = action + self._rng.normal(0.0, self.noise_std, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)
