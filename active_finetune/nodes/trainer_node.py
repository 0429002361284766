"""
Trainer node: fine-tunes after every B new demonstrations and announces the new checkpoint.

A ROS shell around :class:`active_finetune.training.trainer_session.TrainerSession`, which keeps
the version, round and trained-on bookkeeping and decides when a round starts.  Training runs in a
spawned process (:mod:`active_finetune.training.round_job`), so no ROS callback waits for it.
Checkpoints are written atomically as ``<checkpoint_dir>/vNNNN`` and announced on
``trainer/checkpoint`` (reliable, transient local) by reference: path, sha256, size, version.
With ``evaluate_episodes`` > 0 each new checkpoint is then evaluated in simulation in a second
spawned process (one at a time, in version order; results on ``trainer/evaluation``), while the
next round may already train on new demos.
With ``send_weights`` the node serves the weights' bytes to subscribers that lack the file
(:class:`active_finetune.nodes.checkpoint_transfer.CheckpointServer`: chunks on
``trainer/checkpoint_data`` on request), so a robot PC without the shared disk can load them.
On start-up it resumes from the newest complete version (a killed trainer leaves no torn
checkpoint: interrupted writes are temporary directories, removed here).

Episodes: the dataset directory is listed once at start-up (read-only: the recorder alone writes
the index) and again on ``~/rescan_episodes`` (std_srvs/Trigger); otherwise the trainer learns of
each new episode from ``recorder/episode``.  Rounds decode episodes through a cache of decoded
episodes by sha256 (``episode_cache_dir``, bounded by ``episode_cache_mb``), so an episode is
decoded once, not once per round.

B (demos per round) follows the task selector's ``demos_per_round`` carried by
``operator/next_task``; the node's own ``demos_per_round`` parameter applies until one arrives.
Every payload goes through :mod:`active_finetune.payloads`.
"""

from collections import deque
from dataclasses import replace
import multiprocessing
from pathlib import Path
import queue as queue_module

from active_finetune.nodes.checkpoint_transfer import CheckpointServer
from active_finetune.nodes.parameters import declare_config
from active_finetune.nodes.qos import COMMAND_QOS, LATCHED_QOS, latched_qos
from active_finetune.nodes.spin import run_node
from active_finetune.payloads import decode_episode_saved, decode_next_task, encode, PayloadError
from active_finetune.policy.checkpoint import CheckpointError, WEIGHTS_FILE
from active_finetune.training.round_job import run_evaluation, run_round
from active_finetune.training.trainer_session import TrainerSession
from active_finetune.training.trainer_settings import TrainerSettings
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger


