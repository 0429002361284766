"""af-export: robomimic HDF5 and diffusion_policy zarr read back with h5py and zarr."""

import json
from pathlib import Path

from active_finetune.commands.export import main
from active_finetune.data.episode_index import list_saved_episodes
from active_finetune.data.mcap_episode import load_episode
from active_finetune.data.recorder import EpisodeRecorder, RecorderSettings
import h5py
import numpy as np
import pytest
import zarr

pytestmark = pytest.mark.timeout(120)

GRIPPER = 'gripper_finger_distance'
JOINTS = ['right_j0', 'right_j1', GRIPPER]
SHAPE = (40, 56)  # full resolution: not the policy's 96x96
T0_NS = 1_700_000_000_000_000_000
PERIOD_NS = 50_000_000


def frame(episode, step):
    rows, cols = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    return np.stack([rows * 5 + step, cols * 4 + episode * 30, np.full(SHAPE, 17 * step % 256)],
                    axis=-1).astype(np.uint8)


def record_dataset(dataset, plan):
    """Record (task, steps, success) episodes through the recorder core, raw frames."""
    finished = []
    recorder = EpisodeRecorder(RecorderSettings(
        dataset_dir=str(dataset), min_free_disk_mb=0.0, max_linear_velocity_mps=0.25,
        gripper_open_position=0.1), on_finished=finished.append)
    for number, (task, steps, success) in enumerate(plan):
        recorder.start(task)
        for step in range(steps + 1):
            t = T0_NS + (number * 1000 + step) * PERIOD_NS
            recorder.add_image(frame(number, step), t, 'camera', log_time_ns=t + 1_000_000)
            recorder.add_joint_state(JOINTS, [0.1 * step, -0.2 * number, 0.01 * step],
                                     stamp_ns=t, log_time_ns=t + 2_000_000)
            recorder.add_ee_pose((0.3, 0.01 * step, 0.2), stamp_ns=t, log_time_ns=t + 2_000_000)
            if step < steps:
                recorder.add_twist((0.02 * step, -0.05, 0.1 * number), stamp_ns=t + 3_000_000,
                                   log_time_ns=t + 3_000_000)
                recorder.add_gripper(1.0 if step % 2 else -1.0, log_time_ns=t + 3_000_000)
        recorder.stop(success=success)
        assert recorder.wait_idle(10.0)
    recorder.close()
    assert [r['state'] for r in finished] == ['saved'] * len(plan)
    return [r['path'] for r in finished]


PLAN = [('push-v3', 5, True), ('reach-v3', 7, False), ('push-v3', 4, True)]


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp('export')
    paths = record_dataset(root / 'episodes', PLAN)
    assert main([str(root / 'episodes'), '--robomimic', str(root / 'out' / 'demos.hdf5'),
                 '--zarr', str(root / 'out' / 'replay.zarr')]) == 0
    sources = [load_episode(p, image_size=None, joint_states=True) for p in paths]
    return root, sources


