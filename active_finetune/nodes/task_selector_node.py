"""
Task selector node: tells the operator which task to demonstrate next, and why.

Scores every task with AMF (or a baseline, parameter ``strategy``) using the current checkpoint and
the recorded episodes, and publishes the suggestion on ``operator/next_task`` (reliable, transient
local; :class:`active_finetune.payloads.NextTask`, which carries B, ``demos_per_round``, that the
trainer follows).  Re-scores after every new checkpoint and every saved or
discarded episode; ``operator/skip`` (std_srvs/Trigger) skips the current suggestion.
Scoring runs on a worker thread; callbacks only queue work.

Checkpoints: announced weights are used from ``checkpoint_cache_dir`` (fetched earlier), else from
the announced path when they hash to the announced sha256, else fetched from the trainer on the
scoring thread (:mod:`active_finetune.nodes.checkpoint_transfer`), verified by sha256.

Episodes: the dataset directory is listed once at start-up (read-only: the recorder alone writes
the index) and again on ``~/rescan_episodes`` (std_srvs/Trigger); new episodes come from
``recorder/episode``.  Decoded episodes are kept by sha256 in memory (``episode_cache_mb``).
"""

import base64
from concurrent.futures import ThreadPoolExecutor
import threading

from active_finetune.amf.selector_session import SelectorSession, SelectorSettings
from active_finetune.data.episode_catalog import EpisodeCatalog, EpisodeMemoryCache
from active_finetune.data.episode_index import file_state
from active_finetune.data.mcap_episode import EpisodeFileError
from active_finetune.nodes.checkpoint_transfer import CheckpointFetcher
from active_finetune.nodes.parameters import declare_config
from active_finetune.nodes.qos import LATCHED_QOS, latched_qos
from active_finetune.nodes.spin import run_node
from active_finetune.payloads import decode_checkpoint, decode_episode_saved, \
    decode_recorder_status, encode, PayloadError
from active_finetune.policy.checkpoint import CheckpointError, load_checkpoint, policy_from_bytes
from active_finetune.policy.transfer import local_checkpoint, TransferError
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger


