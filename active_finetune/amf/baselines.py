"""
Task selection strategies behind one interface: AMF and the paper's baselines.

Every strategy has ``needs_embeddings`` (only AMF does) and
``select(tasks, demo_counts, batch_size, inputs) -> SelectionResult``; ``tasks`` are the allowed
candidates (a skipped task is left out by the caller).  Baseline scores, for display:
uniform 1/n for every task; round-robin 1 for the next task in the cycle, else 0;
least-demonstrated minus the demo count; privileged rebalancing minus (pretraining demos + demos).
"""

import time

from active_finetune.amf.selection import amf_select, SelectionError, SelectionResult
import numpy as np

STRATEGY_NAMES = ('amf', 'uniform', 'round_robin', 'least_demonstrated', 'privileged_rebalancing')


class _Strategy:
    """Shared checks of every strategy."""

    name = ''
    needs_embeddings = False

    def __init__(self, tasks, seed=0, pretraining_counts=None):
        self.tasks = tuple(tasks)
        self.seed = seed
        self.pretraining_counts = dict(pretraining_counts or {})

    def select(self, tasks, demo_counts, batch_size, inputs=None):
        """
        Choose ``batch_size`` tasks among ``tasks``.

        :param tasks: allowed candidate tasks
        :param demo_counts: dict task -> demos so far
        :param batch_size: B >= 1
        :param inputs: :class:`~active_finetune.amf.selection.SelectionInputs` (AMF only)
        :return: :class:`~active_finetune.amf.selection.SelectionResult`
        :raises SelectionError: without candidate tasks, for B < 1, or AMF without inputs
        """
        if not tasks:
            raise SelectionError('no candidate tasks to choose from')
        if batch_size < 1:
            raise SelectionError(f'batch size must be >= 1, got {batch_size}')
        t0 = time.perf_counter()
        counts = {t: int(demo_counts.get(t, 0)) for t in tasks}
        chosen, scores = [], []
        for _ in range(batch_size):
            score = self._scores(list(tasks), counts)
            pick = self._pick(list(tasks), score, counts)
            chosen.append(pick)
            scores.append(score)
            counts[pick] += 1
        return SelectionResult(chosen, scores, [], self.name, time.perf_counter() - t0)

    def _pick(self, tasks, scores, counts):
        top = max(scores.values())
        return next(t for t in self._order(tasks) if scores[t] == top)

    def _order(self, tasks):
        """Order the allowed tasks as the strategy was built (unknown ones last)."""
        known = [t for t in self.tasks if t in tasks]
        return known + [t for t in tasks if t not in known]


class UniformStrategy(_Strategy):
    """Sample every pick uniformly at random (seeded: the same seed gives the same sequence)."""

    name = 'uniform'

    def __init__(self, tasks, seed=0, pretraining_counts=None):
        super().__init__(tasks, seed, pretraining_counts)
        self._rng = np.random.default_rng(seed)

    def _scores(self, tasks, counts):
        return {t: 1.0 / len(tasks) for t in tasks}

    def _pick(self, tasks, scores, counts):
        ordered = self._order(tasks)
        return ordered[int(self._rng.integers(len(ordered)))]


class RoundRobinStrategy(_Strategy):
    """Cycle through the tasks in order, continuing across rounds; skipped tasks are passed."""

    name = 'round_robin'

    def __init__(self, tasks, seed=0, pretraining_counts=None):
        super().__init__(tasks, seed, pretraining_counts)
        self._next = 0

    def _upcoming(self, tasks):
        cycle = self.tasks or tuple(tasks)
        for offset in range(len(cycle)):
            task = cycle[(self._next + offset) % len(cycle)]
            if task in tasks:
                return task, (self._next + offset) % len(cycle)
        return tasks[0], self._next

    def _scores(self, tasks, counts):
        task, _ = self._upcoming(tasks)
        return {t: 1.0 if t == task else 0.0 for t in tasks}

    def _pick(self, tasks, scores, counts):
        task, position = self._upcoming(tasks)
        if task in self.tasks:
            self._next = (position + 1) % len(self.tasks)
        return task


class LeastDemonstratedStrategy(_Strategy):
    """The task with the fewest demos so far (ties: construction order)."""

    name = 'least_demonstrated'

    def _scores(self, tasks, counts):
        return {t: -float(counts[t]) for t in tasks}


class PrivilegedRebalancingStrategy(_Strategy):
    """
    Equalise pretraining plus fine-tuning demos per task.

    Privileged: it knows the pretraining mix, which a lab given a pretrained policy rarely does.
    """

    name = 'privileged_rebalancing'

    def _scores(self, tasks, counts):
        return {t: -float(self.pretraining_counts.get(t, 0) + counts[t]) for t in tasks}


class AmfStrategy(_Strategy):
    """AMF: the task whose demo carries the most information about the expert on the targets."""

    name = 'amf'
    needs_embeddings = True

    def select(self, tasks, demo_counts, batch_size, inputs=None):
        """
        Greedy AMF batch (see :func:`~active_finetune.amf.selection.amf_select`).

        :param tasks: allowed candidate tasks
        :param demo_counts: dict task -> demos so far
        :param batch_size: B >= 1
        :param inputs: :class:`~active_finetune.amf.selection.SelectionInputs`
        :return: :class:`~active_finetune.amf.selection.SelectionResult`
        :raises SelectionError: without inputs, candidates, or for B < 1
        """
        if inputs is None:
            raise SelectionError('AMF needs embeddings (SelectionInputs); got none')
        return amf_select(list(tasks), demo_counts, batch_size, inputs)


_STRATEGIES = {cls.name: cls for cls in (
    AmfStrategy, UniformStrategy, RoundRobinStrategy, LeastDemonstratedStrategy,
    PrivilegedRebalancingStrategy)}


def make_strategy(name, tasks, seed=0, pretraining_counts=None):
    """
    Build a selection strategy by name.

    :param name: one of :data:`STRATEGY_NAMES`
    :param tasks: all tasks, in a fixed order (round-robin order, tie-breaking)
    :param seed: seed of the uniform strategy's generator
    :param pretraining_counts: dict task -> pretraining demos (privileged rebalancing)
    :return: a strategy object
    :raises ValueError: for an unknown name
    """
    if name not in _STRATEGIES:
        raise ValueError(
            f'unknown selection strategy {name!r}; choose from {", ".join(STRATEGY_NAMES)}')
    return _STRATEGIES[name](tasks, seed=seed, pretraining_counts=pretraining_counts)
