"""
State of the task selector between events (ROS-free): what has been demonstrated, what to ask next.

The task selector node feeds it events (episode saved, checkpoint swapped, skip) and publishes the
:class:`active_finetune.payloads.NextTask` :meth:`SelectorSession.suggest` returns on
``operator/next_task``.  The selector owns B (``demos_per_round``): every suggestion carries it and
the trainer follows it.
"""

from dataclasses import dataclass, field, replace
import logging
import time

from active_finetune.amf.active_loop import LoopConfig, select_next_tasks
from active_finetune.amf.baselines import make_strategy
from active_finetune.amf.embeddings import TrunkFeatureCache
from active_finetune.payloads import NextTask

_LOG = logging.getLogger(__name__)

SELECTOR_STRATEGIES = ('amf', 'uniform', 'round_robin', 'least_demonstrated',
                       'privileged_rebalancing')


@dataclass(frozen=True)
class SelectorSettings:
    """Parameters of the task selector node (field metadata: ROS parameter descriptions)."""

    strategy: str = field(default='amf', metadata={
        'description': f'task selection strategy: one of {", ".join(SELECTOR_STRATEGIES)}'})
    budget: int = field(default=8, metadata={
        'description': 'total number of demonstrations to ask for (count)', 'range': (1, 100000)})
    demos_per_round: int = field(default=2, metadata={
        'description': 'B: demos per round; announced on operator/next_task, the trainer '
                       'follows it (count)',
        'range': (1, 1000)})
    wait_for_checkpoint: bool = field(default=True, metadata={
        'description': 'after B demos, ask for nothing until the fine-tuned checkpoint arrives'})
    rho2: float = field(default=1.0, metadata={
        'description': 'GP demo noise variance rho^2, relative to unit mean squared embeddings',
        'range': (1e-6, 1e6)})
    embedding: str = field(default='loss_gradient', metadata={
        'description': "AMF embedding: 'loss_gradient' or 'features'"})
    states_per_trajectory: int = field(default=10, metadata={
        'description': 'states subsampled per trajectory (count)', 'range': (1, 10000)})
    candidate_states: int = field(default=30, metadata={
        'description': 'fantasised demo states per candidate task (count)', 'range': (1, 100000)})
    sim_rollouts_per_task: int = field(default=0, metadata={
        'description': 'current-policy rollouts per task in the ROS-free simulator as target '
                       'states (simulation setups only; 0 on a robot)', 'range': (0, 100)})
    sim_rollout_max_steps: int = field(default=100, metadata={
        'description': 'horizon of those rollouts (control steps)', 'range': (1, 10000)})
    dataset_dir: str = field(default='data/episodes', metadata={
        'description': 'directory of recorded episodes (shared with the recorder; listed at '
                       'start-up and on ~/rescan_episodes, new ones come from recorder/episode)',
        'read_only': True})
    episode_cache_mb: float = field(default=1024.0, metadata={
        'description': 'bound of the in-memory cache of decoded episodes by sha256; least '
                       'recently used out first (MB)', 'range': (0.0, 1e7), 'read_only': True})
    checkpoint_path: str = field(default='checkpoints/pretrained_mt10_skewed', metadata={
        'description': 'checkpoint to score with until trainer/checkpoint announces one',
        'read_only': True})
    checkpoint_cache_dir: str = field(default='data/checkpoint_cache', metadata={
        'description': 'where weights fetched from the trainer are kept (used when the announced '
                       'path is not on this machine)', 'read_only': True})
    checkpoint_fetch_timeout_s: float = field(default=300.0, metadata={
        'description': 'longest transfer of announced weights from the trainer (s)',
        'range': (1.0, 86400.0), 'read_only': True})
    target_tasks: tuple = field(default=('',), metadata={
        'description': "target tasks mu (uniform weight); [''] means every task of the policy"})
    seed: int = field(default=0, metadata={
        'description': 'seed of random strategies and subsampling'})

    def __post_init__(self):
        if self.strategy not in SELECTOR_STRATEGIES:
            raise ValueError(f'strategy must be one of {SELECTOR_STRATEGIES}, '
                             f'got {self.strategy!r}')
        if self.embedding not in ('loss_gradient', 'features'):
            raise ValueError(f"embedding must be 'loss_gradient' or 'features', "
                             f'got {self.embedding!r}')

    def loop_config(self, tasks):
        """
        Return the AMF settings as a :class:`LoopConfig`.

        :param tasks: the policy's tasks
        :return: LoopConfig
        """
        from active_finetune.amf.targets import TargetConfig
        targets = [t for t in self.target_tasks if t]
        unknown = sorted(set(targets) - set(tasks))
        if unknown:
            raise ValueError(f'target_tasks {unknown} are not tasks of the policy {list(tasks)}')
        mu = {t: (1.0 if t in targets else 0.0) for t in tasks} if targets else None
        return LoopConfig(
            strategy=self.strategy, budget=self.budget, demos_per_round=self.demos_per_round,
            rho2=self.rho2, target_weights=mu, seed=self.seed,
            targets=TargetConfig(embedding=self.embedding,
                                 states_per_trajectory=self.states_per_trajectory,
                                 candidate_states=self.candidate_states,
                                 condition_on_pretraining=False, seed=self.seed))


