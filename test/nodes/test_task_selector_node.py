"""
Task selector node over real DDS: episodes by announcement, listing on request, fetched weights.

The directory is listed at start-up; an episode saved later counts only once announced on
``recorder/episode`` or after ``task_selector/rescan_episodes``; a checkpoint announced by
reference with a path that is not on this machine is fetched from the trainer and scored with.
"""

import json
import time

from active_finetune.data.episode_index import list_saved_episodes
from active_finetune.data.recorder import EpisodeRecorder, RecorderSettings
from active_finetune.nodes.checkpoint_transfer import CheckpointServer
from active_finetune.nodes.qos import LATCHED_QOS, latched_qos
from active_finetune.nodes.task_selector_node import TaskSelectorNode
from active_finetune.payloads import CheckpointAnnounced, encode, EpisodeSaved
from active_finetune.policy.checkpoint import CONFIG_FILE, save_checkpoint, WEIGHTS_FILE
from active_finetune.policy.model import PolicyConfig, TaskPolicy
import numpy as np
import pytest
from rclpy.parameter import Parameter
from std_msgs.msg import String
from std_srvs.srv import Trigger
import torch

pytestmark = pytest.mark.timeout(120)

TASKS = ('reach-v3', 'push-v3')
GRIPPER = 'gripper_finger_distance'


def record(recorder, task, seed):
    rng = np.random.default_rng(seed)
    recorder.start(task)
    t0 = 1_700_000_000_000_000_000 + seed * 10_000_000_000
    for step in range(6):
        t = t0 + step * 50_000_000
        recorder.add_joint_state(['arm', GRIPPER], [0.1, 0.05], stamp_ns=t, log_time_ns=t)
        recorder.add_ee_pose(tuple(rng.uniform(-0.2, 0.2, 3)), stamp_ns=t, log_time_ns=t)
        recorder.add_twist(tuple(rng.uniform(-0.2, 0.2, 3)), stamp_ns=t, log_time_ns=t)
        recorder.add_gripper(1.0, log_time_ns=t)
        recorder.add_image(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), t, 'camera',
                           log_time_ns=t + 1_000_000)
    recorder.stop(success=True)
    assert recorder.wait_idle(30.0)


def save_policy(path, seed):
    torch.manual_seed(seed)
    return save_checkpoint(TaskPolicy(PolicyConfig(
        tasks=TASKS, image_size=32, conv_channels=(4, 4), hidden_dim=16, feature_dim=8,
        task_embedding_dim=4)), path)


def test_selector_counts_announced_episodes_rescans_on_request_and_fetches_weights(
        ros, wait_for, tmp_path):
    dataset = tmp_path / 'episodes'
    recorder = EpisodeRecorder(RecorderSettings(dataset_dir=str(dataset), min_free_disk_mb=0.0))
    suggestions = ros.collect(String, 'operator/next_task', LATCHED_QOS)
    episodes = ros.publisher(String, 'recorder/episode', latched_qos(10))
    checkpoints = ros.publisher(String, 'trainer/checkpoint', LATCHED_QOS)
    v0 = tmp_path / 'v0'
    save_policy(v0, 0)
    try:
        record(recorder, 'reach-v3', 1)  # on disk before the selector starts
        ros.add_node(TaskSelectorNode(context=ros.context, parameter_overrides=[
            Parameter('strategy', value='least_demonstrated'), Parameter('budget', value=10),
            Parameter('demos_per_round', value=5), Parameter('dataset_dir', value=str(dataset)),
            Parameter('checkpoint_path', value=str(v0)),
            Parameter('sim_rollouts_per_task', value=0),
            Parameter('checkpoint_cache_dir', value=str(tmp_path / 'selector_cache'))]))

        def counts():
            return json.loads(suggestions.last.data)['demo_counts']
        assert wait_for(lambda: counts() == {'reach-v3': 1, 'push-v3': 0}, 30.0)
        record(recorder, 'push-v3', 2)
        record(recorder, 'push-v3', 3)
    finally:
        recorder.close()
    _, second, third = list_saved_episodes(dataset)
    episodes.publish(String(data=encode(EpisodeSaved(
        path=second['path'], sha256=second['sha256'], task='push-v3', success=True,
        bag_path=second['bag_path'] or ''))))
    assert wait_for(lambda: counts() == {'reach-v3': 1, 'push-v3': 1}, 30.0), counts()
    time.sleep(2.5)  # a periodic re-scoring passes: the unannounced third is not listed
    assert counts() == {'reach-v3': 1, 'push-v3': 1}
    client = ros.node.create_client(Trigger, 'task_selector/rescan_episodes')
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(Trigger.Request())
    assert wait_for(future.done, 10.0) and future.result().success
    assert wait_for(lambda: counts() == {'reach-v3': 1, 'push-v3': 2}, 30.0), counts()

    # A checkpoint announced by reference from another machine: fetched, then scored with.
    trainer_dir = tmp_path / 'trainer' / 'v0001'
    sha1 = save_policy(trainer_dir, 1)
    server = CheckpointServer(ros.node, chunk_bytes=2048)
    server.offer(trainer_dir / WEIGHTS_FILE, sha1)
    checkpoints.publish(String(data=encode(CheckpointAnnounced(
        version=1, sha256=sha1, path='/on/the/trainer/v0001', demos_used=3,
        config=json.loads((trainer_dir / CONFIG_FILE).read_text()),
        size_bytes=(trainer_dir / WEIGHTS_FILE).stat().st_size, chunk_bytes=2048))))
    assert wait_for(lambda: json.loads(suggestions.last.data)['policy_version'] == 1, 30.0), \
        suggestions.last.data
    fetched = tmp_path / 'selector_cache' / sha1 / WEIGHTS_FILE
    assert fetched.read_bytes() == (trainer_dir / WEIGHTS_FILE).read_bytes()
    assert server.chunks_sent >= 2
    server.close()
