"""
The policy node's parameters (ROS-free, so the graph checks them without ROS).

:class:`PolicyNodeSettings` is :class:`active_finetune.policy.hot_swap.PolicyNodeConfig` plus the
camera topics: the policy subscribes the policy-resolution stream ``camera/image_policy`` that the
camera node and the sim bridge publish (each frame area-resized at the source, same stamp as the
full frame), and falls back to the full-resolution ``camera/image_raw`` while nothing publishes the
policy stream (a lab's own camera driver, Gazebo's bridge, a played bag).  The policy resizes
whatever arrives to its input size, so either topic gives the same action for the same frame.
"""

from dataclasses import dataclass, field

from active_finetune.policy.hot_swap import PolicyNodeConfig
from active_finetune.policy.inputs import FULL_IMAGE_TOPIC, POLICY_IMAGE_TOPIC


@dataclass
class PolicyNodeSettings(PolicyNodeConfig):
    """
    Parameters of the policy node: those of :class:`PolicyNodeConfig` and its image topics.

    :param image_topic: the camera topic the policy acts on
    :param fallback_image_topic: subscribed only while ``image_topic`` has no publisher
        ('' = never)
    """

    image_topic: str = field(default=POLICY_IMAGE_TOPIC, metadata={
        'description': 'camera topic the policy acts on: camera/image_policy (the camera '
                       "node's and sim bridge's frames resized at the source to the policy's "
                       'input size) or camera/image_raw (full resolution, resized by the policy)',
        'read_only': True})
    fallback_image_topic: str = field(default=FULL_IMAGE_TOPIC, metadata={
        'description': 'camera topic subscribed only while image_topic has no publisher (a '
                       "lab's own camera driver, Gazebo); it is dropped as soon as image_topic "
                       "has one ('' = no fallback)", 'read_only': True})

    def __post_init__(self):
        super().__post_init__()
        if not self.image_topic:
            raise ValueError('image_topic must not be empty')
        if self.fallback_image_topic == self.image_topic:
            raise ValueError(f'fallback_image_topic must differ from image_topic '
                             f'({self.image_topic!r}); an empty one means no fallback')
