"""
Trainer node: fine-tunes after every B new demonstrations and announces the new checkpoint.

Training runs in a spawned process (:mod:`active_finetune.training.round_job`), so no ROS
callback waits for it.  Checkpoints are written atomically as ``<checkpoint_dir>/vNNNN`` and
announced on ``trainer/checkpoint`` (reliable, transient local) with path, sha256, version and,
when ``send_weights`` is set, the weights themselves so a robot PC without the shared disk can load
them.  On start-up it resumes from the newest complete version (a killed trainer leaves no torn
checkpoint: interrupted writes are temporary directories, removed here).

Counting: an episode that a round skipped (unreadable, unknown task, implausible
proprioception) is warned about once and no longer counted, in ``demos_used`` nor towards the
next round, until its file changes (same size and modification time = same verdict).
"""

import base64
import json
import multiprocessing
from pathlib import Path
import queue as queue_module

from active_finetune.data.episode_index import file_state, list_saved_episodes
from active_finetune.nodes.parameters import declare_config
from active_finetune.nodes.qos import COMMAND_QOS, LATCHED_QOS, latched_qos
from active_finetune.nodes.spin import run_node
from active_finetune.policy.checkpoint import CheckpointError, CONFIG_FILE, \
    read_checkpoint_config, WEIGHTS_FILE
