"""PolicyHotSwap: verified background loading, swap between cycles, refusal, rollback."""

import base64
import binascii
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


def save_tasks(path, tasks, seed=0):
    torch.manual_seed(seed)
    policy = TaskPolicy(PolicyConfig(tasks=tasks, image_size=16, conv_channels=(4,),
                                     hidden_dim=8, feature_dim=4, task_embedding_dim=2))
    return save_checkpoint(policy, path)


def test_a_version_lower_than_the_running_one_is_refused(tmp_path):
    save_tiny(tmp_path / 'v20', 20)
    hot_swap = PolicyHotSwap(CPU, load_initial(tmp_path / 'v20', CPU, version=20))
    try:
        sha = save_tiny(tmp_path / 'v3', 3)
        hot_swap.submit(announce(tmp_path / 'v3', sha, 3, carry_weights=True))
        assert hot_swap.wait_idle(10.0)
        event = hot_swap.swap_if_ready()
        assert event.swapped is None and hot_swap.active.version == 20
        assert event.refusal.version == 3 and 'lower than the running version 20' in \
            event.refusal.reason and 'rollback' in event.refusal.reason
        # Equal or higher versions still swap in.
        sha21 = save_tiny(tmp_path / 'v21', 21)
        hot_swap.submit(announce(tmp_path / 'v21', sha21, 21))
        assert hot_swap.wait_idle(10.0)
        assert hot_swap.swap_if_ready().swapped.version == 21
    finally:
        hot_swap.close()


def test_a_version_checked_by_the_loader_is_checked_again_at_the_swap(tmp_path):
    # The loader found version 2 newer than the running 1, but a swap to 5 came first.
    save_tiny(tmp_path / 'v1', 1)
    hot_swap = PolicyHotSwap(CPU, load_initial(tmp_path / 'v1', CPU, version=1))
    try:
        sha2 = save_tiny(tmp_path / 'v2', 2)
        hot_swap.submit(announce(tmp_path / 'v2', sha2, 2))
        assert hot_swap.wait_idle(10.0)
        save_tiny(tmp_path / 'v5', 5)
        hot_swap.active = load_initial(tmp_path / 'v5', CPU, version=5)
        event = hot_swap.swap_if_ready()
        assert event.swapped is None and 'lower than the running version 5' in \
            event.refusal.reason
    finally:
        hot_swap.close()


@pytest.mark.parametrize('tasks, words', [
    (('push-v3', 'reach-v3'), ['another order', "['push-v3', 'reach-v3']"]),
    (('reach-v3', 'door-open-v3'), ['differs', 'door-open-v3']),
    (('reach-v3',), ['differs']),
])
def test_a_task_list_in_another_order_or_with_other_names_is_refused(tmp_path, tasks, words):
    save_tasks(tmp_path / 'v0', ('reach-v3', 'push-v3'))
    hot_swap = PolicyHotSwap(CPU, load_initial(tmp_path / 'v0', CPU))
    try:
        sha = save_tasks(tmp_path / 'v1', tasks, seed=1)
        hot_swap.submit(announce(tmp_path / 'v1', sha, 1, carry_weights=True))
        assert hot_swap.wait_idle(10.0)
        event = hot_swap.swap_if_ready()
        assert event.swapped is None and hot_swap.active.tasks == ('reach-v3', 'push-v3')
        for word in words:
            assert word in event.refusal.reason, event.refusal.reason
    finally:
        hot_swap.close()


def test_every_refusal_is_numbered_so_a_second_alike_one_is_told_apart(swap):
    numbers = []
    for text in ('{"version": 1', '{"version": 1'):
        swap.submit(text)
        assert swap.wait_idle(10.0)
        numbers.append(swap.swap_if_ready().refusal.number)
    assert numbers == [1, 2] and swap.last_refusal.number == 2


def test_a_large_announcement_is_decoded_in_pieces_off_the_caller(monkeypatch, swap, tmp_path):
    """No single json.loads or base64 call sees the weights: each holds the GIL throughout."""
    from active_finetune import payloads as payloads_module
    from active_finetune.policy import hot_swap as module
    monkeypatch.setattr(module, 'MAX_ANNOUNCEMENT_JSON_CHARS', 4096)
    monkeypatch.setattr(module, 'B64_CHUNK_CHARS', 512)
    seen = {'json': [], 'b64': []}
    real_loads, real_a2b = json.loads, binascii.a2b_base64

    def loads(text, *args, **kwargs):
        seen['json'].append(len(text))
        return real_loads(text, *args, **kwargs)

    def a2b(data, *args, **kwargs):
        seen['b64'].append(len(data))
        return real_a2b(data, *args, **kwargs)

    monkeypatch.setattr(payloads_module.json, 'loads', loads)
    monkeypatch.setattr(module.binascii, 'a2b_base64', a2b)
    sha = save_tiny(tmp_path / 'v1', 1)
    payload = json.dumps({'path': '', 'sha256': sha, 'version': 1, 'step': 0,
                          'config': json.loads((tmp_path / 'v1' / CONFIG_FILE).read_text()),
                          'weights_b64': base64.b64encode(
                              (tmp_path / 'v1' / WEIGHTS_FILE).read_bytes()).decode(),
                          'metrics': {'loss': 0.1}}).encode()
    assert len(payload) > 4 * 4096
    swap.submit(memoryview(payload))  # what the policy node's raw subscription hands over
    assert swap.wait_idle(10.0)
    event = swap.swap_if_ready()
    assert event.refusal is None and event.swapped.version == 1
    assert seen['b64'] and max(seen['b64']) <= 512, seen['b64']
    assert seen['json'] and max(seen['json']) <= 4096, seen['json']


@pytest.mark.parametrize('payload, match', [
    ({'version': 1, 'sha256': 'a' * 64, 'path': 'x', 'metrics': {'pad': 'x' * 5000}},
     'without a "weights_b64" string'),
    ({'version': 1, 'sha256': 'a' * 64, 'config': {'pad': 'x' * 5000}, 'weights_b64': 'AAAA'},
     'besides weights_b64'),
    ({'version': 1, 'sha256': 'a' * 64, 'config': {}, 'weights_b64': 'A/' * 3000},
     'JSON escape'),
    ({'version': 1, 'sha256': 'a' * 64, 'config': {'weights_b64': 'A' * 6000},
      'weights_b64': 'AAAA'}, 'not the top-level one'),
])
def test_large_announcements_of_another_shape_are_refused(monkeypatch, payload, match):
    from active_finetune.policy import hot_swap as module
    monkeypatch.setattr(module, 'MAX_ANNOUNCEMENT_JSON_CHARS', 4096)
    text = json.dumps(payload).replace('A/', 'A\\/')
    for data in (text, text.encode()):
        with pytest.raises(CheckpointAnnouncementError, match=match):
            CheckpointAnnouncement.from_json(data)
