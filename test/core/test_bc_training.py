from active_finetune.data.episode import Episode
from active_finetune.policy.model import PolicyConfig, TaskPolicy
from active_finetune.training.bc import (
    DemoDataset, EmptyDatasetError, fit_normalisation, random_shift, train_bc, TrainConfig)
import numpy as np
import pytest
import torch

TASKS = ('reach-v3', 'push-v3', 'door-open-v3')


def synthetic_episode(task, seed, length=20):
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(length, 39)).astype(np.float32)
    target = {'reach-v3': 0.5, 'push-v3': -0.5, 'door-open-v3': 0.0}[task]
    actions = np.clip(np.tanh(states[:, :4]) * 0.2 + target, -1, 1)
    return Episode(task=task, proprio=states[:, :4], actions=actions, states=states)


def state_policy():
    torch.manual_seed(0)
    return TaskPolicy(PolicyConfig(tasks=TASKS, observation='state', hidden_dim=32,
                                   feature_dim=16))


def test_training_reduces_error_and_is_deterministic():
    episodes = [synthetic_episode('reach-v3', i) for i in range(4)] + \
        [synthetic_episode('push-v3', 10 + i) for i in range(4)]
    policy = state_policy()
    dataset = DemoDataset(episodes, policy.config)
    fit_normalisation(policy, dataset)
    config = TrainConfig(steps=150, batch_size=32, forgetting_control='none', seed=3)
    a, metrics_a = train_bc(policy, dataset, config)
    b, metrics_b = train_bc(policy, dataset, config)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, msg=k)
    with torch.no_grad():
        batch, target = dataset.batch(np.arange(len(dataset)), 'cpu')
        before = (policy(batch)[0] - target).pow(2).mean()
        after = (a(batch)[0] - target).pow(2).mean()
    assert after < 0.5 * before


def test_adaptive_prior_keeps_unseen_tasks_on_the_pretrained_policy():
    policy = state_policy()
    episodes = [synthetic_episode('reach-v3', i) for i in range(4)]
    dataset = DemoDataset(episodes, policy.config)
    tuned, metrics = train_bc(policy, dataset, TrainConfig(steps=300, batch_size=32, seed=0))
    alpha = metrics['alpha']
    assert alpha['reach-v3'] > 0.5 > alpha['push-v3']
    assert alpha['push-v3'] < 0.1 and alpha['door-open-v3'] < 0.1
    unseen = synthetic_episode('push-v3', 99)
    unseen_set = DemoDataset([unseen], policy.config)
    with torch.no_grad():
        batch, _ = unseen_set.batch(np.arange(len(unseen_set)), 'cpu')
        drift = (tuned(batch)[0] - policy(batch)[0]).abs().max()
    assert drift < 0.1


def test_l2_init_and_validation():
    policy = state_policy()
    dataset = DemoDataset([synthetic_episode('reach-v3', 0)], policy.config)
    tuned, _ = train_bc(policy, dataset,
                        TrainConfig(steps=20, batch_size=8, forgetting_control='l2_init'))
    assert not tuned.config.adaptive_prior
    with pytest.raises(ValueError, match="'bogus'"):
        TrainConfig(forgetting_control='bogus')
    with pytest.raises(EmptyDatasetError):
        DemoDataset([], policy.config)


