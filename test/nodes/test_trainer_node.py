"""
Trainer node over real DDS.

A round after B demos, an unreadable episode skipped, the announcement; new episodes from
recorder/episode, the directory listed again only on request; every version evaluated in a
process of its own while rounds go on.
"""

import json
import time

from active_finetune.data.episode_index import append_index_entry, list_saved_episodes
from active_finetune.data.recorder import EpisodeRecorder, RecorderSettings
from active_finetune.nodes.checkpoint_transfer import CheckpointFetcher
from active_finetune.nodes.qos import COMMAND_QOS, LATCHED_QOS, latched_qos
from active_finetune.nodes.trainer_node import TrainerNode
from active_finetune.payloads import encode, EpisodeSaved, NextTask
from active_finetune.policy.checkpoint import load_checkpoint, save_checkpoint, WEIGHTS_FILE
from active_finetune.policy.model import PolicyConfig, TaskPolicy
import numpy as np
import pytest
from rclpy.parameter import Parameter
from std_msgs.msg import String
from std_srvs.srv import Trigger

pytestmark = pytest.mark.timeout(180)

TASKS = ('reach-v3', 'push-v3')
GRIPPER = 'gripper_finger_distance'


def record_demo(recorder, task, steps, seed):
    """Record a short synthetic teleoperated episode through the recording core."""
    rng = np.random.default_rng(seed)
    recorder.start(task)
    t0 = 1_700_000_000_000_000_000 + seed * 10_000_000_000
    for step in range(steps):
        t = t0 + step * 50_000_000
        recorder.add_joint_state(['arm', GRIPPER], [0.1, 0.05], stamp_ns=t, log_time_ns=t)
        recorder.add_ee_pose(tuple(rng.uniform(-0.2, 0.2, 3)), stamp_ns=t, log_time_ns=t)
        recorder.add_twist(tuple(rng.uniform(-0.2, 0.2, 3)), stamp_ns=t, log_time_ns=t)
        recorder.add_gripper(1.0, log_time_ns=t)
        recorder.add_image(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), t, 'camera',
                           log_time_ns=t + 1_000_000)
    recorder.stop(success=True)
    assert recorder.wait_idle(30.0)


def start_trainer(ros, dataset, checkpoint_dir, initial, **parameters):
    """Add a trainer node on ``dataset`` with ``parameters`` besides the directories."""
    values = {'dataset_dir': str(dataset), 'checkpoint_dir': str(checkpoint_dir),
              'initial_checkpoint': str(initial), 'poll_period_s': 0.2, **parameters}
    return ros.add_node(TrainerNode(context=ros.context, parameter_overrides=[
        Parameter(name, value=value) for name, value in values.items()]))


@pytest.fixture
def setup_dirs(tmp_path):
    policy = TaskPolicy(PolicyConfig(tasks=TASKS, observation='image', image_size=32,
                                     conv_channels=(8, 8, 8, 8), hidden_dim=32, feature_dim=16))
    initial = tmp_path / 'initial'
    save_checkpoint(policy, initial, {'kind': 'test'})
    dataset = tmp_path / 'episodes'
    recorder = EpisodeRecorder(RecorderSettings(dataset_dir=str(dataset), min_free_disk_mb=0.0))
    try:
        record_demo(recorder, 'reach-v3', 12, seed=1)
        record_demo(recorder, 'push-v3', 12, seed=2)
    finally:
        recorder.close()
    torn = dataset / 'episode_000099_push-v3.mcap'
    torn.write_bytes(b'\x89MCAP0\r\n' + b'\x00' * 64)
    append_index_entry(dataset, {'file': torn.name, 'task': 'push-v3', 'success': True,
                                 'frames': 12, 'sha256': '0' * 64, 'saved_unix_s': 1.0})
    return initial, dataset, tmp_path / 'checkpoints'


