"""
The whole active fine-tuning loop through real DDS, in simulation, with the scripted operator.

Starts the ``sim`` graph with the project runner (every node in its own process, as ``ros2 launch``
would) and follows one item through every stage, twice: suggestion published -> scripted demo
recorded to disk -> trainer writes and announces a checkpoint -> the policy node swaps to it
without a restart -> the selector re-scores with the new version.  Runs in CI (not marked slow).
"""

import json
import os
import random
import threading
import time

from active_finetune.data.episode_index import list_saved_episodes
from active_finetune.data.mcap_episode import load_episode
from active_finetune.nodes.qos import LATCHED_QOS, latched_qos
from active_finetune.policy.checkpoint import load_checkpoint
from active_finetune.runner import GraphRunner, read_log_tail
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import String

DEMOS_PER_ROUND = 1
ROUNDS = 2
DEADLINE_S = 480.0


class LoopWatcher(Node):
    """Record every JSON message on the loop's topics, in arrival order."""

    TOPICS = {'operator/next_task': LATCHED_QOS, 'recorder/episode': latched_qos(10),
              'trainer/checkpoint': LATCHED_QOS, 'policy/status': LATCHED_QOS,
              'recorder/status': LATCHED_QOS}

    def __init__(self, context):
        super().__init__('e2e_watcher', context=context)
        self.lock = threading.Lock()
        self.messages = {topic: [] for topic in self.TOPICS}
        self.malformed = []
        for topic, qos in self.TOPICS.items():
            self.create_subscription(String, topic, lambda m, t=topic: self._on(t, m), qos)

    def _on(self, topic, msg):
        try:
            payload = json.loads(msg.data)
        except ValueError as exc:
            self.malformed.append((topic, str(exc)))
            return
        with self.lock:
            self.messages[topic].append(payload)

    def get(self, topic):
        with self.lock:
            return list(self.messages[topic])


@pytest.fixture
def loop(tmp_path):
    os.environ['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(101, 200))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    dataset = tmp_path / 'episodes'
    overrides = {
        'task_selector.strategy': 'amf', 'task_selector.budget': DEMOS_PER_ROUND * ROUNDS,
        'task_selector.demos_per_round': DEMOS_PER_ROUND,
        'task_selector.dataset_dir': str(dataset), 'demo_recorder.dataset_dir': str(dataset),
        'trainer.dataset_dir': str(dataset),
        'trainer.checkpoint_dir': str(tmp_path / 'checkpoints'),
        'trainer.demos_per_round': DEMOS_PER_ROUND, 'trainer.steps': 40,
        'trainer.evaluate_episodes': 0, 'trainer.log_dir': str(tmp_path / 'tensorboard'),
    }
    context = rclpy.Context()
    rclpy.init(context=context)
    watcher = LoopWatcher(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(watcher)
    stop = threading.Event()

    def spin():
        while not stop.is_set() and context.ok():
            executor.spin_once(timeout_sec=0.1)

    spinner = threading.Thread(target=spin, daemon=True)
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


def wait_until(graph, predicate, what, deadline):
    """Poll ``predicate`` while checking that no node process died; fail with ``what``."""
    while time.monotonic() < deadline:
        graph.check()
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    tails = {node: read_log_tail(graph.log_path(node), 15) for node in graph.processes}
    pytest.fail(f'timed out waiting for: {what}\n' + '\n'.join(
        f'--- {node} log tail ---\n{tail}' for node, tail in tails.items()))


def test_two_rounds_of_the_active_loop_through_dds(loop):
    graph, watcher, tmp_path = loop
    deadline = time.monotonic() + DEADLINE_S
    policy_pid = graph.pid('policy')
    seen_versions = [0]
    for round_index in range(ROUNDS):
        version = round_index + 1

        suggestion = wait_until(graph, lambda: next(
            (s for s in watcher.get('operator/next_task')
             if s['task'] and s['policy_version'] == version - 1 and s['round'] == round_index),
            None), f'suggestion of round {round_index}', deadline)
        assert suggestion['scores'] and all(isinstance(v, float)
                                            for v in suggestion['scores'].values())
        assert suggestion['task'] in suggestion['scores']
        assert suggestion['budget_remaining'] == DEMOS_PER_ROUND * (ROUNDS - round_index)

        episode = wait_until(graph, lambda: next(
            (e for e in watcher.get('recorder/episode') if e['task'] == suggestion['task']
             and e.get('request_id') == suggestion['request_id']), None),
            f'demo of {suggestion["task"]} saved', deadline)
        recorded = load_episode(episode['path'], image_size=(96, 96))
        assert recorded.task == suggestion['task'] and len(recorded) == episode['steps'] > 5
        assert episode['path'] in [e['path'] for e in list_saved_episodes(tmp_path / 'episodes')]

        announced = wait_until(graph, lambda: next(
            (c for c in watcher.get('trainer/checkpoint') if c['version'] == version), None),
            f'checkpoint version {version} announced', deadline)
        assert announced['demos_used'] == DEMOS_PER_ROUND * version
        policy, _ = load_checkpoint(announced['path'], expected_sha256=announced['sha256'])
        assert suggestion['task'] in policy.config.tasks

        wait_until(graph, lambda: any(s.get('version') == version and s.get('state') != 'error'
                                      for s in watcher.get('policy/status')),
                   f'policy node running version {version}', deadline)
        assert graph.pid('policy') == policy_pid, (
            'the policy node swapped weights without a restart')
        seen_versions.append(version)

    final = wait_until(graph, lambda: next(
        (s for s in watcher.get('operator/next_task') if s['done']), None),
        'selector re-scored after the last checkpoint and reported the budget spent', deadline)
    assert final['demos_used'] == DEMOS_PER_ROUND * ROUNDS and final['budget_remaining'] == 0
    rescored = [s for s in watcher.get('operator/next_task') if s['task']]
    assert sorted({s['policy_version'] for s in rescored}) == seen_versions[:-1]
    assert not watcher.malformed
    graph.check()
