"""
Embeddings phi(s, c) of the policy for AMF's linear-kernel GP.

Either loss gradients or last-layer features.
"""

import hashlib

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
    :param image_features: (N, C, h, w) tensor of the policy's frozen pretrained trunk on
        ``images`` (:func:`with_trunk_features`), or None: the policy computes them
    """

    def __init__(self, proprio, images=None, states=None, actions=None, image_features=None):
        self.proprio = np.asarray(proprio, dtype=np.float32)
        self.images = images
        self.states = states
        self.actions = actions
        self.image_features = image_features

    def __len__(self):
        return len(self.proprio)

    @classmethod
    def concatenate(cls, rows):
        """
        Join several row sets.

        :param rows: list of :class:`StateRows`
        :return: one :class:`StateRows`
        """
        def cat(name, join=np.concatenate):
            parts = [getattr(r, name) for r in rows]
            return None if any(p is None for p in parts) else join(parts)
        return cls(cat('proprio'), cat('images'), cat('states'), cat('actions'),
                   cat('image_features', torch.cat))

    def subset(self, idx):
        """
        Rows at ``idx``.

        :param idx: integer index array
        :return: :class:`StateRows`
        """
        def take(a):
            return None if a is None else a[idx]
        return StateRows(self.proprio[idx], take(self.images), take(self.states),
                         take(self.actions),
                         None if self.image_features is None
                         else self.image_features[torch.as_tensor(idx, dtype=torch.long)])


def with_trunk_features(runner, rows, batch_size=256):
    """
    Attach the frozen pretrained trunk's features of every image to ``rows``, computed once.

    Scoring reads the same frames many times (once per task, for the importance weights); with
    the features attached the trunk runs on each frame once instead of every time.  Rows of a
    policy without a trunk, or without images, are returned unchanged.

    :param runner: a :class:`PolicyInference`
    :param rows: :class:`StateRows`
    :param batch_size: frames per forward pass
    :return: :class:`StateRows` (the same arrays, with ``image_features``)
    """
    policy = runner.policy
    if policy.trunk is None or rows.images is None or rows.image_features is not None:
        return rows
    out = []
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            images = rows.images[start:start + batch_size]
            batch = runner.make_batch(np.zeros(len(images), dtype=np.int64),
                                      rows.proprio[start:start + len(images)], images)
            out.append(policy.image_features(batch.images))
    features = torch.cat(out) if out else None
    return StateRows(rows.proprio, rows.images, rows.states, rows.actions, features)


def episode_rows(episode):
    """
    Every step of an episode as :class:`StateRows` (with its actions).

    :param episode: an :class:`Episode`
    :return: :class:`StateRows`
    """
    return StateRows(episode.proprio, episode.images, episode.states, episode.actions)


def subsample_episode(episode, count, rng):
    """
    Pick ``count`` steps of an episode, spread evenly with a random offset.

    :param episode: an :class:`Episode`
    :param count: number of states (all steps if the episode is shorter)
    :param rng: numpy Generator
    :return: :class:`StateRows` of those steps
    """
    return subsample_rows(episode_rows(episode), count, rng)


def subsample_rows(rows, count, rng):
    """
    Pick ``count`` of a trajectory's rows, spread evenly with a random offset.

    :param rows: :class:`StateRows` of every step of one trajectory, in order
    :param count: number of states (all rows if there are fewer)
    :param rng: numpy Generator
    :return: :class:`StateRows` of those steps
    """
    n = len(rows)
    if n <= count:
        idx = np.arange(n)
    else:
        stride = n / count
        idx = (np.arange(count) * stride + rng.uniform(0, stride)).astype(int).clip(0, n - 1)
    return rows.subset(idx)


class TrunkFeatureCache:
    """
    The frozen trunk's features of whole episodes, kept from one selection to the next.

    A selector scores every demo again at every request; while the policy's trunk is the same
    object (the same checkpoint) the features of a demo already seen are reused.  Entries are
    keyed by a digest of the episode's frames; a new trunk empties the cache, and :meth:`prune`
    drops the episodes not asked for since the previous prune.
    """

    def __init__(self):
        self._trunk = None
        self._features = {}
        self._used = set()

    def rows(self, runner, rows):
        """
        ``rows`` of one whole episode with trunk features, from the cache when possible.

        :param runner: a :class:`PolicyInference`
        :param rows: :class:`StateRows` of every step of the episode
        :return: :class:`StateRows` (see :func:`with_trunk_features`)
        """
        trunk = runner.policy.trunk
        if trunk is None or rows.images is None:
            return rows
        if trunk is not self._trunk:
            self._trunk, self._features, self._used = trunk, {}, set()
        images = np.ascontiguousarray(rows.images)
        key = (images.shape, hashlib.blake2b(images.data, digest_size=16).digest())
        self._used.add(key)
        if key not in self._features:
            self._features[key] = with_trunk_features(runner, rows).image_features
        return StateRows(rows.proprio, rows.images, rows.states, rows.actions,
                         self._features[key])

    def prune(self):
        """Forget the episodes not asked for since the previous prune."""
        self._features = {k: v for k, v in self._features.items() if k in self._used}
        self._used = set()

    def __len__(self):
        return len(self._features)


def _batches(runner, task, rows, batch_size):
    task_id = runner.config.task_id(task)
    for start in range(0, len(rows), batch_size):
        part = rows.subset(np.arange(start, min(start + batch_size, len(rows))))
        batch = runner.make_batch(np.full(len(part), task_id), part.proprio, part.images,
                                  part.states)
        if part.image_features is not None:
            batch.image_features = part.image_features.to(batch.proprio.device)
        yield part, batch


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