def test_round_skips_the_unreadable_episode_and_announces_a_verified_checkpoint(
        ros, wait_for, setup_dirs):
    initial, dataset, checkpoint_dir = setup_dirs
    assert len(list_saved_episodes(dataset)) == 3
    checkpoints = ros.collect(String, 'trainer/checkpoint', LATCHED_QOS)
    statuses = ros.collect(String, 'trainer/status', COMMAND_QOS)
    start_trainer(ros, dataset, checkpoint_dir, initial, demos_per_round=3, steps=5,
                  batch_size=8, evaluate_episodes=0)
    assert wait_for(lambda: any(json.loads(m.data)['version'] == 0 for m in checkpoints.messages),
                    10.0), 'the starting checkpoint is announced as version 0'
    assert wait_for(lambda: any(json.loads(m.data)['version'] == 1 for m in checkpoints.messages),
                    150.0), [json.loads(m.data)['message'] for m in statuses.messages]
    announced = next(json.loads(m.data) for m in checkpoints.messages
                     if json.loads(m.data)['version'] == 1)
    policy, config = load_checkpoint(announced['path'], expected_sha256=announced['sha256'])
    assert policy.config.tasks == TASKS and config['weights_sha256'] == announced['sha256']
    weights = (checkpoint_dir / 'v0001' / WEIGHTS_FILE).read_bytes()
    assert 'weights_b64' not in announced or announced['weights_b64'] is None
    assert announced['size_bytes'] == len(weights)
    # A machine without the trainer's disk asks for the bytes and gets them, verified.
    fetcher = CheckpointFetcher(ros.node, str(checkpoint_dir.parent / 'robot_cache'))
    fetched = fetcher.fetch(announced['sha256'], announced['size_bytes'],
                            announced['chunk_bytes'], announced['config'], timeout_s=30.0)
    assert (fetched / WEIGHTS_FILE).read_bytes() == weights
    assert load_checkpoint(fetched, expected_sha256=announced['sha256'])[0].config.tasks == TASKS
    assert announced['demos_used'] == 2, 'the truncated episode is not counted'
    messages = [json.loads(m.data)['message'] for m in statuses.messages]
    assert any('episode_000099' in m and 'skip' in m for m in messages), messages
    # The announcement comes as soon as the checkpoint is written; 'waiting' once the round
    # process has finished.
    assert wait_for(lambda: json.loads(statuses.last.data)['state'] == 'waiting', 30.0), \
        statuses.last.data
    assert sum(json.loads(m.data)['version'] == 1 for m in checkpoints.messages) == 1, \
        'version 1 is announced once'
    # Counted as the selector counts it: 2 demos that load, the next round after 3 more.
    last = json.loads(statuses.last.data)
    assert (last['demos_available'], last['demos_unreadable'], last['demos_needed']) == (2, 1, 5)


def test_new_episodes_come_from_announcements_and_the_directory_is_listed_on_request(
        ros, wait_for, tmp_path):
    initial = tmp_path / 'initial'
    save_checkpoint(TaskPolicy(PolicyConfig(tasks=TASKS, observation='state', hidden_dim=8)),
                    initial, {'kind': 'test'})
    dataset = tmp_path / 'episodes'
    dataset.mkdir()
    statuses = ros.collect(String, 'trainer/status', COMMAND_QOS)
    episodes = ros.publisher(String, 'recorder/episode', latched_qos(10))
    start_trainer(ros, dataset, tmp_path / 'checkpoints', initial, demos_per_round=5)
    assert wait_for(lambda: len(statuses) > 0, 10.0)
    recorder = EpisodeRecorder(RecorderSettings(dataset_dir=str(dataset), min_free_disk_mb=0.0))
    try:
        record_demo(recorder, 'reach-v3', 6, seed=1)
        record_demo(recorder, 'push-v3', 6, seed=2)
    finally:
        recorder.close()
    first, second = list_saved_episodes(dataset)
    episodes.publish(String(data=encode(EpisodeSaved(
        path=first['path'], sha256=first['sha256'], task=first['task'], success=True,
        frames=first['frames'], bag_path=first['bag_path'] or ''))))

    def available():
        return json.loads(statuses.last.data)['demos_available']
    assert wait_for(lambda: available() == 1, 10.0), statuses.last.data
    time.sleep(0.6)  # three polls: the second file is on disk but was not announced
    assert available() == 1, 'the directory is not listed on every poll'
    client = ros.node.create_client(Trigger, 'trainer/rescan_episodes')
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(Trigger.Request())
    assert wait_for(future.done, 10.0)
    assert future.result().success and '2 episodes' in future.result().message
    assert wait_for(lambda: available() == 2, 10.0), statuses.last.data
    assert json.loads(statuses.last.data)['demos_needed'] == 5


