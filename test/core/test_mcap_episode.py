"""Episode files (MCAP, ROS 2 encoding): alignment, rejection of bad files, the episode index."""

import json
import time

from active_finetune.data.episode_index import append_index_entry, file_sha256, INDEX_FILE, \
    list_saved_episodes, next_episode_number, read_index
from active_finetune.data.mcap_episode import DEFAULT_TOPICS, encode_image, EpisodeFileError, \
    EpisodeMcapWriter, header, load_episode, METADATA_NAME, read_episode_info
from mcap.reader import make_reader
import numpy as np
import pytest

GRIPPER = 'gripper_finger_distance'
MS = 1_000_000


def metadata(**overrides):
    values = {'task': 'reach', 'success': 'true', 'max_linear_velocity_mps': '0.2',
              'gripper_joint_name': GRIPPER, 'gripper_open_position': '0.08',
              'topics': json.dumps(DEFAULT_TOPICS)}
    values.update(overrides)
    return values


def image(value, shape=(8, 10)):
    return np.full(shape + (3,), value, dtype=np.uint8)


def write_file(path, events, meta=None, skip_roles=(), unstamped=(), image_format='png'):
    """
    Write (log_ms, role, value) events; values: image fill, pose x, twist vx, gripper, joint.

    Header stamps equal the log times, except for the roles in ``unstamped`` (stamp 0).
    """
    with open(path, 'wb') as stream:
        writer = EpisodeMcapWriter(stream)
        for log_ms, role, value in events:
            if role in skip_roles:
                continue
            t = 1_700_000_000_000 * MS + log_ms * MS
            stamp = 0 if role in unstamped else t
            if role == 'image':
                fmt, data = encode_image(image(value), image_format)
                writer.write('image', {'header': header(stamp, 'cam'), 'format': fmt,
                                       'data': data}, t)
            elif role == 'ee_pose':
                writer.write('ee_pose', {'header': header(stamp), 'pose': {
                    'position': {'x': value, 'y': 0.5, 'z': 0.25},
                    'orientation': {'x': 0.0, 'y': 0.0, 'z': 0.0, 'w': 1.0}}}, t)
            elif role == 'twist':
                writer.write('twist', {'header': header(stamp), 'twist': {
                    'linear': {'x': value, 'y': 0.0, 'z': -0.1},
                    'angular': {'x': 0.0, 'y': 0.0, 'z': 0.0}}}, t)
            elif role == 'gripper':
                writer.write('gripper', {'data': value}, t)
            elif role == 'joint_states':
                names, positions = (['arm', GRIPPER], [1.0, value]) if value is not None \
                    else (['arm'], [1.0])
                writer.write('joint_states', {'header': header(stamp), 'name': names,
                                              'position': positions, 'velocity': [],
                                              'effort': []}, t)
        writer.add_metadata(METADATA_NAME, metadata() if meta is None else meta)
        writer.finish()
    return path


EVENTS = [
    (0, 'image', 10),          # before any state: no row
    (1, 'joint_states', 0.04),
    (2, 'ee_pose', 0.1),
    (3, 'twist', 0.1),         # issued before frame 1: produced it, is not its action
    (4, 'gripper', -1.0),      # also before frame 1, but a gripper command is held
    (10, 'image', 20),         # row 0
    (10, 'twist', 0.05),       # same stamp as the frame: not issued after it
    (11, 'joint_states', None),  # arm-only joint state: ignored
    (12, 'twist', 0.4),        # row 0: first twist after frame 1 (clipped to 1.0)
    (13, 'ee_pose', 0.2),
    (15, 'twist', -0.1),       # later in the same window: not used by row 0
    (20, 'image', 30),         # row 1: no twist in (20, 40], the one at 15 ms is held
    (25, 'gripper', 1.0),      # row 1: first gripper command after its frame
    (30, 'joint_states', 0.16),  # opening 2.0 -> clipped to 1
    (40, 'image', 40),         # row 2: the twist at 15 ms still held (25 ms old)
    (400, 'image', 50),        # the newest twist is 385 ms old (> 200 ms): no row
    (700, 'image', 60),        # last frame: no row
]


