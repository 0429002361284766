"""
The active fine-tuning loop in simulation (ROS-free).

Select -> demonstrate -> fine-tune -> evaluate.

The offline experiment and the README's demo use it directly; the ROS nodes use its pieces
(:func:`select_next_tasks`, :func:`~active_finetune.training.bc.train_bc`) over real topics.
"""

from dataclasses import dataclass, field
import logging
import time

from active_finetune.amf.embeddings import TrunkFeatureCache
from active_finetune.amf.targets import build_embeddings, TargetConfig
from active_finetune.policy.inference import PolicyInference
from active_finetune.policy.model import tasks_served_by_prior
from active_finetune.sim.rollouts import (
    collect_demos, evaluate_policy, PURPOSE_TARGET)
from active_finetune.training.bc import DemoDataset, train_bc, TrainConfig

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    """Settings of one active fine-tuning run."""

    strategy: str = 'amf'
    """amf | uniform | round_robin | least_demonstrated | privileged_rebalancing."""
    budget: int = 20
    """Total number of demonstrations N."""
    demos_per_round: int = 4
    """B: demos chosen greedily per round, fine-tuning after each round."""
    rho2: float = 1.0
    """Demo noise variance rho^2 of the GP, relative to a unit mean squared target embedding."""
    operator_noise_std: float = 0.0
    target_rollouts_per_task: int = 2
    """Current-policy rollouts per task used as target states (simulation only)."""
    eval_episodes: int = 5
    targets: TargetConfig = field(default_factory=TargetConfig)
    finetune: TrainConfig = field(default_factory=TrainConfig)
    target_weights: dict | None = None
    """mu over tasks; None = uniform."""
    cap_alpha_by_pretraining: bool = True
    """
    Cap each task's mixture weight at its share of the demos, ``n_new / (n_new + n_pretrain)``
    (as the trainer node does by default); False lets a demonstrated task's alpha reach 1.
    """
    seed: int = 0

    def __post_init__(self):
        if self.budget < 1 or self.demos_per_round < 1:
            raise ValueError(f'budget and demos_per_round must be >= 1, got {self.budget}, '
                             f'{self.demos_per_round}')
        if not self.rho2 > 0:
            raise ValueError(f'rho2 must be > 0, got {self.rho2}')


def select_next_tasks(strategy, policy, tasks, demos, rollouts, config, pretraining=(),
                      demo_counts=None, round_index=0, candidates=None, trunk_cache=None):
    """
    Choose the next B tasks to demonstrate with ``strategy``.

    :param strategy: a strategy from :func:`active_finetune.amf.baselines.make_strategy`
    :param policy: current :class:`TaskPolicy`
    :param tasks: task names (targets, and candidates unless ``candidates`` is given)
    :param demos: demo episodes collected so far
    :param rollouts: dict task -> current-policy rollouts (may be empty)
    :param config: :class:`LoopConfig`
    :param pretraining: pretraining demo episodes (state source and conditioning set)
    :param demo_counts: dict task -> demos so far (derived from ``demos`` if None)
    :param round_index: round number, for seeding
    :param candidates: the tasks that may be asked for (a subset of ``tasks``, e.g. without the
        skipped ones); None = all of ``tasks``.  Targets stay all of ``tasks``.
    :param trunk_cache: a :class:`~active_finetune.amf.embeddings.TrunkFeatureCache` kept
        between selections (the demos' trunk features are then computed once per checkpoint)
    :return: a SelectionResult
    """
    from active_finetune.amf.selection import SelectionInputs
    counts = demo_counts if demo_counts is not None else dict.fromkeys(tasks, 0)
    if demo_counts is None:
        for e in demos:
            counts[e.task] = counts.get(e.task, 0) + 1
    inputs = None
    if strategy.needs_embeddings:
        from dataclasses import replace
        target_config = replace(config.targets, seed=config.seed * 1000 + round_index)
        emb = build_embeddings(PolicyInference(policy), tasks, demos, rollouts, target_config,
                               pretraining, trunk_cache)
        inputs = SelectionInputs(
            targets=emb['targets'], candidates=emb['candidates'], demos=emb['demos'],
            target_weights=config.target_weights, rho2=config.rho2)
    allowed = list(tasks) if candidates is None else [t for t in tasks if t in candidates]
    return strategy.select(tasks=allowed, demo_counts={t: counts.get(t, 0) for t in allowed},
                           batch_size=config.demos_per_round, inputs=inputs)


