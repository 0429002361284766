"""
AMF task selection (AMF.md, paper Eq. 2): greedy batch of the most informative tasks to demonstrate.

    c_n = argmax_{c'} sum_c mu(c) sum_{x in S(c)} w(x) * 0.5 log(sigma_D^2(x) / sigma_{D+X'(c')}^2(x))

Each candidate task c' is scored by how much conditioning the GP on its fantasised demo rows X'(c')
shrinks the posterior variance on every target task's states; the winner's rows are then added to
the conditioning set and the next pick of the batch is scored against that updated posterior.
"""

from dataclasses import dataclass, field
import time

import numpy as np

from active_finetune.amf.gp import WeightSpaceGP


class SelectionError(ValueError):
    """Raised for selection inputs that cannot give a defined answer (shapes, NaN, weights)."""


def _finite(name, array):
    if not np.all(np.isfinite(array)):
        raise SelectionError(f'{name} contains NaN or inf')
    return array


@dataclass
class SelectionInputs:
    """
    Embeddings AMF selects from.

    :param targets: dict task -> (phi (n, p), importance weights (n,) >= 0): the target states S(c)
    :param candidates: dict task -> phi (m, p): fantasised demo rows X' of each candidate task
    :param demos: (k, p) rows of the conditioning set D (may have zero rows)
    :param target_weights: dict task -> mu(task) >= 0, or None for uniform over the target tasks
    :param rho2: demo noise variance rho^2 (> 0)
    """

    targets: dict
    candidates: dict
    demos: np.ndarray
    target_weights: dict | None = None
    rho2: float = 1.0
    dim: int = field(init=False)

    def __post_init__(self):
        if not self.targets:
            raise SelectionError('no target tasks')
        if not self.rho2 > 0:
            raise SelectionError(f'rho2 must be > 0, got {self.rho2}')
        dims = set()
        targets = {}
        for task, (phi, weights) in self.targets.items():
            phi = _finite(f'target embeddings of {task!r}', np.asarray(phi, dtype=np.float64))
            weights = _finite(f'target weights of {task!r}', np.asarray(weights, dtype=np.float64))
            if phi.ndim != 2 or weights.shape != (len(phi),):
                raise SelectionError(f'target {task!r}: embeddings must be (n, p) with n weights, got '
                                     f'{phi.shape} and {weights.shape}')
            if np.any(weights < 0):
                raise SelectionError(f'target {task!r} has negative importance weights')
            dims.add(phi.shape[1])
            targets[task] = (phi, weights)
        candidates = {}
        for task, phi in self.candidates.items():
            phi = _finite(f'candidate embeddings of {task!r}', np.asarray(phi, dtype=np.float64))
            if phi.ndim != 2:
                raise SelectionError(f'candidate {task!r}: embeddings must be (m, p), got {phi.shape}')
            dims.add(phi.shape[1])
            candidates[task] = phi
        demos = _finite('conditioning embeddings', np.asarray(self.demos, dtype=np.float64))
        if demos.ndim != 2:
            raise SelectionError(f'conditioning embeddings must be (k, p), got {demos.shape}')
        if len(demos):
            dims.add(demos.shape[1])
        if len(dims) != 1:
            raise SelectionError(f'embeddings disagree on their dimension: {sorted(dims)}')
        self.dim = dims.pop()
        self.targets, self.candidates, self.demos = targets, candidates, demos
        self.mu = self._task_weights()

    def _task_weights(self):
        tasks = list(self.targets)
        if self.target_weights is None:
            return {t: 1.0 / len(tasks) for t in tasks}
        raw = {t: float(self.target_weights.get(t, 0.0)) for t in tasks}
        if any(not np.isfinite(v) or v < 0 for v in raw.values()):
            raise SelectionError(f'target weights mu must be finite and >= 0, got {raw}')
        total = sum(raw.values())
        if total <= 0:
            raise SelectionError(f'target weights mu put no mass on the target tasks {tasks}')
        return {t: v / total for t, v in raw.items()}


