"""
Embeddings phi(s, c) of the policy for AMF's linear-kernel GP.

Either loss gradients or last-layer features.
"""

from active_finetune.policy.model import gaussian_nll
import numpy as np
import torch

EMBEDDINGS = ('loss_gradient', 'features')


class StateRows:
    """
    A set of observations (without task) that can be paired with any task and embedded.

    :param proprio: (N, 4)
    :param images: (N, H, W, 3) uint8 or None
    :param states: (N, D) or None
    :param actions: (N, 4) actions taken there, or None (needed only for importance weights)
    """

    def __init__(self, proprio, images=None, states=None, actions=None):
        self.proprio = np.asarray(proprio, dtype=np.float32)
        self.images = images
        self.states = states
        self.actions = actions

    def __len__(self):
        return len(self.proprio)

    @classmethod
    def concatenate(cls, rows):
        """
        Join several row sets.

        :param rows: list of :class:`StateRows`
        :return: one :class:`StateRows`
        """
        def cat(name):
            parts = [getattr(r, name) for r in rows]
            return None if any(p is None for p in parts) else np.concatenate(parts)
        return cls(cat('proprio'), cat('images'), cat('states'), cat('actions'))

    def subset(self, idx):
        """
        Rows at ``idx``.

        :param idx: integer index array
        :return: :class:`StateRows`
        """
        def take(a):
            return None if a is None else a[idx]
        return StateRows(self.proprio[idx], take(self.images), take(self.states),
                         take(self.actions))


def subsample_episode(episode, count, rng):
    """
    Pick ``count`` steps of an episode, spread evenly with a random offset.

    :param episode: an :class:`Episode`
    :param count: number of states (all steps if the episode is shorter)
    :param rng: numpy Generator
    :return: :class:`StateRows` of those steps
    """
    n = len(episode)
    if n <= count:
        idx = np.arange(n)
    else:
        stride = n / count
        idx = (np.arange(count) * stride + rng.uniform(0, stride)).astype(int).clip(0, n - 1)
    return StateRows(episode.proprio[idx],
                     None if episode.images is None else episode.images[idx],
                     None if episode.states is None else episode.states[idx],
                     episode.actions[idx])


def _batches(runner, task, rows, batch_size):
    task_id = runner.config.task_id(task)
    for start in range(0, len(rows), batch_size):
        part = rows.subset(np.arange(start, min(start + batch_size, len(rows))))
        yield part, runner.make_batch(np.full(len(part), task_id), part.proprio, part.images,
                                      part.states)


def embed(runner, task, rows, kind='loss_gradient', batch_size=256):
    """
    Embed observations paired with ``task``.

    :param runner: a :class:`PolicyInference`
    :param task: task name c in x = (s, c)
    :param rows: :class:`StateRows`
    :param kind: 'loss_gradient' (expected loss-gradient w.r.t. the last layer) or 'features'
    :param batch_size: rows per forward pass
    :return: (N, p) float64 array
    :raises ValueError: for an unknown kind
    """
    if kind not in EMBEDDINGS:
        raise ValueError(f'embedding must be one of {EMBEDDINGS}, got {kind!r}')
    policy = runner.policy
    out = []
    with torch.inference_mode():
        for _, batch in _batches(runner, task, rows, batch_size):
            if kind == 'loss_gradient':
                out.append(policy.loss_gradient_embeddings(batch))
            else:
                out.append(policy.features(batch))
    if not out:
        dim = policy.config.feature_dim
        return np.zeros((0, dim if kind == 'features' else 4 * (dim + 1)))
    return torch.cat(out).double().cpu().numpy()


def action_log_likelihood(runner, task, rows, batch_size=256):
    """
    Log pi(a | s, c) of the recorded actions under the policy for ``task``.

    :param runner: a :class:`PolicyInference`
    :param task: task name
    :param rows: :class:`StateRows` with actions
    :param batch_size: rows per forward pass
    :return: (N,) float64
    """
    out = []
    with torch.inference_mode():
        for part, batch in _batches(runner, task, rows, batch_size):
            mean, log_std, _ = runner.policy(batch)
            target = torch.as_tensor(part.actions, device=mean.device).clamp(-0.999, 0.999)
            out.append(-gaussian_nll(mean, log_std, target))
    return torch.cat(out).double().cpu().numpy() if out else np.zeros(0)


def importance_weights(log_ratios, max_weight=0.5):
    """
    Self-normalised, clipped importance weights from per-trajectory log likelihood ratios.

    :param log_ratios: (K,) sum_t log pi(a_t|s_t,c) - log pi(a_t|s_t,c_i), one per trajectory
    :param max_weight: largest share one trajectory may take after normalisation (then
        renormalised)
    :return: (K,) non-negative weights summing to 1 (empty input -> empty output)
    :raises ValueError: if a ratio is NaN
    """
    log_ratios = np.asarray(log_ratios, dtype=np.float64)
    if len(log_ratios) == 0:
        return log_ratios
    if np.isnan(log_ratios).any():
        raise ValueError(f'NaN in importance log-ratios: {log_ratios}')
    w = np.exp(log_ratios - log_ratios.max())
    w /= w.sum()
    if len(w) * max_weight >= 1.0:
        for _ in range(len(w)):
            over = w > max_weight
            if not over.any():
                break
            excess = (w[over] - max_weight).sum()
            w[over] = max_weight
            under = ~over
            mass = w[under].sum()
            # Ratios can underflow to exactly zero; their share of the excess is then uniform.
            w[under] += excess * (w[under] / mass if mass > 0 else 1.0 / under.sum())
    return w
