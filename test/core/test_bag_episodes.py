"""Episodes as rosbag2 bags: what rosbags reads, old single-file episodes, index and sha256."""

import json
import os
from pathlib import Path

from active_finetune.data.episode_index import entry_for_file, file_sha256, file_state, \
    INDEX_FILE, list_saved_episodes, read_index
from active_finetune.data.mcap_episode import BAG_METADATA_FILE, episode_data_file, \
    EpisodeFileError, EpisodeMcapWriter, finalise_bag, header, image_message, load_episode, \
    METADATA_NAME, read_episode_info
from active_finetune.data.recorder import EpisodeRecorder, RecorderSettings
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import get_typestore, Stores
import yaml

pytestmark = pytest.mark.timeout(60)

GRIPPER = 'gripper_finger_distance'
T0_NS = 1_700_000_000_000_000_000
PERIOD_NS = 50_000_000


def frame(step, shape=(24, 32)):
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    return np.stack([rows * 9 + step, cols * 7, np.full(shape, 200 - step)],
                    axis=-1).astype(np.uint8)


def record(tmp_path, steps=6, **overrides):
    """Record one episode through the recorder core; return (result, images, twists)."""
    values = {'dataset_dir': str(tmp_path / 'episodes'), 'min_free_disk_mb': 0.0,
              'max_linear_velocity_mps': 0.25, 'gripper_open_position': 0.1}
    values.update(overrides)
    finished = []
    recorder = EpisodeRecorder(RecorderSettings(**values), on_finished=finished.append)
    recorder.start('push', request_id=3)
    images, twists = [], []
    for step in range(steps + 1):
        t = T0_NS + step * PERIOD_NS
        images.append(frame(step))
        recorder.add_image(images[-1], t, 'camera', log_time_ns=t + 1_000_000)
        recorder.add_joint_state(['arm', GRIPPER], [0.1, 0.05], stamp_ns=t,
                                 log_time_ns=t + 2_000_000)
        recorder.add_ee_pose((0.1 * step, 0.2, 0.3), stamp_ns=t, log_time_ns=t + 2_000_000)
        if step < steps:
            twists.append((0.01 * step, -0.02, 0.05))
            recorder.add_twist(twists[-1], stamp_ns=t + 3_000_000, log_time_ns=t + 3_000_000)
            recorder.add_gripper(1.0, log_time_ns=t + 3_000_000)
    recorder.stop(success=True)
    assert recorder.wait_idle(10.0)
    recorder.close()
    assert finished[-1]['state'] == 'saved', finished[-1]
    return finished[-1], images, twists