class ActiveFinetuningLoop:
    """
    One active fine-tuning run in simulation with scripted operators.

    :param policy: the pretrained :class:`TaskPolicy`
    :param sim_config: :class:`SimConfig` matching the policy's observations
    :param config: :class:`LoopConfig`
    :param pretraining: pretraining episodes (if known)
    :param pretraining_counts: dict task -> pretraining demos (privileged rebalancing, and the
        alpha cap of ``config.cap_alpha_by_pretraining``)
    :param workers: processes for rollouts
    :param progress: progress bars
    """

    def __init__(self, policy, sim_config, config, pretraining=(), pretraining_counts=None,
                 workers=1, progress=False):
        from active_finetune.amf.baselines import make_strategy
        self.policy = policy
        self.pretrained = policy
        self.tasks = tuple(policy.config.tasks)
        self.sim_config = sim_config
        self.config = config
        self.pretraining = list(pretraining)
        self.workers = workers
        self.progress = progress
        self.demos = []
        self.counts = dict.fromkeys(self.tasks, 0)
        self.pretraining_counts = dict(pretraining_counts or {})
        self.strategy = make_strategy(config.strategy, tasks=self.tasks, seed=config.seed,
                                      pretraining_counts=self.pretraining_counts)
        self.round = 0
        self._baseline = None
        self._trunk_cache = TrunkFeatureCache()
        self.reused = []
        """Tasks the last :meth:`evaluate` took from the first evaluation (see there)."""

    def _rollouts(self):
        if not self.strategy.needs_embeddings or self.config.target_rollouts_per_task == 0:
            return {}
        _, episodes = evaluate_policy(
            self.policy, self.tasks, self.config.target_rollouts_per_task, self.sim_config,
            base_seed=self.config.seed * 7919 + self.round, workers=self.workers, progress=False,
            purpose=PURPOSE_TARGET, keep_episodes=True)
        out = {}
        for e in episodes:
            out.setdefault(e.task, []).append(e)
        return out

    def evaluate(self):
        """
        Success rate per task of the current policy.

        Every call uses the same scenes.  With the adaptive prior a task whose mixture weight is
        exactly 0 (no demos yet) is served by the frozen pretrained weights, so its rollouts
        would repeat the first evaluation's bit for bit: it takes that evaluation's rate instead
        of being rolled out again (listed in :attr:`reused`).

        :return: dict task -> rate
        """
        reuse = [] if self._baseline is None else tasks_served_by_prior(self.policy, self.tasks)
        rest = [t for t in self.tasks if t not in reuse]
        rates = evaluate_policy(self.policy, rest, self.config.eval_episodes, self.sim_config,
                                base_seed=10_000 + self.config.seed, workers=self.workers,
                                progress=self.progress) if rest else {}
        rates.update({t: self._baseline[t] for t in reuse})
        if self._baseline is None and self.policy is self.pretrained:
            self._baseline = dict(rates)
        self.reused = reuse
        return {t: rates[t] for t in self.tasks}

    def step(self):
        """
        Run one round: select B tasks, demonstrate them, fine-tune on all demos so far.

        :return: dict with the round's selection, timings and training metrics
        """
        t0 = time.perf_counter()
        remaining = self.config.budget - len(self.demos)
        config = self.config
        if remaining < config.demos_per_round:
            from dataclasses import replace
            config = replace(config, demos_per_round=remaining)
        rollouts = self._rollouts()
        t_sel = time.perf_counter()
        selection = select_next_tasks(self.strategy, self.policy, self.tasks, self.demos, rollouts,
                                      config, self.pretraining, dict(self.counts), self.round,
                                      trunk_cache=self._trunk_cache)
        select_s = time.perf_counter() - t_sel
        chosen = list(selection.chosen)
        requests = {}
        for task in chosen:
            requests[task] = requests.get(task, 0) + 1
        new = collect_demos(requests, self.sim_config, base_seed=self.config.seed,
                            noise_std=self.config.operator_noise_std, workers=1, progress=False,
                            start_index=dict(self.counts))
        for e in new:
            self.counts[e.task] += 1
        self.demos.extend(new)
        t_train = time.perf_counter()
        from dataclasses import replace
        train_config = replace(self.config.finetune, seed=self.config.seed * 100 + self.round)
        self.policy, metrics = train_bc(self.policy, DemoDataset(self.demos, self.policy.config),
                                        train_config, progress=self.progress,
                                        anchor=self.pretrained,
                                        pretraining_counts=self.pretraining_counts
                                        if self.config.cap_alpha_by_pretraining else None)
        self.round += 1
        return {'round': self.round, 'chosen': chosen, 'selection': selection.to_dict(),
                'demos_used': len(self.demos), 'demo_success': [bool(e.success) for e in new],
                'select_s': round(select_s, 3), 'train_s': round(time.perf_counter() - t_train, 1),
                'round_s': round(time.perf_counter() - t0, 1), 'train_metrics': metrics}

    @property
    def done(self):
        """Whether the demonstration budget is spent."""
        return len(self.demos) >= self.config.budget