@dataclass
class SelectionResult:
    """
    One round's choice and why.

    ``scores[i]`` holds every allowed task's score at greedy pick i; ``terms[i][c'][c]`` is the
    part of candidate c''s score that comes from target task c (AMF only).
    """

    chosen: list
    scores: list
    terms: list
    strategy: str
    seconds: float = 0.0

    def to_dict(self):
        """
        JSON-serialisable form.

        :return: dict with chosen, scores, terms, strategy, seconds
        """
        return {'chosen': list(self.chosen),
                'scores': [{t: float(v) for t, v in s.items()} for s in self.scores],
                'terms': [{c: {t: float(v) for t, v in per.items()} for c, per in step.items()}
                          for step in self.terms],
                'strategy': self.strategy, 'seconds': round(float(self.seconds), 6)}


def best_task(scores, demo_counts, tolerance=1e-12):
    """
    Highest score; exact ties go to the least-demonstrated task, then the first name alphabetically.

    Breaking ties by name rather than by position keeps the choice independent of task order.

    :param scores: dict task -> score
    :param demo_counts: dict task -> demos so far (including earlier picks of this batch)
    :param tolerance: relative tolerance for a tie
    :return: task name
    """
    top = max(scores.values())
    tied = [t for t, v in scores.items() if v >= top - tolerance * max(1.0, abs(top))]
    return min(tied, key=lambda t: (demo_counts.get(t, 0), t))


class _TargetSet:
    """Target rows of all tasks stacked once, with each row's weight mu(c) * w(x) / sum_c w."""

    def __init__(self, inputs):
        self.tasks = list(inputs.targets)
        rows, weights, owner = [], [], []
        for index, task in enumerate(self.tasks):
            phi, w = inputs.targets[task]
            if len(phi) == 0 or w.sum() <= 0:
                continue
            rows.append(phi)
            weights.append(inputs.mu[task] * w / w.sum())
            owner.append(np.full(len(phi), index))
        self.rows = np.concatenate(rows) if rows else np.zeros((0, inputs.dim))
        self.weights = np.concatenate(weights) if weights else np.zeros(0)
        self.owner = np.concatenate(owner) if owner else np.zeros(0, dtype=int)

    def per_task(self, gains):
        """Weighted gain summed per target task."""
        totals = np.bincount(self.owner, weights=self.weights * gains, minlength=len(self.tasks))
        return dict(zip(self.tasks, totals))


def amf_select(tasks, demo_counts, batch_size, inputs):
    """
    Greedy AMF batch: B picks, each conditioned on the fantasised rows of the earlier ones.

    :param tasks: allowed candidate tasks (targets may include more)
    :param demo_counts: dict task -> demos so far (tie-breaking)
    :param batch_size: B >= 1
    :param inputs: :class:`SelectionInputs`
    :return: :class:`SelectionResult`
    :raises SelectionError: without candidate tasks or for B < 1
    """
    if not tasks:
        raise SelectionError('no candidate tasks to choose from')
    if batch_size < 1:
        raise SelectionError(f'batch size must be >= 1, got {batch_size}')
    t0 = time.perf_counter()
    gp = WeightSpaceGP(inputs.dim, inputs.rho2, inputs.demos)
    targets = _TargetSet(inputs)
    variance = gp.variance(targets.rows)
    counts = dict(demo_counts)
    empty = np.zeros((0, inputs.dim))
    chosen, all_scores, all_terms = [], [], []
    for _ in range(batch_size):
        scores, terms = {}, {}
        for task in tasks:
            rows = inputs.candidates.get(task, empty)
            gains = gp.information_gain(rows, targets.rows, variance) if len(rows) else \
                np.zeros(len(targets.rows))
            per_target = targets.per_task(gains)
            terms[task] = per_target
            scores[task] = float(sum(per_target.values()))
        pick = best_task(scores, counts)
        chosen.append(pick)
        all_scores.append(scores)
        all_terms.append(terms)
        counts[pick] = counts.get(pick, 0) + 1
        gp.condition(inputs.candidates.get(pick, empty))
        variance = gp.variance(targets.rows)
    return SelectionResult(chosen, all_scores, all_terms, 'amf', time.perf_counter() - t0)
