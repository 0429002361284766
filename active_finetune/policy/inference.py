"""Inference wrapper: owns device moves, resizing and batching; callers hand it an observation."""

from active_finetune.policy.inputs import resize_image
from active_finetune.policy.model import ObservationBatch
import numpy as np
import torch


def select_device(name):
    """
    Resolve a device name.

    :param name: 'auto', 'cpu' or 'cuda' (or 'cuda:N')
    :return: torch.device; 'auto' picks CUDA when present
    :raises ValueError: for an unknown name or 'cuda' without a GPU
    """
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cpu':
        return torch.device('cpu')
    if name.startswith('cuda'):
        if not torch.cuda.is_available():
            raise ValueError(f'device {name!r} requested but CUDA is not available')
        return torch.device(name)
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {name!r}")


class PolicyInference:
    """
    Run a :class:`TaskPolicy` on single observations or batches and return numpy actions.

    :param policy: the policy
    :param device: torch device
    """

    def __init__(self, policy, device=torch.device('cpu')):
        self.policy = policy.to(device).eval()
        self.device = device
        self.config = policy.config

    def make_batch(self, task_ids, proprio, images=None, states=None):
        """
        Build a tensor batch from numpy arrays, resizing images to the policy's input size.

        :param task_ids: (B,) int
        :param proprio: (B, 4)
        :param images: (B, H, W, 3) uint8 or None
        :param states: (B, D) or None
        :return: :class:`ObservationBatch` on the runner's device
        """
        if self.config.observation == 'image':
            images = np.stack([resize_image(im, self.config.image_size) for im in images])
            images = torch.from_numpy(images)
            states = None
        else:
            images = None
            states = torch.as_tensor(np.asarray(states, dtype=np.float32))
        batch = ObservationBatch(task_ids=torch.as_tensor(np.asarray(task_ids), dtype=torch.long),
                                 proprio=torch.as_tensor(np.asarray(proprio, dtype=np.float32)),
                                 images=images, states=states)
        return batch.to(self.device)

    def act(self, task, proprio, image=None, state=None):
        """
        Mean action for one observation.

        :param task: task name
        :param proprio: (4,)
        :param image: (H, W, 3) uint8 for image policies
        :param state: (D,) for state policies
        :return: (4,) float32 action (not yet clamped; callers sanitise)
        :raises KeyError: for a task the policy does not know
        """
        task_id = self.config.task_id(task)
        batch = self.make_batch([task_id], [proprio], None if image is None else [image],
                                None if state is None else [state])
        with torch.inference_mode():
            mean, _, _ = self.policy(batch)
        return mean[0].float().cpu().numpy()