class TrainerNode(Node):
    """
    Watch the dataset, fine-tune in rounds, announce checkpoints.

    :param kwargs: passed to rclpy Node
    """

    def __init__(self, **kwargs):
        super().__init__('trainer', **kwargs)
        self.settings = declare_config(self, TrainerSettings)
        self._checkpoint_pub = self.create_publisher(String, 'trainer/checkpoint', LATCHED_QOS)
        self._status_pub = self.create_publisher(String, 'trainer/status', COMMAND_QOS)
        self._evaluation_pub = self.create_publisher(String, 'trainer/evaluation', LATCHED_QOS)
        self.create_subscription(String, 'recorder/episode', self._on_episode, latched_qos(10))
        self.create_subscription(String, 'operator/next_task', self._on_next_task, LATCHED_QOS)
        self._server = CheckpointServer(self) if self.settings.send_weights else None
        self._ctx = multiprocessing.get_context('spawn')
        self._process = None
        self._queue = None
        self._evaluation = None  # (process, queue, version) of the running evaluation
        self._evaluations_waiting = deque()
        try:
            self.session = TrainerSession(self.settings)
        except CheckpointError as exc:
            raise RuntimeError(f'trainer cannot start: {exc}') from exc
        session = self.session
        self.create_service(Trigger, '~/rescan_episodes', self._on_rescan)
        _, error = session.list_episodes()
        if error:
            self.get_logger().error(error)
        self.get_logger().info(f'resuming at checkpoint version {session.version} '
                               f'({session.current_path}), trained on {session.trained_on} demos')
        self._publish_checkpoint(*session.initial_announcement())
        self._status('waiting', 'started')
        self.create_timer(self.settings.poll_period_s, self._on_poll)

    @property
    def version(self):
        """:return: the running checkpoint version."""
        return self.session.version

    def _entries(self):
        entries, error = self.session.list_episodes()
        if error:
            self.get_logger().error(error, throttle_duration_sec=10.0)
        return entries

    def _status(self, state, message, progress=0.0):
        self._publish_status(self.session.status(state, message, self._entries(), progress))

    def _publish_status(self, status):
        self._status_pub.publish(String(data=encode(status)))

    def _publish_checkpoint(self, announcement, error):
        if error:
            self.get_logger().error(error)
        if self._server is not None and announcement.chunk_bytes is not None:
            try:
                self._server.offer(Path(announcement.path) / WEIGHTS_FILE, announcement.sha256)
            except OSError as exc:
                self.get_logger().error(f'cannot serve checkpoint {announcement.path}: {exc}')
        self._checkpoint_pub.publish(String(data=encode(announcement)))
        self.get_logger().info(f'announced checkpoint version {announcement.version} '
                               f'sha256 {announcement.sha256[:12]} ({announcement.path})')

    def _on_episode(self, msg):
        try:
            episode = decode_episode_saved(msg.data)
        except PayloadError as exc:
            self.get_logger().warning(f'ignoring malformed recorder/episode: {exc}')
            return
        try:
            added = self.session.on_episode_saved(episode)
        except ValueError as exc:
            self.get_logger().warning(f'ignoring recorder/episode: {exc}')
            return
        self.get_logger().info(f'episode saved: {episode.path} task {episode.task} ({added})')
        self._on_poll()
        if self._process is None:
            self._status(self._idle_state(), f'episode saved: {episode.task}')

    def _idle_state(self):
        """:return: the status state while no round trains: 'evaluating' or 'waiting'."""
        return 'evaluating' if self._evaluation is not None else 'waiting'

    def _on_rescan(self, request, response):
        error = self.session.rescan()
        response.success = not error
        response.message = error or f'{len(self.session.catalog.entries())} episodes listed'
        self.get_logger().info(f'rescan of {self.settings.dataset_dir}: {response.message}')
        self._on_poll()
        if self._process is None:
            self._status('error' if error else self._idle_state(),
                         f'rescan: {response.message}')
        return response

    def _on_next_task(self, msg):
        try:
            suggestion = decode_next_task(msg.data)
        except PayloadError as exc:
            self.get_logger().warning(f'ignoring malformed operator/next_task: {exc}',
                                      throttle_duration_sec=10.0)
            return
        self.session.budget_spent = bool(suggestion.done)
        if self.session.follow_round_size(suggestion.demos_per_round):
            self.get_logger().info(
                f'demos per round: {self.session.demos_per_round}, as the task selector '
                f'announces (parameter demos_per_round={self.settings.demos_per_round} unused)')

    def _on_poll(self):
        try:
            if self._process is not None:
                self._drain_queue()
            if self._evaluation is not None:
                self._drain_evaluation()
            if self._evaluation is None and self._evaluations_waiting:
                self._start_evaluation(self._evaluations_waiting.popleft())
            if self._process is None:
                plan = self.session.plan_round(self._entries())
                if plan is not None:
                    self._start_round(plan)
        except Exception as exc:  # noqa: B902 - a timer exception would stop spin
            self.get_logger().error(f'trainer poll failed: {exc!r}')

    def _start_evaluation(self, job):
        job = replace(job, workers=self.session.evaluation_workers(self._process is not None))
        evaluation_queue = self._ctx.Queue()
        # A daemon process may not start the simulator pool of a multi-worker evaluation;
        # destroy_node terminates either kind.
        process = self._ctx.Process(target=run_evaluation, args=(job, evaluation_queue),
                                    daemon=job.workers <= 1,
                                    name=f'trainer-evaluation-v{job.version}')
        process.start()
        if job.workers > 1:
            self.get_logger().info(f'evaluating version {job.version} with {job.workers} '
                                   f'simulator processes (budget spent, no round training)')
        self._evaluation = (process, evaluation_queue, job.version)

    def _drain_evaluation(self):
        process, evaluation_queue, version = self._evaluation
        training = self._process is not None
        # Whether it had exited before this drain: its last item is then already readable.
        exited = not process.is_alive()
        while True:
            try:
                item = evaluation_queue.get_nowait()
            except queue_module.Empty:
                break
            outcome = self.session.on_evaluation_item(item, self._entries(), training)
            self._apply(outcome)
            if outcome.finished:
                process.join(timeout=5.0)
                self._evaluation = None
                return
        if exited:
            self._apply(self.session.on_evaluation_died(version, process.exitcode,
                                                        self._entries(), training))
            self._evaluation = None

    def _start_round(self, plan):
        round_index = self.session.round
        self._queue = self._ctx.Queue()
        self._process = self._ctx.Process(target=run_round, args=(plan.job, self._queue),
                                          daemon=True, name=f'trainer-round-{round_index}')
        self._process.start()
        self.get_logger().info(
            f'round {round_index}: fine-tuning version {self.session.version} on '
            f'{len(plan.paths)} of {plan.demos_used} demos -> version {plan.job.version}')
        self._status('training', f'round {round_index} started on {len(plan.paths)} demos')

    def _drain_queue(self):
        # Whether it had exited before this drain: its last item is then already readable.
        exited = self._process is not None and not self._process.is_alive()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue_module.Empty:
                break
            outcome = self.session.on_job_item(item, self._entries())
            if outcome.finished:
                self._finish_process()
            self._apply(outcome)
            if outcome.finished:
                return
        if exited:
            exit_code = self._process.exitcode
            self._finish_process()
            self._apply(self.session.on_job_died(exit_code, self._entries()))

    def _apply(self, outcome):
        for level, text in outcome.logs:
            getattr(self.get_logger(), level)(text)
        if outcome.checkpoint is not None:
            self._publish_checkpoint(outcome.checkpoint, '')
        if outcome.evaluation is not None:
            self._evaluation_pub.publish(String(data=encode(outcome.evaluation)))
        if outcome.status is not None:
            self._publish_status(outcome.status)
        if outcome.evaluation_job is not None:
            self._evaluations_waiting.append(outcome.evaluation_job)

    def _finish_process(self):
        if self._process is not None:
            self._process.join(timeout=5.0)
        self._process = None
        self._queue = None

    def destroy_node(self):
        """Stop a running training or evaluation process (checkpoint writes are atomic)."""
        if self._process is not None and self._process.is_alive():
            self.get_logger().warning('stopping the running training round')
            self._process.terminate()
            self._process.join(timeout=10.0)
        if self._evaluation is not None and self._evaluation[0].is_alive():
            self.get_logger().warning(f'stopping the evaluation of version '
                                      f'{self._evaluation[2]}')
            self._evaluation[0].terminate()
            self._evaluation[0].join(timeout=10.0)
        if self._server is not None:
            self._server.close()
        super().destroy_node()


def main(args=None):
    """Run the trainer node."""
    run_node(TrainerNode, args)


if __name__ == '__main__':
    main()
