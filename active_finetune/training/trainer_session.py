"""
State of the trainer between events (ROS-free): version, round, trained-on, when a round starts.

The trainer node (:mod:`active_finetune.nodes.trainer_node`) is a shell around it: it hands the
session every ``recorder/episode`` announcement (:meth:`TrainerSession.on_episode_saved`; the
dataset directory is listed only at start-up and on request, :meth:`TrainerSession.rescan`),
runs the :class:`~active_finetune.training.round_job.RoundJob` the session plans in a spawned
process (its episodes decoded through a cache by sha256), hands every item of the job's queue
to :meth:`TrainerSession.on_job_item` and publishes the payloads
(:mod:`active_finetune.payloads`) the session returns.  A round's result brings an
:class:`~active_finetune.training.round_job.EvaluationJob` (with ``evaluate_episodes`` > 0) that
the node runs in a process of its own, one at a time, in version order; its items go to
:meth:`TrainerSession.on_evaluation_item`.  The next round does not wait for it.

Round size B: the task selector owns it.  Every ``operator/next_task`` carries the selector's
``demos_per_round``; :meth:`TrainerSession.follow_round_size` adopts it, so the two can never
disagree.  The trainer's own ``demos_per_round`` setting applies only until a suggestion carrying
B arrives (a graph without a selector, or a selector older than the field).

Counting: every recorded demo counts towards a round (it spent budget); failed ones are left out of
training unless ``train_on_failed_demos``.  An episode that a round skipped (unreadable, unknown
task, implausible proprioception) is no longer counted, in ``demos_used`` nor towards the next
round, until its file changes (same size and modification time = same verdict).
"""

from dataclasses import dataclass, field
import json
from pathlib import Path

from active_finetune.data.episode_catalog import EpisodeCatalog
from active_finetune.data.episode_index import file_state
from active_finetune.payloads import CheckpointAnnounced, Evaluation, TrainerStatus
from active_finetune.policy.checkpoint import CONFIG_FILE, read_checkpoint_config, WEIGHTS_FILE
from active_finetune.policy.transfer import DEFAULT_CHUNK_BYTES
from active_finetune.training.round_job import EvaluationJob, newest_version, RoundJob


@dataclass(frozen=True)
class RoundPlan:
    """
    A round to start now.

    :param job: what the training process runs
    :param paths: episodes trained on
    :param demos_used: demos counted when it starts (the new ``trained_on`` once it succeeds)
    """

    job: RoundJob
    paths: tuple
    demos_used: int


@dataclass
class JobOutcome:
    """
    What one item of a training or evaluation process's queue means for the node.

    :param status: trainer/status to publish, or None
    :param checkpoint: trainer/checkpoint to publish (config and weights filled in), or None
    :param evaluation: trainer/evaluation to publish, or None
    :param evaluation_job: a checkpoint to evaluate (after those already waiting), or None
    :param finished: the process is done (join it)
    :param logs: (level, text) pairs to log: level 'info', 'warning' or 'error'
    """

    status: TrainerStatus | None = None
    checkpoint: CheckpointAnnounced | None = None
    evaluation: Evaluation | None = None
    evaluation_job: EvaluationJob | None = None
    finished: bool = False
    logs: list = field(default_factory=list)


