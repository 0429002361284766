"""
Target and candidate states for AMF (the paper's target states S(c)).

For every task c the expert's state distribution is unknown; it is approximated by
- the current policy's own rollouts of c (simulation, or evaluation runs recorded on a robot),
- the states of every demo collected so far, weighted by the current policy's likelihood ratio
  prod_t pi(a_t|s_t,c) / pi(a_t|s_t,c_i) over all steps t of the demo (c_i: the task it was
  recorded for), self-normalised and clipped,
- optionally the pretraining data, weighted the same way.
A fixed number of states is subsampled per trajectory.  The same sources, paired with c', give the
fantasised demo states X' of a candidate task c'.
"""

from dataclasses import dataclass, field

from active_finetune.amf.embeddings import (
    action_log_likelihood, embed, EMBEDDINGS, episode_rows, importance_weights, StateRows,
    subsample_episode, subsample_rows, TrunkFeatureCache)
import numpy as np


@dataclass(frozen=True)
class TargetConfig:
    """How AMF builds target states, candidate states and the conditioning set."""

    embedding: str = 'loss_gradient'
    """'loss_gradient' (the paper's best variant) or 'features' (cheaper last-layer features)."""
    states_per_trajectory: int = 10
    candidate_states: int = 30
    """Fantasised demo states per candidate task (m)."""
    demo_target_share: float = 0.5
    """
    Share of a task's target mass given to importance-weighted demo states when rollouts
    exist.
    """
    max_importance_weight: float = 0.5
    """Clip on one trajectory's self-normalised importance weight."""
    condition_on_pretraining: bool = True
    """Include (subsampled) pretraining demos in the GP's conditioning set D."""
    seed: int = 0

    def __post_init__(self):
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f'embedding must be one of {EMBEDDINGS}, got {self.embedding!r}')
        if self.states_per_trajectory < 1 or self.candidate_states < 1:
            raise ValueError('states_per_trajectory and candidate_states must be >= 1, got '
                             f'{self.states_per_trajectory}, {self.candidate_states}')
        if not 0.0 <= self.demo_target_share <= 1.0:
            raise ValueError(f'demo_target_share must be in [0, 1], got {self.demo_target_share}')
        if not 0.0 < self.max_importance_weight <= 1.0:
            raise ValueError(f'max_importance_weight must be in (0, 1], '
                             f'got {self.max_importance_weight}')


@dataclass
class TaskStates:
    """Weighted state rows standing in for the expert's state distribution of one task."""

    rows: StateRows
    weights: np.ndarray
    sources: dict = field(default_factory=dict)
    """Source name -> number of rows, for logs."""


def _subsampled(episodes, config, rng):
    return [subsample_episode(e, config.states_per_trajectory, rng) for e in episodes]


def trajectory_log_ratio(runner, task, episode, own_log_likelihood=None, rows=None):
    """
    Log of prod_t pi(a_t | s_t, task) / pi(a_t | s_t, c_i) over every step t of ``episode``.

    c_i is the task the episode was recorded for; the ratio of an episode of ``task`` itself is 0.

    :param runner: :class:`PolicyInference` of the current policy
    :param task: the task whose state distribution the episode stands in for
    :param episode: an :class:`Episode` with actions
    :param own_log_likelihood: sum_t log pi(a_t | s_t, c_i) if already computed
    :param rows: :func:`episode_rows` of ``episode`` if already built (e.g. with trunk features)
    :return: float
    """
    if episode.task == task:
        return 0.0
    if rows is None:
        rows = episode_rows(episode)
    if own_log_likelihood is None:
        own_log_likelihood = action_log_likelihood(runner, episode.task, rows).sum()
    return float(action_log_likelihood(runner, task, rows).sum() - own_log_likelihood)


