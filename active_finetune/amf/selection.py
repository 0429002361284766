"""
AMF task selection (paper Eq. 2): a greedy batch of the most informative tasks to demo.

  c_n = argmax_{c'} sum_c mu(c) sum_{x in S(c)} w(x) 0.5 log(sigma_D^2(x) / sigma_{D+X'(c')}^2(x))

Each candidate task c' is scored by how much conditioning the GP on its fantasised demo rows X'(c')
shrinks the posterior variance on every target task's states; the winner's rows are then added to
the conditioning set and the next pick of the batch is scored against that updated posterior.
"""

import contextlib
from dataclasses import dataclass, field
import functools
import logging
import time

from active_finetune.amf.gp import FantasyPosterior
import numpy as np

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # optional: without it BLAS keeps its own thread count
    ThreadpoolController = None

_LOG = logging.getLogger(__name__)

SELECTION_BLAS_THREADS = 1
"""
BLAS threads during selection.  Selection makes many small BLAS/LAPACK calls; on the 2 shared,
loaded cores of the development machine 2-thread OpenBLAS was slower everywhere: 0.32 s against
0.017 s for 10 tasks, and 3.7 s against 0.9 s for 50 tasks x 10k states x p = 516
(results/bench_selection.json, bench/bench_selection.py --blas-threads 1,default).
"""


@functools.lru_cache(maxsize=1)
def _thread_controller():
    """Find the loaded BLAS libraries once (a fresh search costs milliseconds per selection)."""
    return ThreadpoolController()


def _blas_threads(count):
    """Limit BLAS threads within a ``with`` block (no-op for None or without threadpoolctl)."""
    if count is None or ThreadpoolController is None:
        return contextlib.nullcontext()
    return _thread_controller().limit(limits=count, user_api='blas')


class SelectionError(ValueError):
    """Raised for selection inputs that cannot give a defined answer (shapes, NaN, weights)."""


def _finite(name, array):
    """Raise :class:`SelectionError` naming the first non-finite entry of ``array``."""
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        index = tuple(int(i) for i in bad[0])
        raise SelectionError(f'{name} contains {len(bad)} non-finite values, first {array[index]} '
                             f'at index {index}')
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
        dims, empty_dims = set(), set()

        def note_dim(phi):
            (dims if len(phi) else empty_dims).add(phi.shape[1])

        targets = {}
        for task, (phi, weights) in self.targets.items():
            phi = _finite(f'target embeddings of {task!r}', np.asarray(phi, dtype=np.float64))
            weights = _finite(f'target weights of {task!r}', np.asarray(weights, dtype=np.float64))
            if phi.ndim != 2 or weights.shape != (len(phi),):
                raise SelectionError(f'target {task!r}: embeddings must be (n, p) with n weights, '
                                     f'got {phi.shape} and {weights.shape}')
            if np.any(weights < 0):
                raise SelectionError(f'target {task!r} has negative importance weights: '
                                     f'{weights[weights < 0][:5]}')
            note_dim(phi)
            targets[task] = (phi, weights)
        candidates = {}
        for task, phi in self.candidates.items():
            phi = _finite(f'candidate embeddings of {task!r}', np.asarray(phi, dtype=np.float64))
            if phi.ndim != 2:
                raise SelectionError(
                    f'candidate {task!r}: embeddings must be (m, p), got {phi.shape}')
            note_dim(phi)
            candidates[task] = phi
        demos = _finite('conditioning embeddings', np.asarray(self.demos, dtype=np.float64))
        if demos.ndim != 2:
            raise SelectionError(f'conditioning embeddings must be (k, p), got {demos.shape}')
        note_dim(demos)
        if len(dims) > 1:
            raise SelectionError(f'embeddings disagree on their dimension: {sorted(dims)}')
        if not dims and len(empty_dims) != 1:
            raise SelectionError(f'every embedding array is empty and their widths '
                                 f'{sorted(empty_dims)} do not give one dimension')
        self.dim = (dims or empty_dims).pop()

        def rows(phi):
            # Arrays without rows may have any width; give them the common one.
            return phi if len(phi) else np.zeros((0, self.dim))

        self.targets = {t: (rows(phi), w) for t, (phi, w) in targets.items()}
        self.candidates = {t: rows(phi) for t, phi in candidates.items()}
        self.demos = rows(demos)
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
    Pick the highest score; ties go to the least-demonstrated task, then to the earliest task.

    :param scores: dict task -> score, in the caller's task order
    :param demo_counts: dict task -> demos so far (including earlier picks of this batch)
    :param tolerance: relative tolerance for a tie (absorbs rounding noise)
    :return: task name
    """
    top = max(scores.values())
    tied = [t for t, v in scores.items() if v >= top - tolerance * max(1.0, abs(top))]
    return min(tied, key=lambda t: demo_counts.get(t, 0))


class _TargetSet:
    """Target rows of all tasks stacked once, with each row's weight mu(c) * w(x) / sum_x w."""

    def __init__(self, inputs):
        self.tasks = list(inputs.targets)
        rows, weights, owner = [], [], []
        for index, task in enumerate(self.tasks):
            phi, w = inputs.targets[task]
            if len(phi) == 0 or w.sum() <= 0 or inputs.mu[task] == 0:
                continue
            rows.append(phi)
            weights.append(inputs.mu[task] * w / w.sum())
            owner.append(np.full(len(phi), index))
        self.rows = np.concatenate(rows) if rows else np.zeros((0, inputs.dim))
        self.weights = np.concatenate(weights) if weights else np.zeros(0)
        self.owner = np.concatenate(owner) if owner else np.zeros(0, dtype=int)

    def per_task(self, gains):
        """
        Weighted gains summed per target task.

        :param gains: (C, n) per-row information gains of C candidates
        :return: (C, target tasks) array of mu(c) sum_x w(x) gain(x), w self-normalised per task
        """
        totals = np.zeros((len(gains), len(self.tasks)))
        if len(self.rows):
            starts = np.flatnonzero(np.r_[True, np.diff(self.owner) != 0])
            totals[:, self.owner[starts]] = np.add.reduceat(gains * self.weights, starts, axis=1)
        return totals