def one_demo_setup(tmp_path):
    """Save a tiny image checkpoint and record one short reach demo; return both directories."""
    initial = tmp_path / 'initial'
    save_checkpoint(TaskPolicy(PolicyConfig(
        tasks=TASKS, observation='image', image_size=32, conv_channels=(8, 8, 8, 8),
        hidden_dim=32, feature_dim=16)), initial, {'kind': 'test'})
    dataset = tmp_path / 'episodes'
    recorder = EpisodeRecorder(RecorderSettings(dataset_dir=str(dataset), min_free_disk_mb=0.0))
    try:
        record_demo(recorder, 'reach-v3', 6, seed=1)
    finally:
        recorder.close()
    return initial, dataset


def test_each_version_is_evaluated_in_its_own_process_and_rounds_go_on(ros, wait_for, tmp_path):
    initial, dataset = one_demo_setup(tmp_path)
    checkpoints = ros.collect(String, 'trainer/checkpoint', LATCHED_QOS)
    evaluations = ros.collect(String, 'trainer/evaluation', LATCHED_QOS)
    statuses = ros.collect(String, 'trainer/status', COMMAND_QOS)
    episodes = ros.publisher(String, 'recorder/episode', latched_qos(10))
    start_trainer(ros, dataset, tmp_path / 'checkpoints', initial, demos_per_round=1, steps=5,
                  batch_size=4, evaluate_episodes=1, evaluate_max_steps=5)

    def versions(collector):
        return [json.loads(m.data)['version'] for m in collector.messages]
    assert wait_for(lambda: 1 in versions(checkpoints), 120.0), statuses.last.data
    recorder = EpisodeRecorder(RecorderSettings(dataset_dir=str(dataset), min_free_disk_mb=0.0))
    try:
        record_demo(recorder, 'push-v3', 6, seed=2)
    finally:
        recorder.close()
    second = list_saved_episodes(dataset)[-1]
    episodes.publish(String(data=encode(EpisodeSaved(
        path=second['path'], sha256=second['sha256'], task=second['task'], success=True,
        frames=second['frames'], bag_path=second['bag_path'] or ''))))
    assert wait_for(lambda: 2 in versions(checkpoints), 120.0), statuses.last.data
    assert wait_for(lambda: versions(evaluations) == [1, 2], 120.0), \
        [json.loads(m.data)['message'] for m in statuses.messages]
    for message in evaluations.messages:
        evaluation = json.loads(message.data)
        assert set(evaluation['success']) == set(TASKS) and evaluation['episodes'] == 1
        assert all(rate in (0.0, 1.0) for rate in evaluation['success'].values())
    states = [json.loads(m.data)['state'] for m in statuses.messages]
    assert 'evaluating' in states and 'error' not in states, states


def test_the_last_evaluation_runs_on_two_simulator_processes_once_the_budget_is_spent(
        ros, wait_for, tmp_path):
    initial, dataset = one_demo_setup(tmp_path)
    evaluations = ros.collect(String, 'trainer/evaluation', LATCHED_QOS)
    statuses = ros.collect(String, 'trainer/status', COMMAND_QOS)
    suggestions = ros.publisher(String, 'operator/next_task', LATCHED_QOS)
    suggestions.publish(String(data=encode(NextTask(
        task='', budget=1, demos_used=1, budget_remaining=0, demos_per_round=1, done=True))))
    trainer = start_trainer(ros, dataset, tmp_path / 'checkpoints', initial, steps=5,
                            batch_size=4, evaluate_episodes=2, evaluate_max_steps=5,
                            last_evaluation_workers=2)
    assert wait_for(lambda: trainer.session.budget_spent, 30.0), 'operator/next_task not taken'
    # A daemon evaluation process could not start the simulator pool: that would be an error.
    assert wait_for(lambda: evaluations.messages, 150.0), \
        [json.loads(m.data)['message'] for m in statuses.messages]
    evaluation = json.loads(evaluations.last.data)
    assert evaluation['version'] == 1 and set(evaluation['success']) == set(TASKS)
    assert evaluation['episodes'] == 2
    states = [json.loads(m.data)['state'] for m in statuses.messages]
    assert 'error' not in states, [json.loads(m.data)['message'] for m in statuses.messages]
