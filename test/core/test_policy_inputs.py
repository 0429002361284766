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
