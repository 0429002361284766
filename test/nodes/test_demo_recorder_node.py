"""Demo recorder node through real DDS: services, record button, status, episode topic, refusal."""

import errno
import json
import os
import threading
import time

from active_finetune.data import leftover_recovery as recovery_module
from active_finetune.data.episode_index import file_sha256, list_saved_episodes
from active_finetune.data.mcap_episode import load_episode, read_episode_info
from active_finetune.data.recorder import EpisodeRecorder, RecorderSettings
from active_finetune.nodes.conversions import linear_to_twist_stamped, rgb_to_image
from active_finetune.nodes.demo_recorder_node import DemoRecorderNode
from active_finetune.nodes.qos import COMMAND_QOS, IMAGE_QOS, LATCHED_QOS, latched_qos, \
    SENSOR_QOS
from active_finetune.payloads import encode, EpisodeMark
from geometry_msgs.msg import PoseStamped, TwistStamped
import numpy as np
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState, Joy
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import SetBool, Trigger

pytestmark = pytest.mark.timeout(60)

GRIPPER_JOINT = 'gripper_finger_distance'


class RobotStreams:
    """Publish camera, joint states, pose, teleop twist and gripper at 30 Hz from the helper."""

    def __init__(self, ros):
        self.image_pub = ros.publisher(Image, 'camera/image_raw', IMAGE_QOS)
        self.joint_pub = ros.publisher(JointState, 'joint_states', SENSOR_QOS)
        self.pose_pub = ros.publisher(PoseStamped, 'ee_pose', SENSOR_QOS)
        self.twist_pub = ros.publisher(TwistStamped, 'teleop/twist', COMMAND_QOS)
        self.gripper_pub = ros.publisher(Float64, 'teleop/gripper', COMMAND_QOS)
        self._node = ros.node
        self._tick_count = 0
        self._timer = ros.node.create_timer(1.0 / 30.0, self._tick)

    def _tick(self):
        self._tick_count += 1
        now_s = self._node.get_clock().now().nanoseconds * 1e-9
        joint = JointState(name=['shoulder', GRIPPER_JOINT], position=[0.3, 0.05])
        joint.header.stamp = self._node.get_clock().now().to_msg()
        self.joint_pub.publish(joint)
        pose = PoseStamped()
        pose.header.stamp = joint.header.stamp
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.4, -0.1, 0.2
        self.pose_pub.publish(pose)
        self.twist_pub.publish(linear_to_twist_stamped([0.125, 0.0, -0.25], now_s, 'base_link'))
        self.gripper_pub.publish(Float64(data=1.0))
        image = np.full((24, 32, 3), (200, 40, 10), dtype=np.uint8)
        self.image_pub.publish(rgb_to_image(image, now_s, 'camera'))


def payloads(log):
    return [json.loads(m.data) for m in log.messages]


def last_status(log):
    """Return the newest recorder/status payload ({} before the first)."""
    received = payloads(log)
    return received[-1] if received else {}


def call(ros, wait_for, srv_type, name, request=None):
    client = ros.node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=5.0), f'service {name} not available'
    future = client.call_async(request if request is not None else srv_type.Request())
    assert wait_for(future.done, 5.0), f'no answer from {name}'
    return future.result()


@pytest.fixture
def recorder(ros, tmp_path):
    def build(**overrides):
        values = {'dataset_dir': str(tmp_path / 'episodes'), 'min_free_disk_mb': 0.0,
                  'max_linear_velocity_mps': 0.25, 'gripper_joint_name': GRIPPER_JOINT,
                  'gripper_open_position': 0.1, 'default_task': 'reach', **overrides}
        node = DemoRecorderNode(context=ros.context, parameter_overrides=[
            Parameter(name, value=value) for name, value in values.items()])
        return ros.add_node(node)
    return build


