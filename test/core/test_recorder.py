"""Recording core: round trip, drops, success policies, write errors, recovery after SIGKILL."""

import errno
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import textwrap
import time

from active_finetune.data import leftover_recovery as recovery_module
from active_finetune.data.episode_index import file_sha256, list_saved_episodes
from active_finetune.data.mcap_episode import decode_image, encode_image, load_episode, \
    read_episode_info
from active_finetune.data.recorder import EpisodeRecorder, frame_format, RecorderError, \
    RecorderRefusedError, RecorderSettings, recover_leftovers
import numpy as np
import pytest

pytestmark = pytest.mark.timeout(60)

GRIPPER = 'gripper_finger_distance'
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def settings(tmp_path, **overrides):
    values = {'dataset_dir': str(tmp_path / 'episodes'), 'min_free_disk_mb': 0.0,
              'max_linear_velocity_mps': 0.25, 'gripper_open_position': 0.1}
    values.update(overrides)
    return RecorderSettings(**values)


def smooth_image(step, shape=(48, 64)):
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    red = rows * 200 // shape[0] + step % 50
    green = cols * 200 // shape[1]
    blue = np.full(shape, 90 + step % 50)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def record_steps(recorder, steps, t0_ns=1_700_000_000_000_000_000, period_ns=33_000_000,
                 image_shape=(48, 64)):
    """
    Feed ``steps`` control steps with known times; return the expected rows.

    Per step, as the simulation bridge publishes them: state and camera frame (one stamp; the
    frame arrives first), then the operator's command issued after seeing it.  A final frame
    (the observation after the last command) closes the episode.
    """
    proprio, actions, images = [], [], []
    for step in range(steps + 1):
        t = t0_ns + step * period_ns
        opening = 0.02 + 0.001 * step
        position = (0.3 + 0.01 * step, -0.2, 0.15)
        image = smooth_image(step, image_shape)
        assert recorder.add_image(image, t, 'camera', log_time_ns=t + 1_000_000)
        assert recorder.add_joint_state(['arm', GRIPPER], [0.5, opening], stamp_ns=t,
                                        log_time_ns=t + 2_000_000)
        assert recorder.add_ee_pose(position, stamp_ns=t, log_time_ns=t + 2_000_000)
        if step == steps:
            break
        linear = (0.05 * np.sin(step), 0.1, -0.3)
        gripper = 1.0 if step % 10 < 5 else -1.0
        command_ns = t + 3_000_000
        assert recorder.add_twist(linear, stamp_ns=command_ns, log_time_ns=command_ns)
        assert recorder.add_gripper(gripper, log_time_ns=command_ns)
        assert recorder.add_joy([0.0] * 6, [0, 0], stamp_ns=command_ns, log_time_ns=command_ns)
        proprio.append([*position, opening / 0.1])
        actions.append([*np.clip(np.asarray(linear) / 0.25, -1, 1), gripper])
        images.append(image)
    return np.array(proprio), np.array(actions), np.array(images)


def test_round_trip_gives_the_recorded_arrays(tmp_path):
    finished = []
    recorder = EpisodeRecorder(settings(tmp_path, image_format='jpeg', jpeg_quality=95),
                               on_finished=finished.append)
    session = recorder.start('pick-place', request_id=5, notes='slow grasp')
    proprio, actions, images = record_steps(recorder, 40)
    recorder.stop()
    assert recorder.wait_idle(10.0)
    result = finished[-1]
    assert result['state'] == 'saved' and result['steps'] == 40 and result['dropped'] == 0
    assert Path(result['path']).name == 'episode_000001_pick-place.mcap'
    assert not session.partial_path.exists()
    assert file_sha256(result['path']) == result['sha256']
    episode = load_episode(result['path'], image_size=(48, 64))
    assert episode.task == 'pick-place' and episode.success
    np.testing.assert_allclose(episode.proprio, proprio, atol=1e-6)
    np.testing.assert_allclose(episode.actions, actions, atol=1e-6)
    error = np.abs(episode.images.astype(int) - images.astype(int))
    assert error.mean() < 2.0 and error.max() <= 12
    assert episode.metadata['operator_notes'] == 'slow grasp'
    assert episode.metadata['frames_dropped'] == {'no_state': 0, 'no_command': 0,
                                                  'last_frame': 1}
    assert episode.metadata['request_id'] == '5'
    listed = list_saved_episodes(tmp_path / 'episodes')
    assert listed[0]['sha256'] == result['sha256'] and listed[0]['request_id'] == 5


