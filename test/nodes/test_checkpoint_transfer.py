"""
Checkpoints by reference, bytes on request, through real DDS (policy node as the subscriber).

A policy node without the announced file asks for it and swaps it in; a corrupted chunk is refused
and asked for again; weights that do not hash to the announcement are never loaded; a node that
has the file does not ask.
"""

import json

from active_finetune.nodes.checkpoint_transfer import CheckpointServer, DATA_QOS, DATA_TOPIC, \
    REQUEST_TOPIC
from active_finetune.nodes.policy_node import PolicyNode
from active_finetune.nodes.qos import COMMAND_QOS, LATCHED_QOS
from active_finetune.payloads import CheckpointAnnounced, decode_checkpoint_request, encode
from active_finetune.policy.checkpoint import CONFIG_FILE, save_checkpoint, WEIGHTS_FILE
from active_finetune.policy.model import PolicyConfig, TaskPolicy
from active_finetune.policy.transfer import ChunkSource, HEADER, serialize_chunk_message
import pytest
from rclpy.parameter import Parameter
from std_msgs.msg import String, UInt8MultiArray
import torch

pytestmark = pytest.mark.timeout(120)

TASKS = ('reach-v3', 'push-v3')
CHUNK = 4096


def save_policy(path, seed):
    torch.manual_seed(seed)
    policy = TaskPolicy(PolicyConfig(tasks=TASKS, image_size=32, conv_channels=(4, 4),
                                     hidden_dim=16, feature_dim=8, task_embedding_dim=4))
    return save_checkpoint(policy, path)


@pytest.fixture
def setup(ros, tmp_path):
    """Start a policy node on version 0; versions 1 and 2 are on the 'trainer machine' only."""
    v0, trainer = tmp_path / 'robot' / 'v0', tmp_path / 'trainer'
    sha0 = save_policy(v0, 0)
    shas = {version: save_policy(trainer / f'v{version:04d}', version) for version in (1, 2)}
    cache = tmp_path / 'robot' / 'checkpoint_cache'
    node = ros.add_node(PolicyNode(context=ros.context, parameter_overrides=[
        Parameter('checkpoint_path', value=str(v0)), Parameter('device', value='cpu'),
        Parameter('control_rate_hz', value=50.0), Parameter('task', value='reach-v3'),
        Parameter('checkpoint_cache_dir', value=str(cache)),
        Parameter('checkpoint_fetch_timeout_s', value=20.0)]))

    class Setup:
        pass
    s = Setup()
    s.node, s.sha0, s.shas, s.trainer, s.cache = node, sha0, shas, trainer, cache
    s.statuses = ros.collect(String, 'policy/status', LATCHED_QOS)
    s.requests = ros.collect(String, REQUEST_TOPIC, COMMAND_QOS)
    s.announce_pub = ros.publisher(String, 'trainer/checkpoint', LATCHED_QOS)
    return s


def weights_of(s, version):
    return (s.trainer / f'v{version:04d}' / WEIGHTS_FILE).read_bytes()


def announce(s, version, path, sha256=None):
    """Announce trainer version ``version`` by reference (its path on the trainer's machine)."""
    directory = s.trainer / f'v{version:04d}'
    s.announce_pub.publish(String(data=encode(CheckpointAnnounced(
        version=version, sha256=sha256 or s.shas[version], path=str(path),
        config=json.loads((directory / CONFIG_FILE).read_text()),
        size_bytes=(directory / WEIGHTS_FILE).stat().st_size, chunk_bytes=CHUNK))))


def running(s):
    status = json.loads(s.statuses.last.data)
    return status['version'], status['sha256']


def requested_chunks(s):
    return [decode_checkpoint_request(m.data).chunks for m in s.requests.messages]


