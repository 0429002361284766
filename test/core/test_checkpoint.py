import json
import pickle

from active_finetune.policy.checkpoint import (
    CheckpointError, CONFIG_FILE, load_checkpoint, policy_from_bytes, save_checkpoint,
    WEIGHTS_FILE)
from active_finetune.policy.model import PolicyConfig, TaskPolicy
import pytest
import torch

TASKS = ('reach-v3', 'push-v3')


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    policy = TaskPolicy(PolicyConfig(tasks=TASKS, observation='state', hidden_dim=16,
                                     feature_dim=8))
    path = tmp_path / 'ckpt'
    digest = save_checkpoint(policy, path, provenance={'kind': 'test'})
    return policy, path, digest


def test_round_trip_restores_weights_config_and_provenance(saved):
    policy, path, digest = saved
    loaded, config = load_checkpoint(path, expected_sha256=digest)
    assert loaded.config == policy.config
    assert config['provenance'] == {'kind': 'test'} and config['weights_sha256'] == digest
    for (k, a), (_, b) in zip(policy.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)


def test_existing_directory_is_never_overwritten(saved):
    policy, path, _ = saved
    with pytest.raises(FileExistsError):
        save_checkpoint(policy, path)


def test_no_temporary_directory_is_left_behind(saved):
    _, path, _ = saved
    assert [p.name for p in path.parent.iterdir()] == ['ckpt']


def test_truncated_weights_are_refused(saved):
    _, path, _ = saved
    data = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='sha256'):
        load_checkpoint(path)


def test_flipped_byte_is_refused(saved):
    _, path, _ = saved
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[-10] ^= 0xFF
    (path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match='sha256'):
        load_checkpoint(path)


def test_wrong_expected_hash_is_refused(saved):
    _, path, _ = saved
    with pytest.raises(CheckpointError, match='expected'):
        load_checkpoint(path, expected_sha256='0' * 64)


def test_missing_files_and_bad_json_are_refused(saved, tmp_path):
    _, path, _ = saved
    (path / CONFIG_FILE).write_text('{not json')
    with pytest.raises(CheckpointError, match='not valid JSON'):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match='no config.json'):
        load_checkpoint(tmp_path / 'missing')


def test_architecture_mismatch_is_refused(saved):
    _, path, _ = saved
    config = json.loads((path / CONFIG_FILE).read_text())
    config['policy']['hidden_dim'] = 32
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match='do not match the architecture'):
        load_checkpoint(path)


def test_pickles_are_refused(saved, tmp_path):
    policy, path, _ = saved
    config = json.loads((path / CONFIG_FILE).read_text())
    blob = pickle.dumps(policy.state_dict())
    config['weights_sha256'] = __import__('hashlib').sha256(blob).hexdigest()
    with pytest.raises(CheckpointError, match='pickle'):
        policy_from_bytes(blob, config)
    torch_file = tmp_path / 'model.pt'
    torch.save(policy.state_dict(), torch_file)
    with pytest.raises(CheckpointError, match='is a file'):
        load_checkpoint(torch_file)


def test_nan_weights_are_refused(saved, tmp_path):
    policy, _, _ = saved
    with torch.no_grad():
        policy.net.head.linear.weight[0, 0] = float('nan')
    save_checkpoint(policy, tmp_path / 'nan')
    with pytest.raises(CheckpointError, match='NaN'):
        load_checkpoint(tmp_path / 'nan')