def task_state_sets(runner, tasks, demos, rollouts, config, pretraining=(), trunk_cache=None):
    """
    Build the weighted state set of every task.

    :param runner: :class:`PolicyInference` of the current policy
    :param tasks: task names
    :param demos: list of demo :class:`Episode` collected so far (any task)
    :param rollouts: dict task -> list of the current policy's rollout episodes of that task
    :param config: :class:`TargetConfig`
    :param pretraining: pretraining demo episodes (an extra, importance-weighted source)
    :param trunk_cache: a :class:`TrunkFeatureCache` kept between calls, or None
    :return: dict task -> :class:`TaskStates` (rows may be empty)
    """
    rng = np.random.default_rng(config.seed)
    reused = list(demos) + list(pretraining)
    # Every step of every reused episode is scored once per task, and its subsampled states are
    # embedded once per task: the frozen trunk's features of its frames are computed once.
    cache = TrunkFeatureCache() if trunk_cache is None else trunk_cache
    full_rows = [cache.rows(runner, episode_rows(e)) for e in reused]
    cache.prune()
    reused_rows = [subsample_rows(r, config.states_per_trajectory, rng) for r in full_rows]
    own_ll = [action_log_likelihood(runner, e.task, r).sum() for e, r in zip(reused, full_rows)]
    out = {}
    for task in tasks:
        parts, weights, sources = [], [], {}
        own = _subsampled(rollouts.get(task, []), config, rng)
        has_own = sum(len(r) for r in own) > 0
        has_reused = len(reused_rows) > 0
        own_mass = 1.0 if not has_reused else (1.0 - config.demo_target_share if has_own else 0.0)
        if has_own:
            n = sum(len(r) for r in own)
            parts += own
            weights.append(np.full(n, own_mass / n))
            sources['rollouts'] = n
        if has_reused:
            log_ratio = np.array([trajectory_log_ratio(runner, task, e, ll, r)
                                  for e, ll, r in zip(reused, own_ll, full_rows)])
            traj_w = importance_weights(log_ratio, config.max_importance_weight) * (1.0 - own_mass)
            for r, w in zip(reused_rows, traj_w):
                parts.append(r)
                weights.append(np.full(len(r), w / len(r)))
            sources['demos'] = sum(len(r) for r in reused_rows)
        if parts:
            out[task] = TaskStates(StateRows.concatenate(parts), np.concatenate(weights), sources)
        else:
            out[task] = TaskStates(StateRows(np.zeros((0, 4), np.float32)), np.zeros(0), sources)
    return out


def sample_candidates(state_set, count, rng):
    """
    Draw fantasised demo states for a candidate task from its weighted state set.

    :param state_set: :class:`TaskStates`
    :param count: m
    :param rng: numpy Generator
    :return: :class:`StateRows` (empty if the set is empty)
    """
    n = len(state_set.rows)
    if n == 0:
        return state_set.rows
    p = state_set.weights / state_set.weights.sum() if state_set.weights.sum() > 0 else None
    idx = rng.choice(n, size=min(count, n), replace=False, p=p if p is not None and
                     np.count_nonzero(p) >= min(count, n) else None)
    return state_set.rows.subset(np.sort(idx))


def build_embeddings(runner, tasks, demos, rollouts, config, pretraining=(), trunk_cache=None):
    """
    Everything AMF's selection needs, as arrays.

    :param runner: :class:`PolicyInference` of the current policy
    :param tasks: candidate and target tasks
    :param demos: demos collected so far
    :param rollouts: dict task -> current policy rollouts
    :param config: :class:`TargetConfig`
    :param pretraining: pretraining demos
    :param trunk_cache: a :class:`TrunkFeatureCache` kept between calls, or None
    :return: dict with 'targets' (task -> (phi, weights)), 'candidates' (task -> phi),
        'demos' (phi of the conditioning set D), 'sources' (task -> dict)
    """
    rng = np.random.default_rng(config.seed + 1)
    sets = task_state_sets(runner, tasks, demos, rollouts, config, pretraining, trunk_cache)
    targets, candidates = {}, {}
    for task in tasks:
        s = sets[task]
        targets[task] = (embed(runner, task, s.rows, config.embedding), s.weights)
        candidates[task] = embed(runner, task, sample_candidates(s, config.candidate_states, rng),
                                 config.embedding)
    conditioning = list(demos) + (list(pretraining) if config.condition_on_pretraining else [])
    phis = [embed(runner, e.task, subsample_episode(e, config.states_per_trajectory, rng),
                  config.embedding)
            for e in conditioning]
    dim = next(iter(targets.values()))[0].shape[1]
    demo_phi = np.concatenate(phis) if phis else np.zeros((0, dim))
    # One global scale so that rho2 is relative to a typical target embedding (mean squared
    # norm 1); a common factor leaves the ranking of tasks to the GP, not to the network's raw
    # scale.
    all_targets = np.concatenate([phi for phi, _ in targets.values()])
    sq = (all_targets ** 2).sum(1).mean() if len(all_targets) else 0.0
    scale = 1.0 / np.sqrt(sq) if sq > 0 else 1.0
    return {'targets': {t: (phi * scale, w) for t, (phi, w) in targets.items()},
            'candidates': {t: phi * scale for t, phi in candidates.items()},
            'demos': demo_phi * scale, 'scale': scale,
            'sources': {t: sets[t].sources for t in tasks}}