class TaskSelectorNode(Node):
    """
    Publish the next most informative task to demonstrate.

    :param kwargs: passed to rclpy Node
    """

    def __init__(self, **kwargs):
        super().__init__('task_selector', **kwargs)
        self.settings = declare_config(self, SelectorSettings)
        self._pub = self.create_publisher(String, 'operator/next_task', LATCHED_QOS)
        self.create_subscription(String, 'trainer/checkpoint', self._on_checkpoint, LATCHED_QOS)
        self.create_subscription(String, 'recorder/episode', self._on_episode, latched_qos(10))
        self.create_subscription(String, 'recorder/status', self._on_recorder_status, LATCHED_QOS)
        self.create_service(Trigger, 'operator/skip', self._on_skip)
        policy, config = load_checkpoint(self.settings.checkpoint_path)
        self._policy = policy
        self._version = 0
        self._trained_on = 0
        self._sha256 = config['weights_sha256']
        self._session = SelectorSession(self.settings, policy.config.tasks)
        self._catalog = EpisodeCatalog(self.settings.dataset_dir)
        self._cache = EpisodeMemoryCache(self.settings.episode_cache_mb * 1e6)
        # path -> file state of episodes that failed to load (not retried while unchanged).
        self._unreadable = {}
        self._rescan()
        self.create_service(Trigger, '~/rescan_episodes', self._on_rescan)
        self._rollouts = {}
        self._rollout_version = None
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix='selector')
        self._fetcher = CheckpointFetcher(self, self.settings.checkpoint_cache_dir,
                                          callback_group=MutuallyExclusiveCallbackGroup())
        self._dirty = threading.Event()
        self._busy = False
        self._logged_request = None
        self.create_timer(0.2, self._on_timer)
        self.create_timer(2.0, self._dirty.set)
        self._dirty.set()
        self.get_logger().info(f'task selector ({self.settings.strategy}) over '
                               f'{len(policy.config.tasks)} tasks, budget {self.settings.budget}, '
                               f'B={self.settings.demos_per_round}')

    def _on_checkpoint(self, msg):
        try:
            info = decode_checkpoint(msg.data)
        except PayloadError as exc:
            self.get_logger().error(f'malformed trainer/checkpoint ({exc}); '
                                    f'keeping version {self._version}')
            return
        if info.sha256 == self._sha256:
            with self._lock:
                self._version, self._trained_on = info.version, info.demos_used or 0
            self._dirty.set()
            return
        self._worker.submit(self._load_checkpoint, info)

    def _load_checkpoint(self, info):
        try:
            if info.weights_b64 and info.config:  # an older trainer
                policy = policy_from_bytes(base64.b64decode(info.weights_b64), info.config,
                                           expected_sha256=info.sha256,
                                           source='trainer/checkpoint')
            else:
                def fetch():
                    return self._fetcher.fetch(
                        info.sha256, info.size_bytes, info.chunk_bytes, info.config,
                        self.settings.checkpoint_fetch_timeout_s)
                path, where = local_checkpoint(
                    info.path, info.sha256, self.settings.checkpoint_cache_dir,
                    fetch if info.chunk_bytes is not None else None)
                policy, _ = load_checkpoint(path, expected_sha256=info.sha256)
                self.get_logger().info(f'checkpoint version {info.version}: weights from '
                                       f'{path} ({where})')
            if tuple(policy.config.tasks) != tuple(self._session.tasks):
                raise CheckpointError(f'task list {list(policy.config.tasks)} differs from '
                                      f'{list(self._session.tasks)}')
        except (CheckpointError, TransferError, ValueError, KeyError, OSError) as exc:
            self.get_logger().error(f'refusing checkpoint version {info.version}: {exc}; '
                                    f'keeping version {self._version}')
            return
        with self._lock:
            self._policy, self._sha256 = policy, info.sha256
            self._version, self._trained_on = info.version, info.demos_used or 0
        self.get_logger().info(f'scoring with checkpoint version {self._version}')
        self._dirty.set()

    def _rescan(self):
        try:
            count = self._catalog.rescan()
        except (OSError, ValueError) as exc:
            message = f'cannot list episodes in {self.settings.dataset_dir}: {exc}'
            self.get_logger().error(message)
            return False, message
        return True, f'{count} episodes listed'

    def _on_rescan(self, request, response):
        response.success, response.message = self._rescan()
        self.get_logger().info(f'rescan of {self.settings.dataset_dir}: {response.message}')
        self._dirty.set()
        return response

    def _on_episode(self, msg):
        try:
            self._catalog.add(decode_episode_saved(msg.data))
        except (PayloadError, ValueError) as exc:
            self.get_logger().warning(f'ignoring recorder/episode: {exc}')
            return
        self._dirty.set()

    def _on_recorder_status(self, msg):
        try:
            if decode_recorder_status(msg.data).state in ('saved', 'discarded'):
                self._dirty.set()
        except PayloadError as exc:
            self.get_logger().warning(f'ignoring malformed recorder/status: {exc}',
                                      throttle_duration_sec=10.0)

    def _on_skip(self, request, response):
        last = self._session.last
        if last is None or not last.task:
            response.success, response.message = False, 'nothing suggested to skip'
            return response
        with self._lock:
            self._session.skip(last.task, last.demos_used)
        self.get_logger().info(f'operator skipped {last.task} (request {last.request_id})')
        response.success, response.message = True, f'skipped {last.task}'
        self._dirty.set()
        return response

    def _on_timer(self):
        if self._dirty.is_set() and not self._busy:
            self._dirty.clear()
            self._busy = True
            self._worker.submit(self._rescore)

    def _load_demos(self):
        size = self._policy.config.image_size
        demos = []
        for entry in self._catalog.entries():
            path = entry['path']
            if path in self._unreadable and self._unreadable[path] == file_state(path):
                continue
            try:
                episode = self._cache.load(path, entry.get('sha256') or '', (size, size))
            except (EpisodeFileError, OSError, ValueError) as exc:
                self.get_logger().error(f'skipping unreadable episode {path}: {exc}')
                self._unreadable[path] = file_state(path)
                continue
            self._unreadable.pop(path, None)
            if episode.task in self._session.tasks:
                demos.append(episode)
        return demos

    def _sim_rollouts(self, policy, version):
        if self.settings.sim_rollouts_per_task == 0:
            return {}
        if self._rollout_version != version:
            from active_finetune.sim.metaworld_env import SimConfig
            from active_finetune.sim.rollouts import PURPOSE_TARGET, evaluate_policy
            image_size = policy.config.image_size if policy.config.observation == 'image' else 0
            _, episodes = evaluate_policy(
                policy, policy.config.tasks, self.settings.sim_rollouts_per_task,
                SimConfig(image_size=image_size, max_steps=self.settings.sim_rollout_max_steps),
                base_seed=self.settings.seed * 7919 + version, progress=False,
                purpose=PURPOSE_TARGET, keep_episodes=True)
            self._rollouts = {}
            for e in episodes:
                self._rollouts.setdefault(e.task, []).append(e)
            self._rollout_version = version
        return self._rollouts

    def _rescore(self):
        try:
            with self._lock:
                policy, version, trained_on = self._policy, self._version, self._trained_on
            demos = self._load_demos()
            rollouts = self._sim_rollouts(policy, version)
            with self._lock:
                payload = self._session.suggest(policy, version, trained_on, demos, rollouts)
            self._pub.publish(String(data=encode(payload)))
            if payload.done:
                self.get_logger().info(payload.reason, once=True)
            elif payload.task and payload.request_id != self._logged_request:
                self._logged_request = payload.request_id
                self.get_logger().info(
                    f'request {payload.request_id}: demonstrate {payload.task} '
                    f'(score {payload.scores.get(payload.task, 0.0):.3f}, '
                    f'{payload.demos_used}/{payload.budget} demos, version {version})')
            else:
                self.get_logger().info(payload.reason, throttle_duration_sec=30.0)
        except Exception as exc:  # noqa: B902 - the worker must survive and say why
            self.get_logger().error(f'scoring failed: {exc!r}')
        finally:
            self._busy = False

    def destroy_node(self):
        """Stop the scoring thread, then destroy."""
        self._worker.shutdown(wait=True, cancel_futures=True)
        super().destroy_node()


def main(args=None):
    """Run the task selector node."""
    run_node(TaskSelectorNode, args)


if __name__ == '__main__':
    main()