def test_random_shift_keeps_shape_and_moves_content():
    images = torch.zeros(2, 16, 16, 3, dtype=torch.uint8)
    images[:, 8, 8] = 255
    shifted = random_shift(images, 4, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    assert shifted.sum() == images.sum()


def test_held_out_frames_are_never_trained_on_and_their_loss_is_reported():
    from active_finetune.training import bc
    episodes = [synthetic_episode('reach-v3', i) for i in range(4)]
    policy = state_policy()
    dataset = DemoDataset(episodes, policy.config)
    fit_normalisation(policy, dataset)
    train_rows, val_rows = bc.split_rows(len(dataset), 0.25, np.random.default_rng(3))
    assert len(val_rows) == 20 and not set(train_rows) & set(val_rows)
    assert sorted([*train_rows, *val_rows]) == list(range(len(dataset)))
    sampled = []
    original = dataset.batch

    def spy(idx, device):
        sampled.append([int(i) for i in idx])
        return original(idx, device)

    dataset.batch = spy
    logged = []
    config = TrainConfig(steps=120, batch_size=16, forgetting_control='none', loss='mse',
                         seed=3, validation_fraction=0.25)
    tuned, metrics = train_bc(policy, dataset, config,
                              log_fn=lambda step, m: logged.append(m))
    # Training batches (16 rows) draw from the training rows only; the validation passes read
    # exactly the validation rows.
    _, val_expected = bc.split_rows(len(dataset), 0.25, np.random.default_rng(3))
    training = [rows for rows in sampled if len(rows) == 16]
    passes = [rows for rows in sampled if len(rows) != 16]
    assert len(training) == 120
    assert not set(val_expected) & {i for rows in training for i in rows}
    assert passes and all(rows == list(val_expected) for rows in passes)
    assert metrics['val_rows'] == 20
    assert metrics['val_mse'] < metrics['val_mse_start']
    with torch.no_grad():
        batch, target = original(val_expected, 'cpu')
        direct = float((tuned(batch)[0] - target).pow(2).sum(-1).mean())
    assert metrics['val_mse'] == pytest.approx(direct, rel=1e-5)
    assert all('val_mse' in m for m in logged)


def test_no_validation_leaves_training_unchanged_for_a_seed():
    episodes = [synthetic_episode('push-v3', i) for i in range(3)]
    policy = state_policy()
    dataset = DemoDataset(episodes, policy.config)
    fit_normalisation(policy, dataset)
    base = {'steps': 50, 'batch_size': 16, 'forgetting_control': 'none', 'seed': 5}
    a, metrics = train_bc(policy, dataset, TrainConfig(**base))
    b, _ = train_bc(policy, dataset, TrainConfig(**base, validation_fraction=0.0))
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, msg=k)
    assert 'val_mse' not in metrics
    with pytest.raises(ValueError, match='validation_fraction'):
        TrainConfig(validation_fraction=1.0)


def test_mse_fine_tuning_fits_the_executed_mean_better_than_nll_from_few_demos():
    pretrain = [synthetic_episode('reach-v3', i) for i in range(4)]
    policy = state_policy()
    data = DemoDataset(pretrain, policy.config)
    fit_normalisation(policy, data)
    policy, _ = train_bc(policy, data, TrainConfig(steps=200, batch_size=32, seed=0,
                                                   forgetting_control='none'))
    new = DemoDataset([synthetic_episode('door-open-v3', 50 + i) for i in range(2)],
                      policy.config)
    errors = {}
    for loss in ('nll', 'mse'):
        tuned, metrics = train_bc(policy, new, TrainConfig(steps=100, batch_size=16, seed=1,
                                                           loss=loss))
        errors[loss] = metrics['mse']
    assert errors['mse'] < errors['nll']


def image_episode_with_states(task, seed, length=24):
    """Episode whose image shows a bright square at the position given by state dims 4 and 5."""
    rng = np.random.default_rng(seed)
    states = np.zeros((length, 39), dtype=np.float32)
    states[:, 4:6] = rng.uniform(-1, 1, size=(length, 2))
    images = np.zeros((length, 32, 32, 3), dtype=np.uint8)
    for t, (x, y) in enumerate(states[:, 4:6]):
        col, row = int((x + 1) * 13), int((y + 1) * 13)
        images[t, row:row + 4, col:col + 4] = 255
    proprio = rng.normal(size=(length, 4)).astype(np.float32)
    actions = np.clip(states[:, [4, 5, 4, 5]], -1, 1)
    return Episode(task=task, proprio=proprio, actions=actions, images=images, states=states)