def test_load_aligns_each_frame_with_the_command_issued_after_it(tmp_path):
    path = write_file(tmp_path / 'episode_000001_reach.mcap', EVENTS)
    episode = load_episode(path, image_size=(4, 5))
    assert len(episode) == 3 and episode.task == 'reach' and episode.success
    np.testing.assert_allclose(episode.proprio, [[0.1, 0.5, 0.25, 0.5],
                                                 [0.2, 0.5, 0.25, 0.5],
                                                 [0.2, 0.5, 0.25, 1.0]], atol=1e-6)
    np.testing.assert_allclose(episode.actions, [[1.0, 0.0, -0.5, -1.0],
                                                 [-0.5, 0.0, -0.5, 1.0],
                                                 [-0.5, 0.0, -0.5, 1.0]], atol=1e-6)
    assert episode.images.shape == (3, 4, 5, 3)
    assert [int(episode.images[i, 0, 0, 0]) for i in range(3)] == [20, 30, 40]
    assert episode.metadata['frames_skipped'] == 3
    assert episode.metadata['frames_dropped'] == {'no_state': 1, 'no_command': 1,
                                                  'last_frame': 1}
    assert episode.metadata['commands_held'] == 2
    assert episode.metadata['alignment_clocks'] == {'joint_states': 'stamp', 'ee_pose': 'stamp',
                                                    'twist': 'stamp', 'gripper': 'log'}
    assert episode.metadata['max_linear_velocity_mps'] == '0.2'
    shorter_hold = write_file(tmp_path / 'e.mcap', EVENTS,
                              meta=metadata(max_command_hold_s='0.02'))
    assert load_episode(shorter_hold).metadata['frames_dropped']['no_command'] == 2


def test_stamps_decide_not_the_order_messages_arrived_in(tmp_path):
    """An asynchronous 50 Hz command stream against 30 Hz frames, received late and shuffled."""
    rng = np.random.default_rng(3)
    frame_stamps = np.arange(30) * 33_300_000 + 5_000_000
    twist_stamps = np.arange(50) * 20_000_000 + 1_000_000
    t0 = 1_700_000_000_000 * MS
    messages = []  # (log time, role, stamp, value)
    for i, stamp in enumerate(frame_stamps):
        arrival = stamp + int(rng.integers(5, 30) * MS)  # images travel slower
        messages += [(arrival, 'image', stamp, i), (stamp + MS, 'ee_pose', stamp, float(i))]
        messages.append((stamp + MS, 'joint_states', stamp, 0.04))
    for i, stamp in enumerate(twist_stamps):
        messages.append((stamp + int(rng.integers(0, 3) * MS), 'twist', stamp, i / 100.0))
    messages.append((0, 'gripper', None, 1.0))
    path = tmp_path / 'async.mcap'
    with open(path, 'wb') as stream:
        writer = EpisodeMcapWriter(stream)
        for log_ns, role, stamp, value in sorted(messages, key=lambda m: m[0]):
            log_ns += t0
            stamp_ns = None if stamp is None else t0 + stamp
            if role == 'image':
                fmt, data = encode_image(image(value), 'png')
                writer.write(role, {'header': header(stamp_ns), 'format': fmt, 'data': data},
                             log_ns)
            elif role == 'ee_pose':
                writer.write(role, {'header': header(stamp_ns), 'pose': {
                    'position': {'x': value, 'y': 0.0, 'z': 0.0},
                    'orientation': {'x': 0.0, 'y': 0.0, 'z': 0.0, 'w': 1.0}}}, log_ns)
            elif role == 'joint_states':
                writer.write(role, {'header': header(stamp_ns), 'name': [GRIPPER],
                                    'position': [value], 'velocity': [], 'effort': []}, log_ns)
            elif role == 'twist':
                writer.write(role, {'header': header(stamp_ns), 'twist': {
                    'linear': {'x': value, 'y': 0.0, 'z': 0.0},
                    'angular': {'x': 0.0, 'y': 0.0, 'z': 0.0}}}, log_ns)
            else:
                writer.write(role, {'data': value}, log_ns)
        writer.add_metadata(METADATA_NAME, metadata(max_linear_velocity_mps='1.0'))
        writer.finish()
    episode = load_episode(path, image_size=(8, 10))
    assert len(episode) == len(frame_stamps) - 1
    expected_twist = [np.searchsorted(twist_stamps, stamp, side='right') / 100.0
                      for stamp in frame_stamps[:-1]]
    np.testing.assert_allclose(episode.actions[:, 0], expected_twist, atol=1e-6)
    np.testing.assert_allclose(episode.proprio[:, 0], np.arange(len(frame_stamps) - 1))
    assert [int(v) for v in episode.images[:, 0, 0, 0]] == list(range(len(frame_stamps) - 1))
    assert episode.metadata['commands_held'] == 0


