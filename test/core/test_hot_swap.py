"""PolicyHotSwap: verified background loading, swap between cycles, refusal, rollback."""

import base64
import json
import threading

from active_finetune.policy.checkpoint import CONFIG_FILE, save_checkpoint, WEIGHTS_FILE
from active_finetune.policy.hot_swap import CheckpointAnnouncement, \
    CheckpointAnnouncementError, CheckpointRefusedError, load_initial, load_verified, \
    PolicyHotSwap, PolicyNodeConfig, RollbackError
from active_finetune.policy.model import PolicyConfig, TaskPolicy
import pytest
import torch

CPU = torch.device('cpu')


def save_tiny(path, seed):
    torch.manual_seed(seed)
    policy = TaskPolicy(PolicyConfig(tasks=('reach-v3',), image_size=16, conv_channels=(4,),
                                     hidden_dim=8, feature_dim=4, task_embedding_dim=2))
    return save_checkpoint(policy, path)


def announce(path, sha256, version, carry_weights=False):
    payload = {'path': str(path), 'sha256': sha256, 'version': version}
    if carry_weights:
        payload['config'] = json.loads((path / CONFIG_FILE).read_text())
        payload['weights_b64'] = base64.b64encode((path / WEIGHTS_FILE).read_bytes()).decode()
    return CheckpointAnnouncement.from_json(json.dumps(payload))


@pytest.fixture
def swap(tmp_path):
    save_tiny(tmp_path / 'v0', 0)
    hot_swap = PolicyHotSwap(CPU, load_initial(tmp_path / 'v0', CPU))
    yield hot_swap
    hot_swap.close()


def test_announcement_parsing_refuses_bad_messages():
    with pytest.raises(CheckpointAnnouncementError, match='not JSON'):
        CheckpointAnnouncement.from_json('{')
    with pytest.raises(CheckpointAnnouncementError, match='sha256'):
        CheckpointAnnouncement.from_json(json.dumps({'version': 1, 'sha256': 'ab', 'path': 'x'}))
    with pytest.raises(CheckpointAnnouncementError, match='neither'):
        CheckpointAnnouncement.from_json(json.dumps({'version': 1, 'sha256': 'a' * 64}))
    with pytest.raises(CheckpointAnnouncementError, match='base64'):
        CheckpointAnnouncement.from_json(json.dumps(
            {'version': 1, 'sha256': 'a' * 64, 'weights_b64': '!!', 'config': {}}))
    parsed = CheckpointAnnouncement.from_json(json.dumps(
        {'version': 4, 'sha256': 'b' * 64, 'path': '/ckpt/v4', 'step': 3}))
    assert (parsed.version, parsed.path, parsed.weights) == (4, '/ckpt/v4', None)


def test_load_verified_from_message_bytes_and_refuses_a_wrong_hash(tmp_path):
    sha = save_tiny(tmp_path / 'v1', 1)
    loaded = load_verified(announce(tmp_path / 'v1', sha, 1, carry_weights=True), CPU)
    assert loaded.version == 1 and loaded.sha256 == sha and loaded.tasks == ('reach-v3',)
    with pytest.raises(CheckpointRefusedError, match='expected'):
        load_verified(announce(tmp_path / 'v1', 'f' * 64, 1), CPU)


def test_swap_happens_only_between_cycles_and_keeps_history(swap, tmp_path):
    sha = save_tiny(tmp_path / 'v1', 1)
    swap.submit(announce(tmp_path / 'v1', sha, 1))
    assert swap.wait_idle(10.0)
    assert swap.active.version == 0, 'nothing changes until the control loop asks'
    event = swap.swap_if_ready()
    assert event.swapped.version == 1 and swap.active.version == 1
    assert swap.history_versions == [0]
    assert swap.swap_if_ready().swapped is None


def test_corrupt_checkpoint_refused_and_old_weights_kept(swap, tmp_path):
    sha = save_tiny(tmp_path / 'v2', 2)
    weights = (tmp_path / 'v2' / WEIGHTS_FILE).read_bytes()
    (tmp_path / 'v2' / WEIGHTS_FILE).write_bytes(weights[:-10])
    swap.submit(announce(tmp_path / 'v2', sha, 2))
    assert swap.wait_idle(10.0)
    event = swap.swap_if_ready()
    assert event.swapped is None and event.refusal.version == 2
    assert 'sha256' in event.refusal.reason and swap.last_refusal == event.refusal
    assert swap.active.version == 0


def test_rollback_goes_back_and_refuses_without_history(swap, tmp_path):
    with pytest.raises(RollbackError, match='running 0'):
        swap.rollback()
    sha = save_tiny(tmp_path / 'v1', 1)
    swap.submit(announce(tmp_path / 'v1', sha, 1))
    assert swap.wait_idle(10.0)
    swap.swap_if_ready()
    assert swap.rollback().version == 0 and swap.history_versions == []


def test_newest_submission_wins_while_loading(tmp_path):
    release = threading.Event()
    loaded_versions = []

    def slow_loader(announcement, device):
        release.wait(5.0)
        loaded_versions.append(announcement.version)
        return load_verified(announcement, device)

    hot_swap = PolicyHotSwap(CPU, None, loader=slow_loader)
    try:
        shas = {v: save_tiny(tmp_path / f'v{v}', v) for v in (1, 2, 3)}
        for version in (1, 2, 3):
            hot_swap.submit(announce(tmp_path / f'v{version}', shas[version], version))
        release.set()
        assert hot_swap.wait_idle(10.0)
        hot_swap.swap_if_ready()
        assert hot_swap.active.version == 3
        assert 2 not in loaded_versions
    finally:
        hot_swap.close()


def test_policy_node_config_validates():
    assert PolicyNodeConfig().control_rate_hz == 20.0
    with pytest.raises(ValueError, match='cycle_trigger'):
        PolicyNodeConfig(cycle_trigger='sometimes')
    with pytest.raises(ValueError, match='max_input_age_s'):
        PolicyNodeConfig(max_input_age_s=0.0)


def test_raw_json_is_parsed_on_the_loader_thread(swap, tmp_path):
    sha = save_tiny(tmp_path / 'v1', 1)
    swap.submit('{"version": 1')
    assert swap.wait_idle(10.0)
    refusal = swap.swap_if_ready().refusal
    assert refusal.version is None and 'not JSON' in refusal.reason
    swap.submit(json.dumps({'path': str(tmp_path / 'v1'), 'sha256': sha, 'version': 1}))
    assert swap.wait_idle(10.0)
    assert swap.swap_if_ready().swapped.version == 1
    swap.submit(json.dumps({'path': str(tmp_path / 'v1'), 'sha256': sha, 'version': 1}))
    assert swap.wait_idle(10.0)
    event = swap.swap_if_ready()
    assert event.swapped is None and event.refusal is None, 'the running one is not reloaded'
    assert swap.active.version == 1 and swap.history_versions == [0]