def test_start_stop_saves_and_announces_an_indexed_episode(ros, wait_for, recorder, tmp_path):
    status = ros.collect(String, 'recorder/status', LATCHED_QOS)
    episodes = ros.collect(String, 'recorder/episode', latched_qos(10))
    next_task = ros.publisher(String, 'operator/next_task', LATCHED_QOS)
    next_task.publish(String(data=json.dumps({'task': 'push', 'request_id': 7, 'done': False})))
    node = recorder()
    RobotStreams(ros)
    assert wait_for(lambda: last_status(status).get('state') == 'idle', 5.0)
    assert wait_for(lambda: node._suggestion.get('task') == 'push', 5.0)

    answer = call(ros, wait_for, Trigger, 'recorder/start')
    assert answer.success, answer.message
    assert 'push' in answer.message
    refused = call(ros, wait_for, Trigger, 'recorder/start')
    assert not refused.success and 'already recording' in refused.message
    assert wait_for(lambda: last_status(status).get('state') == 'recording'
                    and last_status(status).get('frames', 0) >= 15, 10.0)
    marked = call(ros, wait_for, SetBool, 'recorder/mark_success', SetBool.Request(data=False))
    assert marked.success, marked.message
    answer = call(ros, wait_for, Trigger, 'recorder/stop')
    assert answer.success, answer.message

    assert wait_for(lambda: len(episodes) == 1, 10.0)
    episode = json.loads(episodes.last.data)
    assert (episode['task'], episode['request_id'], episode['success']) == ('push', 7, False)
    assert episode['path'].endswith('episode_000001_push.mcap')
    assert file_sha256(episode['path']) == episode['sha256']
    listed = list_saved_episodes(tmp_path / 'episodes')
    assert [e['path'] for e in listed] == [episode['path']]
    loaded = load_episode(episode['path'], image_size=(12, 16))
    assert len(loaded) == episode['steps'] >= 10
    np.testing.assert_allclose(loaded.actions[-1], [0.5, 0.0, -1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(loaded.proprio[-1], [0.4, -0.1, 0.2, 0.5], atol=1e-6)
    assert np.abs(loaded.images[-1].astype(int) - (200, 40, 10)).max() <= 6
    assert wait_for(lambda: last_status(status).get('state') == 'saved', 5.0)
    states = [p['state'] for p in payloads(status)]
    assert states.index('recording') < states.index('saved')


def test_mark_with_a_note_on_recorder_mark_is_stored_and_shown_in_the_status(
        ros, wait_for, recorder):
    """recorder/mark (console, dashboard): the verdict and the note reach the file."""
    status = ros.collect(String, 'recorder/status', LATCHED_QOS)
    episodes = ros.collect(String, 'recorder/episode', latched_qos(10))
    mark = ros.publisher(String, 'recorder/mark', COMMAND_QOS)
    recorder()
    RobotStreams(ros)
    assert wait_for(lambda: mark.get_subscription_count() == 1, 5.0)
    mark.publish(String(data=encode(EpisodeMark(success=True, note='ignored: not recording'))))
    assert call(ros, wait_for, Trigger, 'recorder/start').success
    assert wait_for(lambda: last_status(status).get('frames', 0) >= 10, 10.0)
    unmarked = last_status(status)
    assert (unmarked['marked'], unmarked['success_if_stopped'], unmarked['success_source']) == (
        None, True, 'unmarked')  # success_on_stop auto, no sim/success, unmarked_success true
    mark.publish(String(data='{"success": "yes"}'))  # malformed: ignored, the node lives on
    mark.publish(String(data=encode(EpisodeMark(success=False, note='gripper hit the bin'))))
    assert wait_for(lambda: last_status(status).get('marked') is False, 5.0)
    marked = last_status(status)
    assert (marked['note'], marked['success_if_stopped'], marked['success_source']) == (
        'gripper hit the bin', False, 'operator')
    assert 'marked failure (note: gripper hit the bin)' in marked['message']
    assert call(ros, wait_for, Trigger, 'recorder/stop').success
    assert wait_for(lambda: len(episodes) == 1, 10.0)
    episode = json.loads(episodes.last.data)
    assert episode['success'] is False
    info = read_episode_info(episode['path'])
    assert (info['operator_notes'], info['operator_mark'], info['success_source']) == (
        'gripper hit the bin', 'failure', 'operator')
    assert wait_for(lambda: last_status(status).get('state') == 'saved', 5.0)
    assert last_status(status)['success_if_stopped'] is None


def test_discard_deletes_and_stop_without_recording_is_refused(ros, wait_for, recorder, tmp_path):
    status = ros.collect(String, 'recorder/status', LATCHED_QOS)
    recorder()
    RobotStreams(ros)
    assert wait_for(lambda: last_status(status).get('state') == 'idle', 5.0)
    assert not call(ros, wait_for, Trigger, 'recorder/stop').success
    assert call(ros, wait_for, Trigger, 'recorder/start').success
    assert wait_for(lambda: last_status(status).get('frames', 0) >= 3, 10.0)
    assert call(ros, wait_for, Trigger, 'recorder/discard').success
    assert wait_for(lambda: last_status(status).get('state') == 'discarded', 5.0)
    assert list((tmp_path / 'episodes').glob('*.mcap*')) == []
    assert list_saved_episodes(tmp_path / 'episodes') == []


def test_record_button_toggles_and_sim_success_labels(ros, wait_for, recorder):
    status = ros.collect(String, 'recorder/status', LATCHED_QOS)
    episodes = ros.collect(String, 'recorder/episode', latched_qos(10))
    recorder(success_on_stop='sim')
    RobotStreams(ros)
    assert wait_for(lambda: last_status(status).get('state') == 'idle', 5.0)
    joy = ros.publisher(Joy, 'teleop/joy', COMMAND_QOS)
    sim_success = ros.publisher(Bool, 'sim/success', COMMAND_QOS)
    assert ros.wait_for_subscribers(joy) and ros.wait_for_subscribers(sim_success)
    lock = threading.Lock()

    def press(pressed):
        with lock:
            joy.publish(Joy(axes=[0.0] * 6, buttons=[int(pressed), 0]))

    press(True)
    assert wait_for(lambda: last_status(status).get('state') == 'recording', 5.0)
    press(True)  # held: no second edge
    assert wait_for(lambda: last_status(status).get('frames', 0) >= 10, 10.0)
    assert last_status(status).get('state') == 'recording'
    sim_success.publish(Bool(data=True))
    press(False)
    press(True)
    assert wait_for(lambda: len(episodes) == 1, 10.0)
    episode = json.loads(episodes.last.data)
    assert episode['task'] == 'reach' and episode['success'] is True
    assert episode['request_id'] is None


def test_start_refused_on_low_disk_and_without_task(ros, wait_for, recorder):
    recorder(min_free_disk_mb=1e12)
    answer = call(ros, wait_for, Trigger, 'recorder/start')
    assert not answer.success and 'min_free_disk_mb' in answer.message


def test_start_refused_without_a_task(ros, wait_for, recorder):
    recorder(default_task='')
    answer = call(ros, wait_for, Trigger, 'recorder/start')
    assert not answer.success and 'no task' in answer.message


def test_full_disk_at_start_keeps_the_node_up_refuses_and_recovers_when_space_is_back(
        ros, wait_for, recorder, tmp_path, monkeypatch):
    # A leftover .partial file (a real episode recorded elsewhere), and a disk that is full
    # while the recovery rewrites it: the node used to die with ENOSPC in its constructor.
    finished = []
    source = EpisodeRecorder(RecorderSettings(dataset_dir=str(tmp_path / 'elsewhere'),
                                              min_free_disk_mb=0.0),
                             on_finished=finished.append)
    source.start('push')
    for step in range(6):
        t = 1_700_000_000_000_000_000 + step * 33_000_000
        source.add_image(np.full((24, 32, 3), 50 + step, dtype=np.uint8), t, log_time_ns=t)
        source.add_joint_state(['arm', GRIPPER_JOINT], [0.1, 0.05], stamp_ns=t, log_time_ns=t)
        source.add_ee_pose((0.1, 0.2, 0.3), stamp_ns=t, log_time_ns=t)
        source.add_twist((0.01, 0.0, 0.0), stamp_ns=t + 1000, log_time_ns=t + 1000)
        source.add_gripper(1.0, log_time_ns=t + 1000)
    source.stop()
    assert source.wait_idle(5.0) and finished[-1]['state'] == 'saved', finished
    dataset = tmp_path / 'episodes'
    dataset.mkdir()
    partial = dataset / 'episode_000001_push.mcap.partial'
    os.replace(finished[-1]['path'], partial)
    content = partial.read_bytes()

    disk = {'full': True}
    original = recovery_module.rewrite_salvaged

    def rewrite(path, stream, metadata_updates):
        if disk['full']:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(path, stream, metadata_updates)

    monkeypatch.setattr(recovery_module, 'rewrite_salvaged', rewrite)
    status = ros.collect(String, 'recorder/status', LATCHED_QOS)
    recorder(recovery_retry_period_s=0.2)
    assert wait_for(lambda: last_status(status).get('state') == 'error', 10.0)
    assert 'No space left' in last_status(status)['message']
    assert last_status(status)['path'] == str(partial)
    answer = call(ros, wait_for, Trigger, 'recorder/start')
    assert not answer.success and 'No space left' in answer.message
    assert partial.read_bytes() == content
    time.sleep(0.5)  # several retries while the disk is still full: still refusing, file kept
    assert last_status(status).get('state') == 'error' and partial.exists()

    disk['full'] = False
    assert wait_for(lambda: last_status(status).get('state') == 'idle', 10.0)
    assert 'recovered' in last_status(status)['message']
    assert not partial.exists()
    assert (dataset / 'episode_000001_push.recovered.mcap').exists()
    answer = call(ros, wait_for, Trigger, 'recorder/start')
    assert answer.success, answer.message
    assert call(ros, wait_for, Trigger, 'recorder/discard').success