def test_robomimic_file_has_the_documented_layout_and_the_source_values(exported):
    root, sources = exported
    with h5py.File(root / 'out' / 'demos.hdf5', 'r') as f:
        data = f['data']
        assert sorted(data) == ['demo_0', 'demo_1', 'demo_2']
        assert data.attrs['total'] == sum(len(e) for e in sources) == 5 + 7 + 4
        env_args = json.loads(data.attrs['env_args'])
        assert env_args['env_name'] == 'active_finetune' and env_args['type'] == 2
        assert env_args['env_kwargs']['tasks'] == ['push-v3', 'reach-v3']
        assert json.loads(data.attrs['joint_names']) == JOINTS
        for i, episode in enumerate(sources):
            demo = data[f'demo_{i}']
            n = len(episode)
            assert demo.attrs['num_samples'] == n and demo.attrs['task'] == episode.task
            assert sorted(demo['obs']) == ['agentview_image', 'robot0_eef_pos',
                                           'robot0_gripper_opening', 'robot0_joint_pos']
            image = demo['obs/agentview_image']
            assert image.shape == (n, *SHAPE, 3) and image.dtype == np.uint8
            np.testing.assert_array_equal(image[()], episode.images)
            np.testing.assert_array_equal(image[0], frame(i, 0))  # raw: the recorded pixels
            np.testing.assert_allclose(demo['obs/robot0_eef_pos'][()], episode.proprio[:, :3],
                                       atol=1e-6)
            np.testing.assert_allclose(demo['obs/robot0_gripper_opening'][:, 0],
                                       episode.proprio[:, 3], atol=1e-6)
            joints = demo['obs/robot0_joint_pos'][()]
            assert joints.shape == (n, 3)
            np.testing.assert_allclose(joints[:, 0], 0.1 * np.arange(n))
            np.testing.assert_allclose(joints[:, 1], -0.2 * i)
            np.testing.assert_allclose(demo['next_obs/robot0_joint_pos'][:-1], joints[1:])
            np.testing.assert_array_equal(demo['next_obs/agentview_image'][-1], image[-1])
            actions = demo['actions'][()]
            assert actions.shape == (n, 4) and actions.dtype == np.float32
            np.testing.assert_array_equal(actions, episode.actions)
            np.testing.assert_allclose(actions[:, 0], 0.02 * np.arange(n) / 0.25, atol=1e-6)
            assert list(demo['dones'][()]) == [0] * (n - 1) + [1]
            assert list(demo['rewards'][()]) == [0.0] * (n - 1) + [float(episode.success)]
        assert [x.decode() for x in f['mask/push-v3'][()]] == ['demo_0', 'demo_2']
        assert [x.decode() for x in f['mask/successful'][()]] == ['demo_0', 'demo_2']


def test_zarr_replay_buffer_has_diffusion_policys_layout_and_the_source_values(exported):
    root, sources = exported
    store = zarr.open_group(str(root / 'out' / 'replay.zarr'), mode='r')
    assert json.loads((root / 'out' / 'replay.zarr' / '.zgroup').read_text()) == {
        'zarr_format': 2}  # diffusion_policy's zarr 2 format
    assert store['data/img'].compressor.cname == 'lz4'
    ends = store['meta/episode_ends'][:]
    assert list(ends) == list(np.cumsum([len(e) for e in sources])) == [5, 12, 16]
    img, state, action = store['data/img'], store['data/state'], store['data/action']
    assert img.shape == (16, *SHAPE, 3) and img.dtype == np.uint8
    assert state.shape == (16, 4) and action.shape == (16, 4)
    assert store['data/joint_pos'].shape == (16, 3)
    starts = [0, *ends[:-1]]
    for i, episode in enumerate(sources):
        rows = slice(starts[i], ends[i])
        np.testing.assert_array_equal(img[rows], episode.images)
        np.testing.assert_allclose(state[rows], episode.proprio, atol=1e-6)
        np.testing.assert_array_equal(action[rows], episode.actions)
        np.testing.assert_allclose(store['data/joint_pos'][rows],
                                   episode.joint_positions.astype(np.float32))
    assert store.attrs['task_names'] == ['push-v3', 'reach-v3']
    assert list(store['data/task_id'][:]) == [0] * 5 + [1] * 7 + [0] * 4


def test_successful_only_and_single_bags(exported, tmp_path):
    root, sources = exported
    listed = list_saved_episodes(root / 'episodes')
    bag = listed[1]['bag_path']
    assert main([bag, listed[2]['path'], '--zarr', str(tmp_path / 'two.zarr')]) == 0
    store = zarr.open_group(str(tmp_path / 'two.zarr'), mode='r')
    assert list(store['meta/episode_ends'][:]) == [7, 11]
    assert main([str(root / 'episodes'), '--successful-only',
                 '--robomimic', str(tmp_path / 'ok.hdf5')]) == 0
    with h5py.File(tmp_path / 'ok.hdf5', 'r') as f:
        assert sorted(f['data']) == ['demo_0', 'demo_1']
        assert f['data'].attrs['total'] == 9
        assert f['data/demo_1'].attrs['source'] == listed[2]['path']
        assert f['data/demo_1'].attrs['sha256'] == listed[2]['sha256']
    with pytest.raises(SystemExit):
        main([str(root / 'episodes')])  # no output asked for
    assert Path(root / 'out' / 'demos.hdf5').stat().st_size > 0
