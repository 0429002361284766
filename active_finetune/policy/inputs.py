"""
The policy's robot inputs, built the same way everywhere (ROS-free).

The policy node (live inputs) and the episode loader (recorded inputs) both call
:func:`proprio_from_robot`, so a demonstration recorded through ROS gives the network exactly the
proprioception it sees at inference.
"""

import math

from active_finetune.data.episode import PROPRIO_DIM
import numpy as np


def proprio_from_robot(ee_position_m, gripper_position, gripper_open_position):
    """
    Build the policy's proprioception from what the robot reports.

    Works on one sample or on a batch: ``ee_position_m`` (..., 3) with ``gripper_position`` (...).

    :param ee_position_m: end-effector position x, y, z in the base frame (m), shape (..., 3)
    :param gripper_position: position of the gripper joint (m or rad), shape (...)
    :param gripper_open_position: that joint's position when fully open (> 0)
    :return: float32 array (..., PROPRIO_DIM): x, y, z and the gripper opening
        ``gripper_position / gripper_open_position`` clipped to [0, 1]
    :raises ValueError: for a non-positive open position or shapes that do not fit
    """
    open_position = float(gripper_open_position)
    if not (math.isfinite(open_position) and open_position > 0.0):
        raise ValueError(f'gripper_open_position must be a positive finite number, '
                         f'got {gripper_open_position!r}')
    position = np.asarray(ee_position_m, dtype=np.float64)
    opening = np.asarray(gripper_position, dtype=np.float64)
    if position.shape[-1:] != (3,) or opening.shape != position.shape[:-1]:
        raise ValueError(f'expected ee_position_m of shape (..., 3) and gripper_position of '
                         f'shape (...), got {position.shape} and {opening.shape}')
    proprio = np.empty(position.shape[:-1] + (PROPRIO_DIM,), dtype=np.float32)
    proprio[..., :3] = position
    proprio[..., 3] = np.clip(opening / open_position, 0.0, 1.0)
    return proprio