def test_a_node_without_the_file_fetches_it_and_swaps(ros, wait_for, setup):
    s = setup
    server = CheckpointServer(ros.node, chunk_bytes=CHUNK)
    source = server.offer(s.trainer / 'v0001' / WEIGHTS_FILE, s.shas[1])
    assert source.count > 2, 'the test needs several chunks'
    assert wait_for(lambda: running(s) == (0, s.sha0), 10.0)
    announce(s, 1, '/nowhere/on/this/machine/v0001')
    assert wait_for(lambda: running(s) == (1, s.shas[1]), 30.0), s.statuses.last.data
    assert s.requests.messages, 'the node asked for the bytes'
    # Each chunk asked for (again only if lost before the data subscription matched).
    assert {i for chunks in requested_chunks(s) for i in chunks} == set(range(source.count))
    assert (s.cache / s.shas[1] / WEIGHTS_FILE).read_bytes() == weights_of(s, 1)
    assert server.chunks_sent >= source.count
    server.close()


def test_a_corrupted_chunk_is_refused_and_asked_for_again(ros, wait_for, setup):
    s = setup
    source = ChunkSource(s.trainer / 'v0001' / WEIGHTS_FILE, s.shas[1], CHUNK)
    data_pub = ros.publisher(UInt8MultiArray, DATA_TOPIC, DATA_QOS)
    corrupted = []

    def serve(msg):
        for index in decode_checkpoint_request(msg.data).chunks:
            chunk = bytearray(source.chunk(index))
            if index == 1 and not corrupted:  # one bit flipped in transit, once
                chunk[HEADER.size + 10] ^= 0x04
                corrupted.append(index)
            data_pub.publish(serialize_chunk_message(bytes(chunk)))
    ros.node.create_subscription(String, REQUEST_TOPIC, serve, COMMAND_QOS)
    assert wait_for(lambda: running(s) == (0, s.sha0), 10.0)
    announce(s, 1, '/nowhere/v0001')
    assert wait_for(lambda: running(s) == (1, s.shas[1]), 30.0), s.statuses.last.data
    assert corrupted == [1]
    asked = [i for chunks in requested_chunks(s) for i in chunks]
    assert asked.count(1) >= 2, f'chunk 1 asked for again after its refusal: {asked}'
    assert (s.cache / s.shas[1] / WEIGHTS_FILE).read_bytes() == weights_of(s, 1)
    versions = {json.loads(m.data)['sha256'] for m in s.statuses.messages}
    assert versions == {s.sha0, s.shas[1]}, 'nothing else ever ran'


def test_weights_that_do_not_hash_to_the_announcement_are_never_loaded(ros, wait_for, setup):
    s = setup
    # A server whose chunks are each sound, but of other weights (version 2's, same size).
    server = CheckpointServer(ros.node, chunk_bytes=CHUNK)
    forged = server.offer(s.trainer / 'v0002' / WEIGHTS_FILE, s.shas[1])
    assert forged.size == len(weights_of(s, 1))
    assert wait_for(lambda: running(s) == (0, s.sha0), 10.0)
    announce(s, 1, '/nowhere/v0001')

    def refused():
        status = json.loads(s.statuses.last.data)
        return status['refused'] is not None and status['refused']['version'] == 1
    assert wait_for(refused, 30.0), s.statuses.last.data
    reason = json.loads(s.statuses.last.data)['refused']['reason']
    assert 'announcement says' in reason, reason
    assert running(s) == (0, s.sha0)
    assert not (s.cache / s.shas[1]).exists() and not list(s.cache.glob('*.partial'))
    server.close()


def test_a_node_that_has_the_file_does_not_ask(ros, wait_for, setup):
    s = setup
    assert wait_for(lambda: running(s) == (0, s.sha0), 10.0)
    announce(s, 1, s.trainer / 'v0001')  # a shared disk: the announced path is here
    assert wait_for(lambda: running(s) == (1, s.shas[1]), 30.0), s.statuses.last.data
    assert s.requests.messages == []
    assert not s.cache.exists() or not any(s.cache.iterdir())
