from active_finetune.policy.model import (
    gaussian_nll, ObservationBatch, PolicyConfig, TaskPolicy, with_adaptive_prior)
import pytest
import torch

TASKS = ('reach-v3', 'push-v3', 'door-open-v3')


def tiny_image_config(**kw):
    return PolicyConfig(tasks=TASKS, observation='image', image_size=32,
                        conv_channels=(4, 4, 4, 4), hidden_dim=16, feature_dim=8, **kw)


def image_batch(n=5, size=32):
    g = torch.Generator().manual_seed(0)
    return ObservationBatch(task_ids=torch.arange(n) % len(TASKS),
                            proprio=torch.randn(n, 4, generator=g),
                            images=torch.randint(0, 255, (n, size, size, 3), dtype=torch.uint8,
                                                 generator=g))


def test_forward_shapes_and_ranges():
    torch.manual_seed(0)
    policy = TaskPolicy(tiny_image_config())
    mean, log_std, features = policy(image_batch())
    assert mean.shape == (5, 4) and log_std.shape == (5, 4) and features.shape == (5, 8)
    assert mean.abs().max() <= 1.0


def test_state_variant_has_the_same_interface():
    policy = TaskPolicy(PolicyConfig(tasks=TASKS, observation='state', hidden_dim=16,
                                     feature_dim=8))
    batch = ObservationBatch(task_ids=torch.tensor([0, 2]), proprio=torch.zeros(2, 4),
                             states=torch.randn(2, 39))
    mean, _, features = policy(batch)
    assert mean.shape == (2, 4) and features.shape == (2, 8)
    assert policy.loss_gradient_embeddings(batch).shape == (2, 4 * 9)
    with pytest.raises(ValueError, match='states'):
        policy(ObservationBatch(task_ids=torch.tensor([0]), proprio=torch.zeros(1, 4)))


def test_loss_gradient_embedding_matches_autograd_expectation():
    """
    The closed form equals the average of sampled-label gradient kernels.

    The labels are sampled with common random numbers.
    """
    torch.manual_seed(0)
    policy = TaskPolicy(tiny_image_config())
    batch = image_batch(3)
    emb = policy.loss_gradient_embeddings(batch).detach()
    samples = 4000
    eps = torch.randn(samples, 4, generator=torch.Generator().manual_seed(1))
    grads = []
    for i in range(3):
        single = ObservationBatch(task_ids=batch.task_ids[i:i + 1], proprio=batch.proprio[i:i + 1],
                                  images=batch.images[i:i + 1])
        per_sample = []
        mean, log_std, _ = policy(single)
        for k in range(0, samples, 400):
            label = (mean + log_std.exp() * eps[k:k + 400]).detach()
            for j in range(len(label)):
                policy.zero_grad()
                m, s, _ = policy(single)
                gaussian_nll(m, s, label[j:j + 1]).sum().backward()
                w = policy.net.head.linear.weight.grad[:4].clone()
                b = policy.net.head.linear.bias.grad[:4].clone()
                per_sample.append(torch.cat([w, b.unsqueeze(1)], 1).flatten())
            if len(per_sample) >= 400:
                break
        grads.append(torch.stack(per_sample))
    kernel_mc = (grads[0] * grads[1]).sum(1).mean()
    kernel_closed = (emb[0] * emb[1]).sum()
    assert torch.isclose(kernel_mc, kernel_closed, rtol=0.15, atol=1e-3 * emb.norm() ** 2)


def test_adaptive_prior_starts_equal_to_the_pretrained_policy():
    torch.manual_seed(0)
    policy = TaskPolicy(tiny_image_config())
    mixed = with_adaptive_prior(policy)
    batch = image_batch()
    with torch.no_grad():
        torch.testing.assert_close(policy(batch)[0], mixed(batch)[0])
    assert not any(p.requires_grad for p in mixed.prior.parameters())


def test_config_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="'video'"):
        PolicyConfig(tasks=TASKS, observation='video')
    with pytest.raises(ValueError, match='duplicate'):
        PolicyConfig(tasks=('a', 'a'))
    with pytest.raises(KeyError, match='nope'):
        tiny_image_config().task_id('nope')
