"""
Policy checkpoints: a directory holding ``model.safetensors`` and ``config.json``.

``config.json`` describes the policy fully (architecture, task list, normalisation lives in the
weights as buffers, training provenance) and records the sha256 of ``model.safetensors``.
Loading verifies the hash and the architecture; pickles are never loaded.
"""

import hashlib
import json
import logging
from pathlib import Path
import time

from active_finetune.atomic_io import atomic_directory
from active_finetune.policy.model import PolicyConfig, TaskPolicy
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
import torch

_LOG = logging.getLogger(__name__)

WEIGHTS_FILE = 'model.safetensors'
CONFIG_FILE = 'config.json'
FORMAT_VERSION = 1
_PICKLE_MAGIC = (b'\x80', b'PK\x03\x04')


class CheckpointError(RuntimeError):
    """Raised for a checkpoint that is missing, truncated, corrupt, mismatched or pickled."""


def sha256_bytes(data):
    """
    Hash bytes.

    :param data: bytes
    :return: hex sha256 digest
    """
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(policy, path, provenance=None):
    """
    Write ``policy`` atomically as a new checkpoint directory.

    :param policy: a :class:`TaskPolicy`
    :param path: directory to create; must not exist
    :param provenance: JSON-serialisable dict describing how the weights were made
    :return: the sha256 of the weights file
    :raises FileExistsError: if ``path`` exists
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    weights = save_safetensors_bytes(tensors)
    digest = sha256_bytes(weights)
    config = {
        'format_version': FORMAT_VERSION,
        'policy': policy.config.to_dict(),
        'weights_sha256': digest,
        'created_unix_s': time.time(),
        'provenance': provenance or {},
    }
    with atomic_directory(path) as tmp:
        (tmp / WEIGHTS_FILE).write_bytes(weights)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    _LOG.info('saved checkpoint %s (sha256 %s)', path, digest[:12])
    return digest


def read_checkpoint_config(path):
    """
    Read and check a checkpoint's ``config.json``.

    :param path: checkpoint directory
    :return: the parsed config dict
    :raises CheckpointError: if it is missing or malformed
    """
    path = Path(path)
    if path.is_file():
        raise CheckpointError(f'{path} is a file; a checkpoint is a directory with {WEIGHTS_FILE} '
                              f'and {CONFIG_FILE} (pickled .pt/.pth files are refused)')
    config_path = path / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f'checkpoint {path} has no {CONFIG_FILE}') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f'checkpoint {config_path} is not valid JSON: {exc}') from None
    if not isinstance(config, dict) or config.get('format_version') != FORMAT_VERSION:
        raise CheckpointError(
            f'checkpoint {config_path} has format_version '
            f'{config.get("format_version") if isinstance(config, dict) else None!r}, '
            f'expected {FORMAT_VERSION}')
    for key in ('policy', 'weights_sha256'):
        if key not in config:
            raise CheckpointError(f'checkpoint {config_path} lacks {key!r}')
    return config


def pretraining_counts(config):
    """
    Demos per task the checkpoint was pretrained on, as its provenance records them.

    :param config: a checkpoint's config dict (:func:`read_checkpoint_config`)
    :return: dict task -> count, or None when the checkpoint records no mix
    """
    mix = config.get('provenance', {}).get('mix')
    return {str(t): int(n) for t, n in mix.items()} if isinstance(mix, dict) else None


def load_checkpoint(path, expected_sha256=None, device='cpu'):
    """
    Load a checkpoint, verifying hash and architecture.

    :param path: checkpoint directory
    :param expected_sha256: if given, the weights must have this hash (e.g. from an announcement)
    :param device: torch device for the weights
    :return: (policy in eval mode, config dict)
    :raises CheckpointError: on any missing, truncated, corrupt, mismatched or pickled content
    """
    path = Path(path)
    config = read_checkpoint_config(path)
    try:
        weights = (path / WEIGHTS_FILE).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f'checkpoint {path} has no {WEIGHTS_FILE}') from None
    return policy_from_bytes(weights, config, expected_sha256, device, source=str(path)), config


def policy_from_bytes(weights, config, expected_sha256=None, device='cpu', source='<bytes>'):
    """
    Rebuild a policy from weight bytes and a checkpoint config.

    Used for checkpoints sent over DDS.

    :param weights: contents of ``model.safetensors``
    :param config: the checkpoint's config dict
    :param expected_sha256: hash the weights must have, if given
    :param device: torch device
    :param source: name for error messages
    :return: policy in eval mode
    :raises CheckpointError: on hash, format or architecture mismatch
    """
    if weights.startswith(_PICKLE_MAGIC):
        raise CheckpointError(f'{source}: weights look like a pickle or torch zip archive; only '
                              f'safetensors is accepted')
    digest = sha256_bytes(weights)
    if digest != config['weights_sha256']:
        raise CheckpointError(f'{source}: weights sha256 {digest[:12]} does not match config '
                              f'{config["weights_sha256"][:12]} (truncated or corrupt file)')
    if expected_sha256 is not None and digest != expected_sha256:
        raise CheckpointError(f'{source}: weights sha256 {digest[:12]} does not match the '
                              f'expected {expected_sha256[:12]}')
    try:
        policy_config = PolicyConfig(**config['policy'])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f'{source}: invalid policy architecture in config: {exc}') from None
    try:
        tensors = load_safetensors_bytes(weights)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f'{source}: cannot parse safetensors: {exc}') from None
    policy = TaskPolicy(policy_config)
    if policy_config.adaptive_prior and 'alpha_gate' not in tensors:
        # Written before the per-task gate existed: every task was mixed by its learned alpha.
        tensors['alpha_gate'] = torch.ones(len(policy_config.tasks))
    try:
        policy.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f'{source}: weights do not match the architecture: {exc}') from None
    for name, tensor in tensors.items():
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f'{source}: tensor {name!r} contains NaN or inf')
    return policy.to(device).eval()