@pytest.mark.parametrize('image_format', ['png', 'auto'])
def test_png_is_lossless_and_the_default_at_policy_sizes(tmp_path, image_format):
    finished = []
    recorder = EpisodeRecorder(settings(tmp_path, image_format=image_format),
                               on_finished=finished.append)
    recorder.start('reach')
    _, _, images = record_steps(recorder, 5, image_shape=(96, 96))
    recorder.stop()
    assert recorder.wait_idle(10.0)
    episode = load_episode(finished[-1]['path'], image_size=(96, 96))
    np.testing.assert_array_equal(episode.images, images)


def test_auto_format_is_png_up_to_256_squared_pixels_and_jpeg_above():
    assert RecorderSettings().image_format == 'raw'  # raw frames: a played bag feeds the policy
    assert frame_format('auto', (96, 96, 3)) == frame_format('auto', (256, 256, 3)) == 'png'
    assert frame_format('auto', (257, 256, 3)) == frame_format('auto', (480, 640, 3)) == 'jpeg'
    assert frame_format('png', (480, 640, 3)) == 'png'
    assert frame_format('jpeg', (96, 96, 3)) == 'jpeg'
    with pytest.raises(ValueError, match="'gif'"):
        frame_format('gif', (96, 96, 3))


def test_jpeg_changes_what_the_policy_would_see_png_does_not():
    """The reason for lossless frames at the policy's input size (96x96, raw at inference)."""
    rows, cols = np.mgrid[0:96, 0:96]
    frame = np.zeros((96, 96, 3), dtype=np.uint8)
    frame[..., 0] = np.where((rows // 12 + cols // 12) % 2 == 0, 200, 40)  # coloured edges
    frame[..., 1] = cols * 2
    frame[..., 2] = 90
    png = decode_image(encode_image(frame, 'png')[1])
    jpeg = decode_image(encode_image(frame, 'jpeg', jpeg_quality=95)[1])
    np.testing.assert_array_equal(png, frame)
    error = np.abs(jpeg.astype(int) - frame.astype(int))
    assert error.max() > 8, 'a 96x96 JPEG (quality 95) round trip is not exact'


def test_full_queue_drops_and_counts(tmp_path):
    finished = []
    recorder = EpisodeRecorder(settings(tmp_path, queue_size=2), on_finished=finished.append)
    recorder.start('reach')
    for add in (lambda: recorder.add_joint_state(['arm', GRIPPER], [0.0, 0.05]),
                lambda: recorder.add_ee_pose((0.0, 0.0, 0.0)),
                lambda: recorder.add_twist((0.0, 0.0, 0.0)), lambda: recorder.add_gripper(-1.0)):
        assert add()
        time.sleep(0.05)
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    accepted = sum(recorder.add_image(frame, time.time_ns()) for _ in range(60))
    session = recorder.stop()
    assert recorder.wait_idle(10.0)
    result = finished[-1]
    assert 0 < accepted < 60
    assert result['dropped'] == session.dropped['image'] == 60 - accepted
    assert result['frames'] == accepted
    info = read_episode_info(result['path'])
    assert info['frames'] == accepted and json.loads(info['dropped']) == {'image': 60 - accepted}


@pytest.mark.parametrize('policy, mark, sim, expected', [
    ('auto', None, None, True), ('auto', False, True, False), ('auto', None, False, False),
    ('sim', True, None, False), ('sim', None, True, True), ('operator', None, False, True),
    ('operator', False, True, False)])
def test_success_policies(tmp_path, policy, mark, sim, expected):
    recorder = EpisodeRecorder(settings(tmp_path, success_on_stop=policy))
    session = recorder.start('reach')
    if mark is not None:
        recorder.mark_success(mark)
    if sim is not None:
        recorder.add_sim_success(sim)
    assert recorder.resolve_success(session) is expected
    recorder.discard()
    assert recorder.wait_idle(5.0)


@pytest.mark.parametrize('policy, mark, sim, source', [
    ('auto', None, None, 'unmarked'), ('auto', False, True, 'operator'),
    ('auto', None, False, 'sim'), ('sim', True, None, 'sim'), ('operator', None, True, 'unmarked'),
    ('operator', True, False, 'operator')])
def test_status_says_the_success_a_stop_would_save_and_what_decides_it(
        tmp_path, policy, mark, sim, source):
    recorder = EpisodeRecorder(settings(tmp_path, success_on_stop=policy,
                                        unmarked_success=False))
    session = recorder.start('reach')
    if mark is not None:
        recorder.mark(mark)
    if sim is not None:
        recorder.add_sim_success(sim)
    status = recorder.status()
    assert status['success_if_stopped'] is recorder.resolve_success(session)
    assert (status['marked'], status['success_source']) == (mark, source)
    recorder.discard()
    assert recorder.wait_idle(5.0)
    assert 'success_if_stopped' not in recorder.status()


def test_mark_with_a_note_is_stored_in_the_saved_episode(tmp_path):
    finished = []
    recorder = EpisodeRecorder(settings(tmp_path), on_finished=finished.append)
    recorder.start('push', notes='second try')
    recorder.mark(True, 'cube slipped at the end')
    recorder.mark_success(False)  # a later verdict without a note keeps the note
    status = recorder.status()
    assert (status['marked'], status['note']) == (False, 'cube slipped at the end')
    assert (status['success_if_stopped'], status['success_source']) == (False, 'operator')
    record_steps(recorder, 5)
    recorder.stop()
    assert recorder.wait_idle(10.0)
    result = finished[-1]
    assert (result['state'], result['success'], result['success_source']) == (
        'saved', False, 'operator')
    info = read_episode_info(result['path'])
    assert info['operator_notes'] == 'second try; cube slipped at the end'
    assert (info['operator_mark'], info['success'], info['success_source']) == (
        'failure', 'false', 'operator')
    # Unmarked: labelled by unmarked_success, and the file says so.
    recorder.start('push')
    record_steps(recorder, 5)
    recorder.stop()
    assert recorder.wait_idle(10.0)
    info = read_episode_info(finished[-1]['path'])
    assert (info['operator_mark'], info['success'], info['success_source'],
            info['operator_notes']) == ('', 'true', 'unmarked', '')
    recorder.start('push')
    record_steps(recorder, 5)
    recorder.stop(success=False)
    assert recorder.wait_idle(10.0)
    assert read_episode_info(finished[-1]['path'])['success_source'] == 'explicit'
    with pytest.raises(RecorderError, match='not recording'):
        recorder.mark(True, 'too late')


def test_refusals_and_requests_out_of_order(tmp_path):
    recorder = EpisodeRecorder(settings(tmp_path, min_free_disk_mb=1e12))
    with pytest.raises(RecorderRefusedError, match='min_free_disk_mb'):
        recorder.start('reach')
    recorder = EpisodeRecorder(settings(tmp_path))
    with pytest.raises(RecorderRefusedError, match='no task'):
        recorder.start('')
    with pytest.raises(RecorderError, match='not recording'):
        recorder.stop()
    with pytest.raises(RecorderError, match='not recording'):
        recorder.mark_success(True)
    assert not recorder.add_gripper(1.0)
    recorder.start('reach')
    with pytest.raises(RecorderRefusedError, match='already recording'):
        recorder.start('push')
    recorder.discard()
    assert recorder.wait_idle(5.0)
    assert recorder.status()['state'] == 'discarded'
    with pytest.raises(ValueError, match='success_on_stop'):
        settings(tmp_path, success_on_stop='maybe')
    with pytest.raises(ValueError, match='image_format'):
        settings(tmp_path, image_format='gif')
    with pytest.raises(ValueError, match='max_command_hold_s.*-0.1'):
        settings(tmp_path, max_command_hold_s=-0.1)


def test_episode_without_state_is_quarantined_not_saved(tmp_path):
    finished = []
    recorder = EpisodeRecorder(settings(tmp_path), on_finished=finished.append)
    recorder.start('reach')
    recorder.add_image(smooth_image(0), time.time_ns())
    recorder.stop()
    assert recorder.wait_idle(5.0)
    assert finished[-1]['state'] == 'error' and '/joint_states' in finished[-1]['message']
    assert list_saved_episodes(tmp_path / 'episodes') == []
    assert (tmp_path / 'episodes' / 'quarantine' / 'episode_000001_reach.mcap.partial').exists()


def test_write_error_stops_keeps_partial_and_reports(tmp_path):
    finished = []
    recorder = EpisodeRecorder(settings(tmp_path), on_finished=finished.append)
    session = recorder.start('reach')

    class FullDisk:
        def write(self, data):
            raise OSError(28, 'No space left on device')

        def tell(self):
            return 0

        def flush(self):
            raise OSError(28, 'No space left on device')

    session._stream.raw = FullDisk()
    session._file = FullDisk()
    session._file.close = lambda: None
    record_steps(recorder, 40)  # fills a chunk, so the writer must write
    deadline = time.monotonic() + 5.0
    while not finished and time.monotonic() < deadline:
        time.sleep(0.01)
    assert finished and finished[-1]['state'] == 'error'
    assert 'No space left' in finished[-1]['message']
    assert recorder.active is None and recorder.status()['state'] == 'error'
    assert session.partial_path.exists()
    assert not recorder.add_gripper(1.0)


def test_interrupted_recording_is_set_aside_not_indexed(tmp_path):
    finished = []
    recorder = EpisodeRecorder(settings(tmp_path), on_finished=finished.append)
    recorder.start('push')
    record_steps(recorder, 5)
    assert recorder.close(5.0)
    aside = tmp_path / 'episodes' / 'episode_000001_push.recovered.mcap'
    assert finished[-1]['path'] == str(aside) and aside.exists()
    info = read_episode_info(aside)
    assert (info['recovered'], info['success'], info['interrupted']) == ('true', 'false', 'true')
    assert list_saved_episodes(tmp_path / 'episodes') == []


CRASHING_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from active_finetune.data.recorder import EpisodeRecorder, RecorderSettings
    recorder = EpisodeRecorder(RecorderSettings(
        dataset_dir=sys.argv[1], min_free_disk_mb=0.0, flush_period_s=0.02, queue_size=10000))
    rng = np.random.default_rng(0)
    for number, steps in ((1, 12), (2, 12), (3, 100000)):
        recorder.start('reach' if number < 3 else 'push')
        for step in range(steps):
            recorder.add_joint_state(['arm', 'gripper_finger_distance'], [0.1, 0.05])
            recorder.add_ee_pose((0.1, 0.2, 0.3))
            recorder.add_twist((0.01, 0.0, 0.0))
            recorder.add_gripper(1.0)
            recorder.add_image(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8),
                               time.time_ns())
            if number == 3 and step == 60:
                print('RECORDING', flush=True)
            time.sleep(0.005)
        if number < 3:
            recorder.stop()
            assert recorder.wait_idle(10.0)
            print('SAVED', number, flush=True)
""")


def test_recovery_after_sigkill_mid_episode(tmp_path):
    dataset = tmp_path / 'episodes'
    process = subprocess.Popen([sys.executable, '-c', CRASHING_WRITER, str(dataset)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=REPOSITORY_ROOT, start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 40.0
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            if line.startswith('RECORDING'):
                break
        assert lines[-1:] == ['RECORDING'], (lines, process.stderr.read())
        time.sleep(0.3)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10.0)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10.0)
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    partial = dataset / 'episode_000003_push.mcap.partial'
    assert partial.exists()
    saved_before = list_saved_episodes(dataset)
    assert [Path(e['path']).name for e in saved_before] == [
        'episode_000001_reach.mcap', 'episode_000002_reach.mcap']
    assert all(file_sha256(e['path']) == e['sha256'] for e in saved_before)

    recorder = EpisodeRecorder(settings(tmp_path))
    assert [r['outcome'] for r in recorder.recovered] == ['recovered']
    recovered = dataset / 'episode_000003_push.recovered.mcap'
    assert recorder.recovered[0]['path'] == str(recovered) and not partial.exists()
    info = read_episode_info(recovered)
    assert (info['recovered'], info['success'], info['task']) == ('true', 'false', 'push')
    assert info['frames'] == recorder.recovered[0]['frames'] >= 20
    assert len(load_episode(recovered, image_size=(24, 32))) > 0
    assert list_saved_episodes(dataset) == saved_before
    session = recorder.start('reach')
    assert session.number == 4
    recorder.discard()
    assert recorder.wait_idle(5.0)


def test_unrecoverable_partial_is_quarantined(tmp_path):
    dataset = tmp_path / 'episodes'
    dataset.mkdir()
    (dataset / 'episode_000001_reach.mcap.partial').write_bytes(b'\x89MCAP0\r\n' + b'\x01' * 5)
    (dataset / 'episode_000002_reach.mcap.partial').write_bytes(b'garbage')
    results = recover_leftovers(dataset)
    assert [r['outcome'] for r in results] == ['quarantined', 'quarantined']
    for name in ('episode_000001_reach.mcap.partial', 'episode_000002_reach.mcap.partial'):
        assert (dataset / 'quarantine' / name).exists()
        assert (dataset / 'quarantine' / f'{name}.reason.txt').read_text().strip()
    assert list(dataset.glob('*.partial')) == []
    assert list_saved_episodes(dataset) == []


def leftover_partial(tmp_path, dataset):
    """Record a real episode elsewhere and leave it in ``dataset`` as a crash's .partial file."""
    finished = []
    source = EpisodeRecorder(settings(tmp_path / 'elsewhere'), on_finished=finished.append)
    source.start('push')
    record_steps(source, 12)
    source.stop()
    assert source.wait_idle(5.0) and finished[-1]['state'] == 'saved'
    dataset.mkdir(parents=True, exist_ok=True)
    partial = dataset / 'episode_000001_push.mcap.partial'
    os.replace(finished[-1]['path'], partial)
    return partial


def full_disk(monkeypatch, state):
    """Make the recovery's writes raise ENOSPC after 4 kB while ``state['full']`` is true."""
    original = recovery_module.rewrite_salvaged

    class FullDiskStream:
        def __init__(self, raw):
            self.raw = raw
            self.written = 0

        def write(self, data):
            if self.written + len(data) > 4096:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(data)
            return self.raw.write(data)

        def tell(self):
            return self.raw.tell()

        def flush(self):
            self.raw.flush()

    def rewrite(path, stream, metadata_updates):
        state['attempts'] += 1
        return original(path, FullDiskStream(stream) if state['full'] else stream,
                        metadata_updates)

    monkeypatch.setattr(recovery_module, 'rewrite_salvaged', rewrite)


def test_recovery_on_a_full_disk_keeps_the_partial_and_refuses_until_space_is_back(
        tmp_path, monkeypatch):
    dataset = tmp_path / 'episodes'
    partial = leftover_partial(tmp_path, dataset)
    content = partial.read_bytes()
    state = {'full': True, 'attempts': 0}
    full_disk(monkeypatch, state)

    recorder = EpisodeRecorder(settings(tmp_path))  # used to raise OSError (ENOSPC) here
    assert state['attempts'] == 1
    assert [r['outcome'] for r in recorder.recovered] == ['kept']
    assert recorder.recovery_pending
    assert partial.read_bytes() == content
    assert list(dataset.glob('*.tmp')) == [] and list(dataset.glob('*.recovered.mcap')) == []
    status = recorder.status()
    assert status['state'] == 'error' and status['path'] == str(partial)
    assert 'No space left' in status['message'] and partial.name in status['message']
    with pytest.raises(RecorderRefusedError, match='No space left'):
        recorder.start('reach')
    assert state['attempts'] == 2  # start retried the recovery first
    assert recorder.active is None and list(dataset.glob('*.mcap')) == []
    assert recorder.retry_recovery()[0]['outcome'] == 'kept' and recorder.recovery_pending

    state['full'] = False  # space is back
    results = recorder.retry_recovery()
    assert [r['outcome'] for r in results] == ['recovered']
    assert not recorder.recovery_pending and not partial.exists()
    assert [r['outcome'] for r in recorder.recovered] == ['recovered']
    recovered = dataset / 'episode_000001_push.recovered.mcap'
    assert read_episode_info(recovered)['recovered'] == 'true'
    assert recorder.status()['state'] == 'idle'
    session = recorder.start('reach')
    assert session.number == 2
    recorder.discard()
    assert recorder.wait_idle(5.0)


def test_start_retries_a_failed_recovery_and_records_once_it_succeeds(tmp_path, monkeypatch):
    dataset = tmp_path / 'episodes'
    partial = leftover_partial(tmp_path, dataset)
    state = {'full': True, 'attempts': 0}
    full_disk(monkeypatch, state)
    recorder = EpisodeRecorder(settings(tmp_path))
    assert recorder.recovery_pending
    state['full'] = False
    session = recorder.start('reach')
    assert not recorder.recovery_pending and not partial.exists()
    assert (dataset / 'episode_000001_push.recovered.mcap').exists()
    recorder.discard()
    assert session.number == 2 and recorder.wait_idle(5.0)