def test_unstamped_twists_are_aligned_by_log_time(tmp_path):
    events = [(0, 'joint_states', 0.04), (0, 'ee_pose', 0.1), (0, 'gripper', 1.0),
              (10, 'image', 1), (12, 'twist', 0.1), (20, 'image', 2), (22, 'twist', -0.1),
              (30, 'image', 3)]
    path = write_file(tmp_path / 'e.mcap', events, unstamped=('twist',))
    episode = load_episode(path)
    np.testing.assert_allclose(episode.actions[:, 0], [0.5, -0.5], atol=1e-6)
    assert episode.metadata['alignment_clocks']['twist'] == 'log'
    assert episode.metadata['alignment_clocks']['ee_pose'] == 'stamp'


def test_jpeg_episodes_stay_readable(tmp_path):
    path = write_file(tmp_path / 'e.mcap', EVENTS, image_format='jpeg')
    episode = load_episode(path, image_size=(8, 10))
    assert len(episode) == 3
    assert np.abs(episode.images[:, 0, 0, 0].astype(int) - [20, 30, 40]).max() <= 2


def test_file_follows_ros2_mcap_conventions(tmp_path):
    path = write_file(tmp_path / 'e.mcap', EVENTS)
    with open(path, 'rb') as stream:
        reader = make_reader(stream)
        assert reader.get_header().profile == 'ros2'
        summary = reader.get_summary()
    schemas = {s.name: s.encoding for s in summary.schemas.values()}
    assert schemas['sensor_msgs/msg/CompressedImage'] == 'ros2msg'
    assert schemas['geometry_msgs/msg/PoseStamped'] == 'ros2msg'
    topics = {c.topic: c.message_encoding for c in summary.channels.values()}
    assert topics['/camera/image_raw/compressed'] == 'cdr' and topics['/teleop/gripper'] == 'cdr'
    info = read_episode_info(path)
    assert info['frames'] == 6 and info['task'] == 'reach'