def test_state_auxiliary_loss_trains_a_head_that_is_not_kept():
    torch.manual_seed(0)
    policy = TaskPolicy(PolicyConfig(tasks=TASKS, observation='image', image_size=32,
                                     conv_channels=(8, 8, 8, 8), hidden_dim=32, feature_dim=16))
    episodes = [image_episode_with_states('reach-v3', i) for i in range(6)]
    dataset = DemoDataset(episodes, policy.config, keep_states=True)
    fit_normalisation(policy, dataset)
    logged = []
    config = TrainConfig(steps=201, batch_size=32, forgetting_control='none', loss='mse',
                         image_shift_px=0, state_aux_weight=1.0)
    trained, metrics = train_bc(policy, dataset, config,
                                log_fn=lambda step, m: logged.append(m['state_aux_loss']))
    # Only the two varying state dimensions are targets; their normalised error falls.
    assert logged[-1] < 0.5 * logged[0]
    assert set(trained.state_dict()) == set(policy.state_dict())
    assert not trained.net.backbone.encoder._forward_hooks
    with pytest.raises(ValueError, match='keep_states=True'):
        train_bc(policy, DemoDataset(episodes, policy.config), config)


def test_state_auxiliary_loss_needs_states_in_every_episode():
    policy = TaskPolicy(PolicyConfig(tasks=TASKS, observation='image', image_size=32,
                                     conv_channels=(8, 8, 8, 8)))
    episode = image_episode_with_states('reach-v3', 0)
    episode.states = None
    with pytest.raises(ValueError, match='have no states'):
        DemoDataset([episode], policy.config, keep_states=True)


def test_cosine_schedule_decays_the_learning_rate_to_zero():
    episodes = [synthetic_episode('reach-v3', i) for i in range(2)]
    policy = state_policy()
    dataset = DemoDataset(episodes, policy.config)
    seen = {}
    for schedule in ('constant', 'cosine'):
        log = {}
        train_bc(policy, dataset, TrainConfig(steps=201, batch_size=8, lr_schedule=schedule,
                                              forgetting_control='none'),
                 log_fn=lambda step, metrics: log.__setitem__(step, metrics['lr']))
        seen[schedule] = log
    assert seen['constant'] == {0: 3e-4, 100: 3e-4, 200: 3e-4}
    cosine = seen['cosine']
    assert cosine[0] < 3e-4 and abs(cosine[100] - 1.5e-4) < 1e-5 and cosine[200] < 1e-9
    with pytest.raises(ValueError, match='lr_schedule'):
        TrainConfig(lr_schedule='linear')


def test_weight_average_is_the_exponential_average_of_the_iterates():
    episodes = [synthetic_episode('reach-v3', i) for i in range(3)]
    policy = state_policy()
    dataset = DemoDataset(episodes, policy.config)
    fit_normalisation(policy, dataset)
    base = {'batch_size': 16, 'forgetting_control': 'none', 'seed': 5}
    first, _ = train_bc(policy, dataset, TrainConfig(steps=1, **base))
    second, _ = train_bc(policy, dataset, TrainConfig(steps=2, **base))
    averaged, _ = train_bc(policy, dataset, TrainConfig(steps=2, ema_decay=0.75, **base))
    # The average starts at the first iterate, then mixes in the second with weight 1 - decay.
    moved = 0
    for (key, w1), w2, avg in zip(first.net.state_dict().items(),
                                  second.net.state_dict().values(),
                                  averaged.net.state_dict().values()):
        torch.testing.assert_close(avg, 0.75 * w1 + 0.25 * w2, msg=key)
        moved += int(not torch.equal(w1, w2))
    assert moved > 0, 'the second step changed nothing: the check would be empty'
    with pytest.raises(ValueError, match='ema_decay'):
        TrainConfig(ema_decay=1.0)