def test_a_saved_episode_is_a_bag_directory_that_rosbags_reads(tmp_path):
    result, images, twists = record(tmp_path)
    bag = Path(result['bag_path'])
    data = Path(result['path'])
    assert bag.name == 'episode_000001_push' and bag.is_dir()
    assert data == bag / 'episode_000001_push.mcap'
    assert sorted(p.name for p in bag.iterdir()) == ['episode_000001_push.mcap', BAG_METADATA_FILE]
    assert not list(bag.parent.glob('*.mcap*'))  # no loose file or partial left

    info = yaml.safe_load((bag / BAG_METADATA_FILE).read_text())['rosbag2_bagfile_information']
    assert info['version'] == 8 and info['storage_identifier'] == 'mcap'
    assert info['relative_file_paths'] == ['episode_000001_push.mcap']
    counts = {t['topic_metadata']['name']: t['message_count']
              for t in info['topics_with_message_count']}
    assert counts == {'/camera/image_raw': 7, '/joint_states': 7, '/ee_pose': 7,
                      '/teleop/twist': 6, '/teleop/gripper': 6}
    assert info['message_count'] == 33
    assert info['starting_time']['nanoseconds_since_epoch'] == T0_NS + 1_000_000
    assert info['duration']['nanoseconds'] == 6 * PERIOD_NS + 1_000_000  # last: a pose at +2 ms
    assert all(t['topic_metadata']['serialization_format'] == 'cdr'
               for t in info['topics_with_message_count'])

    typestore = get_typestore(Stores.ROS2_JAZZY)
    with Reader(bag) as reader:
        by_topic = {c.topic: c for c in reader.connections}
        assert by_topic['/camera/image_raw'].msgtype == 'sensor_msgs/msg/Image'
        assert by_topic['/teleop/twist'].msgtype == 'geometry_msgs/msg/TwistStamped'
        assert {t: c.msgcount for t, c in by_topic.items()} == counts
        assert reader.message_count == 33
        qos = by_topic['/camera/image_raw'].ext.offered_qos_profiles[0]
        assert qos.reliability.name == 'RELIABLE' and qos.depth == 5  # the policy subscribes
        decoded = {}
        for connection, timestamp, raw in reader.messages(
                connections=[by_topic['/camera/image_raw'], by_topic['/teleop/twist']]):
            message = typestore.deserialize_cdr(raw, connection.msgtype)
            decoded.setdefault(connection.topic, []).append((timestamp, message))
    first_stamp, first_image = decoded['/camera/image_raw'][0]
    assert first_stamp == T0_NS + 1_000_000
    assert (first_image.height, first_image.width, first_image.encoding) == (24, 32, 'rgb8')
    assert first_image.header.stamp.sec * 10**9 + first_image.header.stamp.nanosec == T0_NS
    np.testing.assert_array_equal(first_image.data.reshape(24, 32, 3), images[0])
    _, last_twist = decoded['/teleop/twist'][-1]
    linear = last_twist.twist.linear
    assert (linear.x, linear.y, linear.z) == pytest.approx(twists[-1])


def test_load_episode_takes_the_bag_directory_and_its_file(tmp_path):
    result, images, twists = record(tmp_path)
    from_dir = load_episode(result['bag_path'], image_size=(24, 32))
    from_file = load_episode(result['path'], image_size=(24, 32))
    np.testing.assert_array_equal(from_dir.images, np.array(images[:-1]))  # raw is lossless
    np.testing.assert_array_equal(from_dir.images, from_file.images)
    np.testing.assert_allclose(from_dir.actions[:, :3], np.array(twists) / 0.25, atol=1e-6)
    assert from_dir.metadata['path'] == result['path'] and from_dir.task == 'push'
    assert read_episode_info(result['bag_path'])['frames'] == 7
    with pytest.raises(EpisodeFileError, match='no such file or bag directory'):
        load_episode(tmp_path / 'nothing')


def test_index_names_the_bag_file_and_the_sha256_covers_the_mcap_file_only(tmp_path):
    result, _, _ = record(tmp_path)
    dataset = tmp_path / 'episodes'
    [line] = read_index(dataset)
    assert line['file'] == 'episode_000001_push/episode_000001_push.mcap'
    assert line['sha256'] == result['sha256'] == file_sha256(result['path'])
    assert file_sha256(result['bag_path']) == result['sha256']  # metadata.yaml not included
    [listed] = list_saved_episodes(dataset)
    assert listed['path'] == result['path'] and listed['bag_path'] == result['bag_path']
    assert file_state(result['bag_path']) == file_state(result['path']) is not None
    entry = entry_for_file(result['bag_path'])
    assert entry['file'] == line['file'] and entry['sha256'] == line['sha256']
    assert entry['frames'] == 7 and entry['episode_number'] == 1


def test_compressed_frames_go_on_the_compressed_topic_and_load(tmp_path):
    result, images, _ = record(tmp_path, image_format='png')
    with Reader(result['bag_path']) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
    assert types['/camera/image_raw/compressed'] == 'sensor_msgs/msg/CompressedImage'
    assert '/camera/image_raw' not in types
    episode = load_episode(result['bag_path'], image_size=(24, 32))
    np.testing.assert_array_equal(episode.images, np.array(images[:-1]))  # png: lossless