class TrainerSession:
    """
    Version, round and trained-on bookkeeping and the decision to start a round.

    :param settings: :class:`~active_finetune.training.trainer_settings.TrainerSettings`
    :raises CheckpointError: when neither a complete version in ``checkpoint_dir`` nor
        ``initial_checkpoint`` can be read
    """

    def __init__(self, settings):
        self.settings = settings
        version, path = newest_version(settings.checkpoint_dir)
        if path is None:
            path, version = Path(settings.initial_checkpoint), 0
        config = read_checkpoint_config(path)
        provenance = config.get('provenance', {}) if version else {}
        self.version = version
        self.current_path = Path(path)
        self.sha256 = config['weights_sha256']
        self.trained_on = int(provenance.get('demos_used', 0))
        self.round = int(provenance.get('round', -1)) + 1 if version else 0
        self.announced_round_size = None
        self.budget_spent = False
        """The task selector announced its budget spent (operator/next_task ``done``)."""
        # path -> (size, mtime_ns) of episodes a round skipped: not counted while unchanged.
        self._unusable = {}
        self.catalog = EpisodeCatalog(settings.dataset_dir)
        self._listing_error = ''
        self.rescan()

    # --- round size ---------------------------------------------------------------------------
    @property
    def demos_per_round(self):
        """:return: B: the selector's announced value, else the setting."""
        return self.announced_round_size or self.settings.demos_per_round

    def follow_round_size(self, demos_per_round):
        """
        Adopt the round size the task selector announced on ``operator/next_task``.

        :param demos_per_round: its ``demos_per_round`` (None: not carried; ignored)
        :return: True when B changed
        """
        if demos_per_round is None or demos_per_round == self.demos_per_round:
            return False
        self.announced_round_size = int(demos_per_round)
        return True

    def evaluation_workers(self, training):
        """
        Choose the simulator processes of an evaluation starting now.

        :param training: a round is running
        :return: ``last_evaluation_workers`` once the selector's budget is spent and no round
            trains (no demo or round will need the cores), else 1
        """
        if self.budget_spent and not training:
            return self.settings.last_evaluation_workers
        return 1

    # --- episodes -----------------------------------------------------------------------------
    def rescan(self):
        """
        List ``dataset_dir`` (at start-up and on request; read-only).

        :return: '' or why the listing failed (the episodes known so far stay)
        """
        try:
            self.catalog.rescan()
            self._listing_error = ''
        except (OSError, ValueError) as exc:
            self._listing_error = f'cannot list episodes in {self.settings.dataset_dir}: {exc}'
        return self._listing_error

    def on_episode_saved(self, episode):
        """
        Take a ``recorder/episode`` announcement.

        :param episode: :class:`active_finetune.payloads.EpisodeSaved`
        :return: 'added', 'known' or 'pending' (:meth:`EpisodeCatalog.add`)
        :raises ValueError: for a path that is not a saved episode's
        """
        return self.catalog.add(episode)

    def list_episodes(self):
        """
        Give the saved episodes known (no directory listing: see :meth:`rescan`).

        :return: (entries, error): the index entries, and '' or why the last listing failed
        """
        return self.catalog.entries(), self._listing_error

    def countable(self, entries):
        """
        Leave out the episodes a round skipped, while their files are unchanged.

        :param entries: index entries (with 'path')
        :return: list of entries
        """
        if not self._unusable:
            return list(entries)
        return [e for e in entries
                if e['path'] not in self._unusable
                or self._unusable[e['path']] != file_state(e['path'])]

    def usable(self, entries):
        """
        Keep the episodes to train on.

        :param entries: countable entries
        :return: the successful ones (all with ``train_on_failed_demos``)
        """
        return [e for e in entries
                if e.get('success', True) or self.settings.train_on_failed_demos]

    # --- payloads -----------------------------------------------------------------------------
    def status(self, state, message, entries, progress=0.0):
        """
        Build the ``trainer/status`` payload.

        :param state: 'waiting', 'training', 'evaluating' or 'error'
        :param message: human-readable detail
        :param entries: every listed episode
        :param progress: 0..1
        :return: :class:`TrainerStatus`
        """
        countable = self.countable(entries)
        return TrainerStatus(
            state=state, round=self.round, progress=round(float(progress), 3),
            demos_available=len(countable), demos_usable=len(self.usable(countable)),
            demos_unreadable=len(entries) - len(countable), version=self.version,
            demos_needed=self.trained_on + self.demos_per_round,
            demos_per_round=self.demos_per_round, message=message)

    def announcement(self, path, sha256, version, round_index, demos_used, step=0,
                     metrics=None):
        """
        Build a ``trainer/checkpoint`` payload: the checkpoint by reference (path, sha256, size).

        With ``send_weights`` it also names the chunk size the trainer serves the weights in on
        ``trainer/checkpoint_data`` (:mod:`active_finetune.policy.transfer`), so a subscriber
        without the file can ask for them; the weights never travel in the announcement.

        :param path: checkpoint directory
        :param sha256: weights hash
        :param version: version
        :param round_index: round that produced it (-1 for the initial checkpoint)
        :param demos_used: demos counted when its round started
        :param step: training steps
        :param metrics: training metrics
        :return: (:class:`CheckpointAnnounced`, '' or why config/weights could not be read)
        """
        extra, error = {}, ''
        try:
            extra['config'] = json.loads((Path(path) / CONFIG_FILE).read_text())
            extra['size_bytes'] = (Path(path) / WEIGHTS_FILE).stat().st_size
            if self.settings.send_weights:
                extra['chunk_bytes'] = DEFAULT_CHUNK_BYTES
        except (OSError, ValueError) as exc:
            extra, error = {}, f'cannot read checkpoint {path} to announce it: {exc}'
        return CheckpointAnnounced(
            path=str(path), sha256=sha256, version=version, round=round_index,
            demos_used=demos_used, step=step, metrics=dict(metrics or {}), **extra), error

    def initial_announcement(self):
        """:return: (announcement of the running version, error text) as :meth:`announcement`."""
        return self.announcement(self.current_path, self.sha256, self.version,
                                 self.round - 1 if self.version else -1, self.trained_on)

    # --- rounds -------------------------------------------------------------------------------
    def plan_round(self, entries):
        """
        Decide whether a round starts: B demos recorded since the running version's round.

        :param entries: every listed episode
        :return: :class:`RoundPlan`, or None
        """
        countable = self.countable(entries)
        if len(countable) < self.trained_on + self.demos_per_round:
            return None
        usable = self.usable(countable)
        paths = tuple(e['path'] for e in usable)
        version = self.version + 1
        settings = self.settings
        job = RoundJob(
            base_checkpoint=str(self.current_path), episode_paths=paths,
            anchor_checkpoint=settings.initial_checkpoint,
            checkpoint_dir=settings.checkpoint_dir, version=version, round_index=self.round,
            train=settings.train_kwargs(len(usable)), log_dir=settings.tensorboard_dir(),
            threads=settings.threads, demos_used=len(countable),
            max_proprio_std=settings.max_proprio_std, workspace_min_m=settings.workspace_min_m,
            workspace_max_m=settings.workspace_max_m,
            cap_alpha_by_pretraining=settings.cap_alpha_by_pretraining,
            episode_sha256=tuple(str(e.get('sha256') or '') for e in usable),
            episode_cache_dir=settings.episode_cache_path(),
            episode_cache_bytes=int(settings.episode_cache_mb * 1e6))
        return RoundPlan(job=job, paths=paths, demos_used=len(countable))

    def baseline_evaluation(self):
        """
        Read ``baseline_evaluation_path`` (the initial checkpoint's evaluation).

        :return: (dict or {} when unset, unusable or evaluation is off; '' or a warning)
        """
        path = self.settings.baseline_evaluation_path
        if not path or self.settings.evaluate_episodes == 0:
            return {}, ''
        try:
            baseline = json.loads(Path(path).read_text())
            if not isinstance(baseline, dict) or not isinstance(baseline.get('success'), dict):
                raise ValueError('no success dict')
            return baseline, ''
        except (OSError, ValueError) as exc:
            return {}, f'baseline evaluation {path} unusable ({exc}); evaluating every task'

    def on_job_item(self, item, entries):
        """
        Take one item of the training process's queue.

        :param item: dict with 'kind': 'progress', 'result' or 'error'
        :param entries: every listed episode (for the status counts)
        :return: :class:`JobOutcome` (with the new checkpoint's :class:`EvaluationJob` when
            ``evaluate_episodes`` > 0)
        """
        outcome = JobOutcome()
        kind = item['kind']
        if kind == 'progress':
            outcome.status = self.status(item['state'], item['message'], entries,
                                         item.get('progress', 0.0))
        elif kind == 'error':
            outcome.finished = True
            outcome.logs.append(('error', f'round {self.round} failed: {item["message"]}'))
            # Not retried on the same demos: the next round waits for B new ones.
            self.trained_on = len(self.countable(entries))
            outcome.status = self.status('error', item['message'], entries)
        elif kind == 'result':
            outcome.finished = True
            self._adopt(item, outcome)
            outcome.evaluation_job = self._evaluation_job(item, outcome)
            outcome.status = self.status(
                'waiting', f'version {self.version} ready (train {item["train_s"]} s)', entries,
                1.0)
        else:
            raise ValueError(f'unknown training queue item kind {kind!r}')
        return outcome

    def _evaluation_job(self, result, outcome):
        settings = self.settings
        if settings.evaluate_episodes <= 0:
            return None
        baseline, warning = self.baseline_evaluation()
        if warning:
            outcome.logs.append(('warning', warning))
        return EvaluationJob(
            checkpoint=result['path'], version=result['version'], round_index=result['round'],
            episodes=settings.evaluate_episodes, max_steps=settings.evaluate_max_steps,
            anchor_checkpoint=settings.initial_checkpoint, baseline_evaluation=baseline)

    def on_evaluation_item(self, item, entries, training):
        """
        Take one item of an evaluation process's queue.

        :param item: dict with 'kind': 'progress', 'evaluation' or 'error', and 'version'
            for the last two
        :param entries: every listed episode (for the status counts)
        :param training: a round is running (its status stands; the evaluation's is not sent)
        :return: :class:`JobOutcome`
        """
        outcome = JobOutcome()
        kind = item['kind']
        if kind == 'progress':
            if not training:
                outcome.status = self.status(item['state'], item['message'], entries,
                                             item.get('progress', 0.0))
            outcome.logs.append(('info', item['message']))
        elif kind == 'evaluation':
            outcome.finished = True
            success = item['success']
            outcome.evaluation = Evaluation(
                version=item['version'], success=success,
                mean=sum(success.values()) / len(success),
                episodes=self.settings.evaluate_episodes,
                reused_from_pretrained=list(item.get('reused', [])))
            text = f'version {item["version"]}: mean success {outcome.evaluation.mean:.2f}'
            outcome.logs.append(('info', f'evaluated {text}'))
            if not training:
                outcome.status = self.status('waiting', f'evaluated {text}', entries, 1.0)
        elif kind == 'error':
            outcome.finished = True
            text = f'evaluation of version {item["version"]} failed: {item["message"]}'
            outcome.logs.append(('error', text))
            if not training:
                outcome.status = self.status('error', text, entries)
        else:
            raise ValueError(f'unknown evaluation queue item kind {kind!r}')
        return outcome

    def on_job_died(self, exit_code, entries):
        """
        Take the death of the training process without a final item (it will be retried).

        :param exit_code: the process's exit code
        :param entries: every listed episode
        :return: :class:`JobOutcome`
        """
        text = f'training process died (exit code {exit_code})'
        return JobOutcome(status=self.status('error', text, entries), finished=True,
                          logs=[('error', f'{text}; will retry')])

    def on_evaluation_died(self, version, exit_code, entries, training):
        """
        Take the death of an evaluation process without a final item (not retried).

        :param version: the version it evaluated
        :param exit_code: the process's exit code
        :param entries: every listed episode
        :param training: a round is running (its status stands)
        :return: :class:`JobOutcome`
        """
        text = f'evaluation of version {version} died (exit code {exit_code})'
        return JobOutcome(status=None if training else self.status('error', text, entries),
                          finished=True, logs=[('error', text)])

    def _adopt(self, result, outcome):
        """Adopt and announce a round's checkpoint."""
        for skipped in result.get('skipped', []):
            signature = file_state(skipped['path'])
            if self._unusable.get(skipped['path']) != signature:
                self._unusable[skipped['path']] = signature
                outcome.logs.append((
                    'warning', f'skipped episode {skipped["path"]}: {skipped["error"]}; not '
                               'counted (nor warned about again) until the file changes'))
        self.version = result['version']
        self.current_path = Path(result['path'])
        self.sha256 = result['sha256']
        self.trained_on = result['demos_used']
        self.round += 1
        outcome.checkpoint, error = self.announcement(
            result['path'], result['sha256'], result['version'], result['round'],
            result['demos_used'], result.get('step', 0), result.get('metrics'))
        if error:
            outcome.logs.append(('error', error))