class SelectorSession:
    """
    Decide the next suggestion from demos, the current policy and skips.

    :param settings: :class:`SelectorSettings`
    :param tasks: the policy's tasks
    """

    def __init__(self, settings, tasks):
        self.settings = settings
        self.tasks = tuple(tasks)
        self.loop_config = settings.loop_config(self.tasks)
        self.strategy = make_strategy(settings.strategy, tasks=self.tasks, seed=settings.seed,
                                      pretraining_counts={})
        self.request_id = 0
        self._request_key = None
        self.skipped = []
        self._skip_demos_used = -1
        self.last = None
        self._trunk_cache = TrunkFeatureCache()

    def skip(self, task, demos_used):
        """
        Record that the operator skipped ``task``; it is not suggested again until the next demo.

        :param task: the skipped task
        :param demos_used: demos recorded when skipping
        """
        if self._skip_demos_used != demos_used:
            self.skipped = []
            self._skip_demos_used = demos_used
        if task and task not in self.skipped:
            self.skipped.append(task)

    def suggestion(self, policy, policy_version, trained_on, demos, rollouts):
        """
        Score every task and build the ``operator/next_task`` payload as a dict.

        :param policy: current policy
        :param policy_version: its checkpoint version
        :param trained_on: demos the current checkpoint was trained on
        :param demos: list of demo :class:`Episode` recorded so far
        :param rollouts: dict task -> current-policy rollouts (may be empty)
        :return: JSON-serialisable dict (:meth:`NextTask.to_dict`)
        """
        return self.suggest(policy, policy_version, trained_on, demos, rollouts).to_dict()

    def suggest(self, policy, policy_version, trained_on, demos, rollouts):
        """
        Score every task and build the ``operator/next_task`` payload.

        Arguments as :meth:`suggestion`.

        :return: :class:`active_finetune.payloads.NextTask` (also kept as :attr:`last`)
        """
        t0 = time.perf_counter()
        counts = dict.fromkeys(self.tasks, 0)
        for e in demos:
            counts[e.task] = counts.get(e.task, 0) + 1
        used = len(demos)
        if self._skip_demos_used != used:
            self.skipped = []
        remaining = self.settings.budget - used
        since = used - trained_on
        round_index = trained_on // self.settings.demos_per_round
        payload = {'strategy': self.settings.strategy, 'budget': self.settings.budget,
                   'demos_used': used, 'budget_remaining': max(0, remaining),
                   'demo_counts': counts, 'policy_version': policy_version, 'round': round_index,
                   'demos_per_round': self.settings.demos_per_round,
                   'skipped': list(self.skipped),
                   'task': '', 'tasks_this_round': [], 'scores': {}, 'terms': {}, 'done': False}
        if remaining <= 0:
            payload.update(done=True, reason=f'budget of {self.settings.budget} demos spent')
        elif since >= self.settings.demos_per_round and self.settings.wait_for_checkpoint:
            payload['reason'] = (f'{since} demos since checkpoint version {policy_version}: '
                                 f'waiting for the fine-tuned checkpoint')
        else:
            left_in_round = min(remaining, self.settings.demos_per_round
                                - since % self.settings.demos_per_round)
            result = self._select(policy, demos, rollouts, counts, left_in_round, round_index)
            payload.update(task=result['chosen'][0], tasks_this_round=result['chosen'],
                           scores=result['scores'], terms=result.get('terms', {}),
                           reason=result['reason'])
        key = (used, tuple(self.skipped), payload['task'] == '', payload['done'])
        if key != self._request_key:
            self._request_key = key
            self.request_id += 1
        payload['request_id'] = self.request_id
        payload['select_s'] = round(time.perf_counter() - t0, 3)
        self.last = NextTask(**payload)
        return self.last

    def _select(self, policy, demos, rollouts, counts, batch, round_index):
        allowed = [t for t in self.tasks if t not in self.skipped] or list(self.tasks)
        have_targets = bool(demos) or any(rollouts.values())
        strategy = self.strategy
        reason = f'{self.settings.strategy} selection'
        if strategy.needs_embeddings and not have_targets:
            strategy = make_strategy('least_demonstrated', tasks=self.tasks,
                                     seed=self.settings.seed, pretraining_counts={})
            reason = 'no target states yet (no demos, no rollouts): least demonstrated task'
        config = replace(self.loop_config, demos_per_round=batch)
        # A skip means "cannot demonstrate this now": the task leaves the candidates, while the
        # expert's behaviour on it stays a target.
        result = select_next_tasks(strategy, policy, self.tasks, demos, rollouts, config,
                                   demo_counts=dict(counts), round_index=round_index,
                                   candidates=allowed, trunk_cache=self._trunk_cache)
        out = result.to_dict()
        scores = out['scores'][0] if isinstance(out.get('scores'), list) else out.get('scores', {})
        terms = out.get('terms', {})
        if isinstance(terms, list):
            terms = terms[0] if terms else {}
        return {'chosen': list(result.chosen), 'scores': scores, 'terms': terms, 'reason': reason}