from active_finetune.training.round_job import newest_version, RoundJob, run_round
from active_finetune.training.trainer_settings import TrainerSettings
from rclpy.node import Node
from std_msgs.msg import String


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
        self._ctx = multiprocessing.get_context('spawn')
        self._process = None
        self._queue = None
        self._job_version = None
        # path -> (size, mtime_ns) of episodes a round skipped: not counted while unchanged.
        self._unusable = {}
        version, path = newest_version(self.settings.checkpoint_dir)
        if path is None:
            path = Path(self.settings.initial_checkpoint)
            version = 0
        try:
            self._config = read_checkpoint_config(path)
        except CheckpointError as exc:
            raise RuntimeError(f'trainer cannot start: {exc}') from exc
        self.version = version
        self.current_path = path
        self.trained_on = (int(self._config.get('provenance', {}).get('demos_used', 0))
                           if version else 0)
        self.round = int(self._config.get('provenance', {}).get('round', -1)) + 1 if version else 0
        self.get_logger().info(f'resuming at checkpoint version {version} ({path}), trained on '
                               f'{self.trained_on} demos')
        self._announce({'path': str(path), 'sha256': self._config['weights_sha256'],
                        'version': version, 'round': self.round - 1 if version else -1,
                        'demos_used': self.trained_on, 'step': 0, 'metrics': {}})
        self._status('waiting', 'started')
        self.create_timer(self.settings.poll_period_s, self._on_poll)

    def _status(self, state, message, progress=0.0):
        listed = self._listed_episodes()
        episodes = self._countable(listed)
        self._status_pub.publish(String(data=json.dumps({
            'state': state, 'round': self.round, 'progress': round(progress, 3),
            'demos_available': len(episodes), 'demos_usable': len(self._usable(episodes)),
            'demos_unreadable': len(listed) - len(episodes), 'version': self.version,
            'demos_needed': self.trained_on + self.settings.demos_per_round, 'message': message})))

    def _listed_episodes(self):
        try:
            return list_saved_episodes(self.settings.dataset_dir)
        except (OSError, ValueError) as exc:
            self.get_logger().error(f'cannot list episodes in {self.settings.dataset_dir}: {exc}',
                                    throttle_duration_sec=10.0)
            return []

    def _all_episodes(self):
        return self._countable(self._listed_episodes())

    def _countable(self, entries):
        """Leave out the episodes a round skipped, while their files are unchanged."""
        if not self._unusable:
            return entries
        return [e for e in entries
                if e['path'] not in self._unusable
                or self._unusable[e['path']] != file_state(e['path'])]

    def _usable(self, entries):
        return [e for e in entries
                if e.get('success', True) or self.settings.train_on_failed_demos]

    def _announce(self, result):
        message = dict(result)
        path = Path(result['path'])
        try:
            message['config'] = json.loads((path / CONFIG_FILE).read_text())
            if self.settings.send_weights:
                message['weights_b64'] = base64.b64encode(
                    (path / WEIGHTS_FILE).read_bytes()).decode()
        except OSError as exc:
            self.get_logger().error(f'cannot read checkpoint {path} to announce it: {exc}')
        self._checkpoint_pub.publish(String(data=json.dumps(message)))
        self.get_logger().info(f'announced checkpoint version {result["version"]} '
                               f'sha256 {result["sha256"][:12]} ({path})')

    def _on_episode(self, msg):
        try:
            info = json.loads(msg.data)
            self.get_logger().info(f'episode saved: {info.get("path")} task {info.get("task")}')
        except ValueError:
            self.get_logger().warning(f'ignoring malformed recorder/episode: {msg.data[:200]!r}')
            return
        self._on_poll()

    def _on_poll(self):
        try:
            if self._process is not None:
                self._drain_queue()
                return
            # Every recorded demo counts towards the round (it spent budget); the failed ones
            # are left out of training unless train_on_failed_demos is set.
            episodes = self._all_episodes()
            if len(episodes) >= self.trained_on + self.settings.demos_per_round:
                self._start_round([e['path'] for e in self._usable(episodes)], len(episodes))
        except Exception as exc:  # noqa: B902 - a timer exception would stop spin
            self.get_logger().error(f'trainer poll failed: {exc!r}')

    def _start_round(self, paths, demos_used):
        version = self.version + 1
        self._job_version = version
        job = RoundJob(
            base_checkpoint=str(self.current_path), episode_paths=tuple(paths),
            anchor_checkpoint=self.settings.initial_checkpoint,
            checkpoint_dir=self.settings.checkpoint_dir, version=version, round_index=self.round,
            train=self.settings.train_kwargs(), evaluate_episodes=self.settings.evaluate_episodes,
            evaluate_max_steps=self.settings.evaluate_max_steps, log_dir=self.settings.log_dir,
            threads=self.settings.threads, demos_used=demos_used,
            max_proprio_std=self.settings.max_proprio_std,
            workspace_min_m=self.settings.workspace_min_m,
            workspace_max_m=self.settings.workspace_max_m,
            cap_alpha_by_pretraining=self.settings.cap_alpha_by_pretraining,
            baseline_evaluation=self._baseline_evaluation())
        self._queue = self._ctx.Queue()
        self._process = self._ctx.Process(target=run_round, args=(job, self._queue), daemon=True,
                                          name=f'trainer-round-{self.round}')
        self._process.start()
        self.get_logger().info(f'round {self.round}: fine-tuning version {self.version} on '
                               f'{len(paths)} of {demos_used} demos -> version {version}')
        self._status('training', f'round {self.round} started on {len(paths)} demos')

    def _baseline_evaluation(self):
        path = self.settings.baseline_evaluation_path
        if not path or self.settings.evaluate_episodes == 0:
            return {}
        try:
            baseline = json.loads(Path(path).read_text())
            if not isinstance(baseline, dict) or not isinstance(baseline.get('success'), dict):
                raise ValueError('no success dict')
            return baseline
        except (OSError, ValueError) as exc:
            self.get_logger().warning(f'baseline evaluation {path} unusable ({exc}); '
                                      'evaluating every task')
            return {}

    def _drain_queue(self):
        while True:
            try:
                item = self._queue.get_nowait()
            except queue_module.Empty:
                break
            if item['kind'] == 'progress':
                self._status(item['state'], item['message'], item.get('progress', 0.0))
            elif item['kind'] == 'error':
                self._finish_process()
                if self.version == self._job_version:
                    # The checkpoint was written and announced; only its evaluation failed.
                    self.get_logger().error(f'evaluation of version {self.version} failed: '
                                            f'{item["message"]}')
                    self._status('error', f'evaluation failed: {item["message"]}')
                    return
                self.get_logger().error(f'round {self.round} failed: {item["message"]}')
                self._status('error', item['message'])
                self.trained_on = len(self._all_episodes())
                return
            elif item['kind'] == 'checkpoint':
                self._on_checkpoint(item)
            elif item['kind'] == 'result':
                self._finish_process()
                self._on_result(item)
                return
        if self._process is not None and not self._process.is_alive():
            code = self._process.exitcode
            self._finish_process()
            self.get_logger().error(f'training process died (exit code {code}); will retry')
            self._status('error', f'training process died (exit code {code})')

    def _finish_process(self):
        if self._process is not None:
            self._process.join(timeout=5.0)
        self._process = None
        self._queue = None

    def _on_checkpoint(self, result):
        """Adopt and announce a round's checkpoint (once, before its evaluation finishes)."""
        if result['version'] == self.version:
            return
        for skipped in result.get('skipped', []):
            signature = file_state(skipped['path'])
            if self._unusable.get(skipped['path']) != signature:
                self._unusable[skipped['path']] = signature
                self.get_logger().warning(
                    f'skipped episode {skipped["path"]}: {skipped["error"]}; not counted (nor '
                    'warned about again) until the file changes')
        self.version = result['version']
        self.current_path = Path(result['path'])
        self.trained_on = result['demos_used']
        self.round += 1
        self._announce({k: result[k] for k in ('path', 'sha256', 'version', 'round', 'demos_used',
                                               'step', 'metrics')})

    def _on_result(self, result):
        self._on_checkpoint(result)
        if result.get('evaluation'):
            success = result['evaluation']
            self._evaluation_pub.publish(String(data=json.dumps({
                'version': self.version, 'success': success,
                'mean': sum(success.values()) / len(success),
                'episodes': self.settings.evaluate_episodes,
                'reused_from_pretrained': result.get('evaluation_reused', [])})))
        self._status('waiting', f'version {self.version} ready (train {result["train_s"]} s)', 1.0)

    def destroy_node(self):
        """Stop a running training process (its checkpoint write is atomic), then destroy."""
        if self._process is not None and self._process.is_alive():
            self.get_logger().warning('stopping the running training round')
            self._process.terminate()
            self._process.join(timeout=10.0)
        super().destroy_node()


def main(args=None):
    """Run the trainer node."""
    run_node(TrainerNode, args)


if __name__ == '__main__':
    main()
