"""The policy's proprioception, built by one function for the policy node and the loader."""

from active_finetune.policy.inputs import proprio_from_robot
import numpy as np
import pytest


def test_one_sample_and_a_batch_give_position_and_clipped_opening():
    single = proprio_from_robot((0.4, -0.1, 0.2), 0.05, 0.1)
    assert single.dtype == np.float32 and single.shape == (4,)
    np.testing.assert_allclose(single, [0.4, -0.1, 0.2, 0.5], atol=1e-7)
    batch = proprio_from_robot([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.1, 0.1, 0.1]],
                               [-0.01, 0.3, 0.08], 0.08)
    np.testing.assert_allclose(batch, [[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 1.0],
                                       [0.1, 0.1, 0.1, 1.0]], atol=1e-7)


def test_bad_inputs_are_refused_with_the_offending_value():
    with pytest.raises(ValueError, match='gripper_open_position.*0.0'):
        proprio_from_robot((0.0, 0.0, 0.0), 0.05, 0.0)
    with pytest.raises(ValueError, match=r'\(2,\)'):
        proprio_from_robot((0.0, 0.0), 0.05, 0.1)
    with pytest.raises(ValueError, match=r'\(2,\)'):
        proprio_from_robot([[0.0, 0.0, 0.0]], [0.05, 0.06], 0.1)


def test_a_frame_resized_at_the_source_gives_the_action_of_the_full_frame():
    """camera/image_policy carries resize_image(frame): the runner acts on it as on the frame."""
    import torch
    from active_finetune.policy.inputs import resize_image
    from active_finetune.policy.model import PolicyConfig, TaskPolicy
    from active_finetune.policy.inference import PolicyInference
    torch.manual_seed(0)
    runner = PolicyInference(TaskPolicy(PolicyConfig(
        tasks=('reach-v3', 'push-v3'), image_size=24, conv_channels=(4, 4), hidden_dim=16,
        feature_dim=8, task_embedding_dim=4)))
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    small = resize_image(frame, 24)
    assert small.shape == (24, 24, 3) and resize_image(small, 24) is small
    proprio = proprio_from_robot((0.0, 0.6, 0.2), 0.05, 0.1)
    full_action = runner.act('push-v3', proprio, image=frame)
    np.testing.assert_array_equal(runner.act('push-v3', proprio, image=small), full_action)
    other = runner.act('push-v3', proprio, image=resize_image(frame[::-1], 24))
    assert not np.array_equal(other, full_action), 'the image matters to the action'