def write_old_episode(path):
    """Write an episode as files were before bags: CompressedImage topic named in 'topics'."""
    topics = {'image': '/camera/image_raw/compressed', 'joint_states': '/joint_states',
              'ee_pose': '/ee_pose', 'twist': '/teleop/twist', 'gripper': '/teleop/gripper'}
    with open(path, 'wb') as stream:
        writer = EpisodeMcapWriter(stream, topics=topics)
        for step in range(4):
            t = T0_NS + step * PERIOD_NS
            writer.write('image', image_message(frame(step), t, 'cam', 'png'), t)
            writer.write('joint_states', {'header': header(t), 'name': [GRIPPER],
                                          'position': [0.1], 'velocity': [], 'effort': []}, t)
            writer.write('ee_pose', {'header': header(t), 'pose': {
                'position': {'x': 0.1, 'y': 0.2, 'z': 0.3},
                'orientation': {'x': 0.0, 'y': 0.0, 'z': 0.0, 'w': 1.0}}}, t)
            writer.write('twist', {'header': header(t + 1), 'twist': {
                'linear': {'x': 0.05, 'y': 0.0, 'z': 0.0},
                'angular': {'x': 0.0, 'y': 0.0, 'z': 0.0}}}, t + 1)
            writer.write('gripper', {'data': -1.0}, t + 1)
        writer.add_metadata(METADATA_NAME, {
            'task': 'reach', 'success': 'true', 'max_linear_velocity_mps': '0.25',
            'gripper_joint_name': GRIPPER, 'gripper_open_position': '0.1', 'frames': '4',
            'steps': '3', 'topics': json.dumps(topics)})
        writer.finish()


def test_old_single_file_episodes_still_load_list_and_hash(tmp_path):
    dataset = tmp_path / 'episodes'
    dataset.mkdir()
    old = dataset / 'episode_000001_reach.mcap'
    write_old_episode(old)
    episode = load_episode(old, image_size=(24, 32))
    assert len(episode) == 3 and episode.actions[0, 0] == pytest.approx(0.2)
    np.testing.assert_array_equal(episode.images[1], frame(1))
    result, _, _ = record(tmp_path)  # the recorder numbers on after the old file
    assert Path(result['bag_path']).name == 'episode_000002_push'
    listed = list_saved_episodes(dataset)
    by_name = {Path(e['path']).name: e for e in listed}
    assert set(by_name) == {'episode_000001_reach.mcap', 'episode_000002_push.mcap'}
    assert by_name['episode_000001_reach.mcap']['bag_path'] is None
    assert by_name['episode_000001_reach.mcap']['sha256'] == file_sha256(old)
    # The recorder indexes the old file it finds at start-up, before it records the new one.
    assert [e['file'] for e in read_index(dataset)] == [
        'episode_000001_reach.mcap', 'episode_000002_push/episode_000002_push.mcap']


def test_crash_before_metadata_yaml_is_indexed_and_completed(tmp_path):
    dataset = tmp_path / 'episodes'
    dataset.mkdir()
    loose = dataset / 'loose.mcap'
    write_old_episode(loose)
    sha = file_sha256(loose)
    bag = dataset / 'episode_000004_reach'
    bag.mkdir()
    os.replace(loose, bag / 'episode_000004_reach.mcap')  # crash here: no metadata.yaml
    assert episode_data_file(bag) == bag / 'episode_000004_reach.mcap'
    [listed] = list_saved_episodes(dataset)
    assert listed['bag_path'] == str(bag) and listed['sha256'] == sha
    assert (bag / BAG_METADATA_FILE).is_file() and (dataset / INDEX_FILE).is_file()
    with Reader(bag) as reader:
        assert reader.message_count == 20
    with pytest.raises(FileExistsError):
        write_old_episode(loose)
        finalise_bag(loose, bag)
