"""
Fault injection on the running loop: kill -9 the recorder mid-episode and the trainer mid-round.

Both are restarted; no completed episode or checkpoint may be lost or torn, the interrupted
episode is set aside (never indexed as good), and the loop carries on to the next checkpoint.
"Mid-episode" and "mid-round" are read from the nodes' public status, not guessed with sleeps:
the recorder is killed once recorder/status reports frames of the episode recorded, the trainer
once trainer/status reports progress of round 0's training steps.
"""

import os
from pathlib import Path
import random
import threading
import time

from active_finetune.data.episode_index import file_sha256, list_saved_episodes
from active_finetune.data.mcap_episode import load_episode
from active_finetune.nodes.qos import COMMAND_QOS, LATCHED_QOS, latched_qos
from active_finetune.payloads import decode_dict
from active_finetune.policy.checkpoint import load_checkpoint
from active_finetune.runner import GraphRunner
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import String

DEADLINE_S = 540.0


class Watcher(Node):
    """Keep every payload of the loop's topics, decoded as a dict (defaults filled in)."""

    TOPICS = {'operator/next_task': LATCHED_QOS, 'recorder/episode': latched_qos(10),
              'recorder/status': LATCHED_QOS, 'trainer/checkpoint': LATCHED_QOS,
              'trainer/status': COMMAND_QOS, 'policy/status': LATCHED_QOS}

    def __init__(self, context):
        super().__init__('fault_watcher', context=context)
        self.lock = threading.Lock()
        self.messages = {topic: [] for topic in self.TOPICS}
        for topic, qos in self.TOPICS.items():
            self.create_subscription(String, topic, lambda m, t=topic: self._on(t, m), qos)

    def _on(self, topic, msg):
        with self.lock:
            self.messages[topic].append(decode_dict(topic, msg.data))

    def get(self, topic):
        with self.lock:
            return list(self.messages[topic])


@pytest.fixture
def loop(tmp_path):
    os.environ['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(101, 200))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    dataset = tmp_path / 'episodes'
    overrides = {
        'task_selector.budget': 3, 'task_selector.demos_per_round': 1,
        'task_selector.dataset_dir': str(dataset), 'demo_recorder.dataset_dir': str(dataset),
        'trainer.dataset_dir': str(dataset), 'trainer.checkpoint_dir': str(tmp_path / 'ckpt'),
        'trainer.demos_per_round': 1, 'trainer.steps': 200, 'trainer.evaluate_episodes': 0,
        'trainer.log_dir': '', 'task_selector.sim_rollouts_per_task': 0,
        # the rounds must train (and report progress) even when a scripted demo fails on a
        # loaded machine: the test is about crash safety, not demo quality
        'trainer.train_on_failed_demos': True,
    }
    context = rclpy.Context()
    rclpy.init(context=context)
    watcher = Watcher(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(watcher)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.1)
                                               for _ in iter(stop.is_set, True)], daemon=True)
    spinner.start()
    try:
        with GraphRunner('sim', overrides=overrides, log_dir=tmp_path / 'logs') as graph:
            yield graph, watcher, tmp_path
    finally:
        stop.set()
        spinner.join(5.0)
        executor.shutdown()
        watcher.destroy_node()
        rclpy.try_shutdown(context=context)


def wait_until(graph, predicate, what, deadline, check=True):
    while time.monotonic() < deadline:
        if check:
            graph.check()
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f'timed out waiting for: {what}\n{graph.log_tails(12)}')


def test_killed_recorder_and_trainer_lose_nothing_and_the_loop_goes_on(loop):
    graph, watcher, tmp_path = loop
    deadline = time.monotonic() + DEADLINE_S
    dataset = tmp_path / 'episodes'

    # 1. kill -9 the recorder in the middle of the first demonstration.
    recording = wait_until(graph, lambda: next(
        (s for s in watcher.get('recorder/status') if s['state'] == 'recording'
         and s['frames'] > 0), None),
        'first recording with frames recorded', deadline)
    assert graph.kill('demo_recorder') is not None
    assert list(dataset.glob('*.partial')), 'the interrupted episode is a .partial, not a file'
    assert list_saved_episodes(dataset) == []
    graph.restart('demo_recorder')

    # The restarted recorder sets the partial aside; the scripted operator redoes the demo.
    first = wait_until(graph, lambda: next(iter(watcher.get('recorder/episode')), None),
                       'a demo saved after the recorder restart', deadline)
    assert first['task'] == recording['task']
    assert not list(dataset.glob('*.partial'))
    aside = list(dataset.glob('*.recovered.mcap')) + list((dataset / 'quarantine').glob('*'))
    assert aside, 'the interrupted episode was recovered aside or quarantined'
    saved = list_saved_episodes(dataset)
    assert [Path(e['path']).name for e in saved] == [Path(first['path']).name]
    assert file_sha256(first['path']) == saved[0]['sha256']

    # 2. kill -9 the trainer (and its training process) in the middle of round 0.
    # Progress is reported every 100 steps: the first report after step 0 (0.5 of 200 steps)
    # leaves half of the round's steps, then the checkpoint, to go.
    wait_until(graph, lambda: any(s['state'] == 'training' and s['round'] == 0
                                  and s['progress'] > 0 for s in watcher.get('trainer/status')),
               'round 0 training steps under way', deadline)
    assert not [c for c in watcher.get('trainer/checkpoint') if c['version'] > 0], \
        'round 0 ended before the trainer could be killed in the middle of it'
    assert graph.kill('trainer') is not None
    checkpoint_dir = tmp_path / 'ckpt'
    complete = ([p for p in checkpoint_dir.glob('v*') if p.is_dir()]
                if checkpoint_dir.exists() else [])
    for version_dir in complete:
        load_checkpoint(version_dir)  # a complete version must load; raises if torn
    graph.restart('trainer')

    # 3. The restarted trainer resumes and the loop reaches the next rounds.
    second = wait_until(graph, lambda: next(
        (c for c in watcher.get('trainer/checkpoint') if c['version'] == 2), None),
        'checkpoint version 2 after both restarts', deadline)
    for version in (1, 2):
        announced = next(c for c in watcher.get('trainer/checkpoint') if c['version'] == version)
        load_checkpoint(announced['path'], expected_sha256=announced['sha256'])
    assert second['demos_used'] == 2
    for entry in list_saved_episodes(dataset):
        assert file_sha256(entry['path']) == entry['sha256']
        load_episode(entry['path'], image_size=(96, 96))
    wait_until(graph, lambda: any(s.get('version') == 2 for s in watcher.get('policy/status')),
               'policy node on version 2', deadline)
    assert not list(checkpoint_dir.glob('.v*.tmp')), 'no torn checkpoint left behind'
