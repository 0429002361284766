"""
The policy's robot inputs, built the same way everywhere (ROS-free).

The policy node (live inputs) and the episode loader (recorded inputs) both call
:func:`proprio_from_robot`, so a demonstration recorded through ROS gives the network exactly the
proprioception it sees at inference.  :func:`resize_image` is the policy's image resize: the
runner applies it to every image, and the camera node and the sim bridge publish their
policy-resolution stream (``camera/image_policy``) through it, so a frame resized at the source
is the very array the runner would have made from the full frame.
"""

import math

from active_finetune.data.episode import PROPRIO_DIM
import cv2
import numpy as np

POLICY_IMAGE_TOPIC = 'camera/image_policy'
"""Policy-resolution stream of the camera node and the sim bridge (resized at the source)."""
FULL_IMAGE_TOPIC = 'camera/image_raw'
"""Full-resolution stream: what the recorder keeps (a lab driver's topic is remapped onto it)."""


def resize_image(image, size):
    """
    Resize an RGB image to ``size`` x ``size`` with area interpolation.

    A no-op if the image already has that size.

    :param image: (H, W, 3) uint8
    :param size: side in pixels
    :return: (size, size, 3) uint8
    """
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


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
