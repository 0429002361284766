from active_finetune.amf.embeddings import embed, importance_weights, StateRows, subsample_episode
from active_finetune.amf.targets import build_embeddings, TargetConfig, task_state_sets
from active_finetune.data.episode import Episode
from active_finetune.policy.inference import PolicyInference
from active_finetune.policy.model import PolicyConfig, TaskPolicy
import numpy as np
import pytest
import torch

TASKS = ('reach-v3', 'push-v3', 'door-open-v3')


def episode(task, seed, length=30):
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(length, 39)).astype(np.float32)
    return Episode(task=task, proprio=states[:, :4], actions=np.tanh(states[:, 4:8]),
                   states=states)


@pytest.fixture(scope='module')
def runner():
    torch.manual_seed(0)
    return PolicyInference(TaskPolicy(PolicyConfig(tasks=TASKS, observation='state',
                                                   hidden_dim=16, feature_dim=8)))


def test_importance_weights_are_normalised_clipped_and_finite():
    w = importance_weights([0.0, 50.0, -50.0, 0.0], max_weight=0.5)
    assert np.isclose(w.sum(), 1.0) and w.max() <= 0.5 + 1e-12 and np.isfinite(w).all()
    assert w[1] == pytest.approx(0.5)
    assert importance_weights([]).shape == (0,)
    with pytest.raises(ValueError, match='NaN'):
        importance_weights([np.nan, 0.0])


def test_subsample_spreads_over_the_episode():
    e = episode('reach-v3', 0, length=100)
    rows = subsample_episode(e, 10, np.random.default_rng(0))
    assert len(rows) == 10
    idx = [int(np.where((e.proprio == p).all(1))[0][0]) for p in rows.proprio]
    assert idx == sorted(idx) and idx[-1] - idx[0] >= 80


def test_embeddings_have_the_documented_sizes(runner):
    rows = StateRows(np.zeros((5, 4)), states=np.zeros((5, 39)))
    assert embed(runner, 'push-v3', rows, 'features').shape == (5, 8)
    assert embed(runner, 'push-v3', rows, 'loss_gradient').shape == (5, 4 * 9)
    with pytest.raises(ValueError, match='embedding'):
        embed(runner, 'push-v3', rows, 'pixels')


def test_state_sets_mix_rollouts_and_weighted_demos(runner):
    demos = [episode('reach-v3', 1), episode('push-v3', 2)]
    rollouts = {'door-open-v3': [episode('door-open-v3', 3)]}
    sets = task_state_sets(runner, TASKS, demos, rollouts, TargetConfig(states_per_trajectory=5))
    door = sets['door-open-v3']
    assert door.sources == {'rollouts': 5, 'demos': 10}
    assert np.isclose(door.weights.sum(), 1.0) and (door.weights >= 0).all()
    assert np.isclose(door.weights[:5].sum(), 0.5)
    assert np.isclose(sets['reach-v3'].weights.sum(), 1.0)


def test_build_embeddings_scales_targets_to_unit_mean_square(runner):
    demos = [episode('reach-v3', 1), episode('push-v3', 2)]
    out = build_embeddings(runner, TASKS, demos, {}, TargetConfig(states_per_trajectory=5,
                                                                  candidate_states=4))
    all_t = np.concatenate([phi for phi, _ in out['targets'].values()])
    assert np.isclose((all_t ** 2).sum(1).mean(), 1.0)
    assert all(phi.shape == (4, 36) for phi in out['candidates'].values())
    assert out['demos'].shape == (10, 36)


def test_no_sources_gives_empty_sets(runner):
    out = task_state_sets(runner, TASKS, [], {}, TargetConfig())
    assert all(len(s.rows) == 0 for s in out.values())


def test_clipped_importance_weights_stay_finite_when_others_underflow():
    weights = importance_weights([0.0, -2000.0, -3000.0], max_weight=0.5)
    assert np.all(np.isfinite(weights)) and weights.sum() == pytest.approx(1.0)
    assert weights.max() == pytest.approx(0.5) and weights[1] == pytest.approx(weights[2])
