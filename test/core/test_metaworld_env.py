from active_finetune.sim.metaworld_env import (
    available_tasks, MetaWorldEnv, MT10_TASKS, SimConfig, UnknownTaskError, validate_tasks)
from active_finetune.sim.operators import ScriptedOperator
import numpy as np
import pytest


@pytest.fixture(scope='module')
def image_env():
    with MetaWorldEnv(SimConfig(image_size=32, max_steps=60)) as env:
        yield env


def test_reset_is_deterministic_per_seed(image_env):
    a = image_env.reset('push-v3', seed=7)
    b = image_env.reset('push-v3', seed=7)
    c = image_env.reset('push-v3', seed=8)
    np.testing.assert_array_equal(a.state, b.state)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.state, c.state)


@pytest.mark.parametrize('task', ['push-v3', 'reach-v3'])
def test_first_frame_shows_the_goal_of_its_own_scene(image_env, task):
    # Meta-World places the goal site after the reset's last kinematics pass; the first image
    # was rendered with the goal of an earlier scene.
    for seed in (1, 2, 3):
        obs = image_env.reset(task, seed=seed)
        data = image_env._env.data
        drawn = data.site_xpos[image_env._env.model.site('goal').id]
        np.testing.assert_allclose(drawn, obs.state[36:39], atol=1e-6)


def test_observation_shapes(image_env):
    obs = image_env.reset('reach-v3', seed=0)
    assert obs.image.shape == (32, 32, 3) and obs.image.dtype == np.uint8
    assert obs.proprio.shape == (4,) and obs.state.shape == (39,)
    np.testing.assert_allclose(obs.proprio[:3], obs.state[:3])
    assert obs.image.std() > 5, 'rendered image is blank'


def test_success_is_detected_and_ends_episode(image_env):
    obs = image_env.reset('reach-v3', seed=1)
    operator = ScriptedOperator('reach-v3')
    done = success = False
    steps = 0
    while not done:
        obs, success, done = image_env.step(operator.act(obs.state))
        steps += 1
    assert success and steps < 60


def test_zero_actions_do_not_succeed_and_hit_horizon(image_env):
    image_env.reset('push-v3', seed=2)
    done = success = False
    steps = 0
    while not done:
        _, success, done = image_env.step(np.zeros(4))
        steps += 1
    assert not success and steps == 60


def test_step_clips_and_rejects_nan_actions(image_env):
    obs0 = image_env.reset('reach-v3', seed=3)
    obs, _, _ = image_env.step(np.array([np.nan, 5.0, -5.0, 0.0]))
    assert np.isfinite(obs.state).all()
    assert not np.array_equal(obs.proprio, obs0.proprio)


def test_state_only_mode_has_no_image():
    with MetaWorldEnv(SimConfig(image_size=0)) as env:
        assert env.reset('reach-v3', 0).image is None


def test_unknown_task_is_refused_with_the_valid_names():
    with pytest.raises(UnknownTaskError, match='no-such-task'):
        validate_tasks(['no-such-task'])
    assert set(MT10_TASKS) <= set(available_tasks())


def test_step_before_reset_raises():
    with MetaWorldEnv(SimConfig(image_size=0)) as env, pytest.raises(RuntimeError):
        env.step(np.zeros(4))


@pytest.mark.parametrize('task', MT10_TASKS)
def test_every_scripted_operator_reaches_success(task):
    with MetaWorldEnv(SimConfig(image_size=0, max_steps=200)) as env:
        for seed in range(2):
            obs = env.reset(task, seed)
            operator = ScriptedOperator(task, noise_std=0.05, seed=seed)
            done = success = False
            while not done:
                obs, success, done = env.step(operator.act(obs.state))
            assert success, f'{task} expert failed from seed {seed}'


def test_workspace_camera_frames_the_table_closer_than_corner3():
    images, fovy = {}, {}
    for camera in ('corner3', 'workspace'):
        with MetaWorldEnv(SimConfig(image_size=48, camera=camera, max_steps=5)) as env:
            images[camera] = env.reset('reach-v3', 3).image
            fovy[camera] = env.camera_fovy_deg()
    assert images['workspace'].shape == (48, 48, 3)
    assert images['workspace'].std() > 10
    assert np.abs(images['workspace'].astype(int) - images['corner3']).mean() > 10
    assert 10 < fovy['workspace'] < 120 and 10 < fovy['corner3'] < 120