def amf_select(tasks, demo_counts, batch_size, inputs, blas_threads=SELECTION_BLAS_THREADS):
    """
    Greedy AMF batch: B picks, each conditioned on the fantasised rows of the earlier ones.

    The same task may be picked more than once; its second pick is scored after conditioning on
    its own fantasised rows, so it gains less than the first.

    :param tasks: allowed candidate tasks (targets may include more)
    :param demo_counts: dict task -> demos so far (tie-breaking)
    :param batch_size: B >= 1
    :param inputs: :class:`SelectionInputs`
    :param blas_threads: BLAS threads while selecting (None: leave BLAS as it is)
    :return: :class:`SelectionResult`
    :raises SelectionError: without candidate tasks, for duplicate candidates, or for B < 1
    """
    tasks = list(tasks)
    if not tasks:
        raise SelectionError('no candidate tasks to choose from')
    if len(set(tasks)) != len(tasks):
        raise SelectionError(f'candidate tasks must be distinct, got {tasks}')
    if batch_size < 1:
        raise SelectionError(f'batch size must be >= 1, got {batch_size}')
    t0 = time.perf_counter()
    with _blas_threads(blas_threads):
        targets = _TargetSet(inputs)
        empty = np.zeros((0, inputs.dim))
        blocks = [inputs.candidates.get(task, empty) for task in tasks]
        posterior = FantasyPosterior(blocks, targets.rows, inputs.demos, inputs.rho2)
        counts = dict(demo_counts)
        chosen, all_scores, all_terms = [], [], []
        gains = posterior.all_gains()
        for _ in range(batch_size):
            per_target = targets.per_task(gains)
            terms = {task: dict(zip(targets.tasks, map(float, row)))
                     for task, row in zip(tasks, per_target)}
            scores = {task: float(total) for task, total in zip(tasks, per_target.sum(axis=1))}
            pick = best_task(scores, counts)
            chosen.append(pick)
            all_scores.append(scores)
            all_terms.append(terms)
            counts[pick] = counts.get(pick, 0) + 1
            if len(chosen) < batch_size:
                # The update and the next pick's scoring in one pass over the covariances.
                gains = posterior.condition(tasks.index(pick), score=True)
    seconds = time.perf_counter() - t0
    _LOG.debug('AMF picked %s in %.3f s (%d target rows, %d candidates)', chosen, seconds,
               len(targets.rows), len(tasks))
    return SelectionResult(chosen, all_scores, all_terms, 'amf', seconds)