def test_truncated_file_is_rejected(tmp_path):
    path = write_file(tmp_path / 'e.mcap', EVENTS)
    data = path.read_bytes()
    for cut in (len(data) - 10, len(data) // 2, 20):
        path.write_bytes(data[:cut])
        with pytest.raises(EpisodeFileError) as info:
            load_episode(path)
        assert str(path) in str(info.value)


def test_corrupt_chunk_is_rejected(tmp_path):
    path = write_file(tmp_path / 'e.mcap', EVENTS)
    with open(path, 'rb') as stream:
        chunk = make_reader(stream).get_summary().chunk_indexes[0]
    data = bytearray(path.read_bytes())
    middle = chunk.chunk_start_offset + chunk.chunk_length // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(EpisodeFileError):
        load_episode(path)


def test_missing_file_topic_joint_and_frames_are_rejected(tmp_path):
    with pytest.raises(EpisodeFileError, match='no such file'):
        load_episode(tmp_path / 'absent.mcap')
    (tmp_path / 'text.mcap').write_text('not an mcap file at all')
    with pytest.raises(EpisodeFileError, match='not a readable MCAP'):
        load_episode(tmp_path / 'text.mcap')
    path = write_file(tmp_path / 'a.mcap', EVENTS, skip_roles=('gripper',))
    with pytest.raises(EpisodeFileError, match='missing topics.*teleop/gripper'):
        load_episode(path)
    path = write_file(tmp_path / 'b.mcap', EVENTS, meta=metadata(gripper_joint_name='finger'))
    with pytest.raises(EpisodeFileError, match="joint 'finger'"):
        load_episode(path)
    late_state = [(0, 'image', 1), (5, 'joint_states', 0.04), (5, 'ee_pose', 0.1),
                  (5, 'twist', 0.1), (5, 'gripper', 1.0)]
    path = write_file(tmp_path / 'c.mcap', late_state)
    with pytest.raises(EpisodeFileError, match='none of 1 frames'):
        load_episode(path)
    path = write_file(tmp_path / 'd.mcap', EVENTS, meta=metadata(max_linear_velocity_mps='x'))
    with pytest.raises(EpisodeFileError, match='max_linear_velocity_mps'):
        load_episode(path)


def entry(name, **extra):
    values = {'file': name, 'task': 'reach', 'success': True, 'frames': 3, 'sha256': 'ab',
              'saved_unix_s': time.time()}
    values.update(extra)
    return values


def test_index_tolerates_a_torn_last_line_and_appends_on_a_fresh_line(tmp_path):
    first = write_file(tmp_path / 'episode_000001_reach.mcap', EVENTS)
    second = write_file(tmp_path / 'episode_000002_reach.mcap', EVENTS)
    append_index_entry(tmp_path, entry(first.name, sha256=file_sha256(first)))
    with open(tmp_path / INDEX_FILE, 'a') as index:
        index.write('{"file": "episode_000002_reach.mc')  # crash mid-append
    assert [e['file'] for e in read_index(tmp_path)] == [first.name]
    append_index_entry(tmp_path, entry(second.name, sha256=file_sha256(second), success=False))
    listed = list_saved_episodes(tmp_path)
    assert [e['path'] for e in listed] == [str(first.resolve()), str(second.resolve())]
    assert [e['success'] for e in listed] == [True, False]
    assert listed[0]['sha256'] == file_sha256(first)


def test_unindexed_files_are_reindexed_and_missing_ones_dropped(tmp_path, caplog):
    first = write_file(tmp_path / 'episode_000001_reach.mcap', EVENTS)
    append_index_entry(tmp_path, entry('episode_000009_gone.mcap'))
    append_index_entry(tmp_path, entry(first.name, sha256=file_sha256(first)))
    orphan = write_file(tmp_path / 'episode_000002_push.mcap', EVENTS,
                        meta=metadata(task='push', success='false', request_id='4', steps='3'))
    write_file(tmp_path / 'episode_000003_push.recovered.mcap', EVENTS)
    (tmp_path / 'episode_000004_push.mcap.partial').write_bytes(b'partial')
    listed = list_saved_episodes(tmp_path)
    assert [e['path'] for e in listed] == [str(first.resolve()), str(orphan.resolve())]
    assert listed[1]['task'] == 'push' and listed[1]['success'] is False
    assert listed[1]['request_id'] == 4 and listed[1]['sha256'] == file_sha256(orphan)
    assert 'missing' in caplog.text
    assert [e['file'] for e in read_index(tmp_path)][-1] == orphan.name  # persisted
    assert len(list_saved_episodes(tmp_path)) == 2
    assert next_episode_number(tmp_path) == 10


def test_index_entry_needs_its_fields(tmp_path):
    with pytest.raises(ValueError, match='sha256'):
        append_index_entry(tmp_path, {'file': 'x.mcap', 'task': 't', 'success': True,
                                      'frames': 1, 'saved_unix_s': 0.0})
    with pytest.raises(ValueError, match='bare name'):
        append_index_entry(tmp_path, entry('sub/x.mcap'))
    assert list_saved_episodes(tmp_path / 'absent') == []
