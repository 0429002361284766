"""Checkpoint bytes on request, ROS-free part: framing, refusals, assembly, where weights are."""

import array
import hashlib
import json

from active_finetune.policy.checkpoint import CONFIG_FILE, load_checkpoint, save_checkpoint, \
    WEIGHTS_FILE
from active_finetune.policy.model import PolicyConfig, TaskPolicy
from active_finetune.policy.transfer import cached_checkpoint, chunk_from_message, \
    ChunkAssembler, ChunkSource, decode_chunk, encode_chunk, HEADER, local_checkpoint, \
    serialize_chunk_message, TransferError
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import UInt8MultiArray


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / 'trainer' / 'v0001'
    policy = TaskPolicy(PolicyConfig(tasks=('reach-v3', 'push-v3'), observation='state',
                                     hidden_dim=16))
    sha = save_checkpoint(policy, path, {'kind': 'test'})
    config = json.loads((path / CONFIG_FILE).read_text())
    return path, sha, config


def test_chunk_framing_round_trip_and_refusals():
    data = bytes(range(256)) * 10
    sha = hashlib.sha256(b'whole file').hexdigest()
    framed = encode_chunk(sha, 10_000, 4096, data)
    chunk = decode_chunk(framed)
    assert (chunk.sha256, chunk.size, chunk.offset) == (sha, 10_000, 4096)
    assert bytes(chunk.data) == data
    corrupted = bytearray(framed)
    corrupted[HEADER.size + 7] ^= 0x01
    with pytest.raises(TransferError, match='corrupted'):
        decode_chunk(corrupted)
    with pytest.raises(TransferError, match='carries'):
        decode_chunk(framed[:-1])
    with pytest.raises(TransferError, match='not a checkpoint chunk'):
        decode_chunk(b'XXXX' + framed[4:])
    with pytest.raises(TransferError, match='ends past the file'):
        decode_chunk(encode_chunk(sha, 100, 0, data))


def test_the_hand_made_message_is_a_uint8_multi_array():
    framed = encode_chunk('ab' * 32, 3, 0, b'xyz')
    raw = serialize_chunk_message(framed)
    msg = deserialize_message(raw, UInt8MultiArray)
    assert msg.data.tobytes() == framed and list(msg.layout.dim) == []
    ours = UInt8MultiArray(data=array.array('B', framed))
    assert bytes(chunk_from_message(serialize_message(ours))) == framed
    with pytest.raises(TransferError):
        chunk_from_message(raw[:10])


def test_assembler_takes_chunks_in_any_order_and_writes_a_verified_checkpoint(checkpoint,
                                                                              tmp_path):
    path, sha, config = checkpoint
    source = ChunkSource(path / WEIGHTS_FILE, sha, chunk_bytes=1000)
    assert source.count > 3
    cache = tmp_path / 'robot_cache'
    assembler = ChunkAssembler(cache, sha, source.size, 1000, config)
    order = list(reversed(range(source.count)))
    for index in order[:2]:
        assert assembler.accept(source.chunk(index))
    assert not assembler.accept(source.chunk(order[0])), 'a duplicate is not new'
    other = encode_chunk('cd' * 32, source.size, 0, b'x' * 1000)
    assert not assembler.accept(other) and assembler.refused == 0, 'another file is ignored'
    bad = bytearray(source.chunk(0))
    bad[-1] ^= 0xFF
    assert not assembler.accept(bad) and assembler.refused == 1
    assert 'corrupted' in assembler.last_refusal and 0 in assembler.missing()
    off_grid = encode_chunk(sha, source.size, 500, b'y' * 1000)
    assert not assembler.accept(off_grid) and assembler.refused == 2
    with pytest.raises(TransferError, match='missing'):
        assembler.finish()
    for index in assembler.missing():
        assembler.accept(source.chunk(index))
    assert assembler.complete
    target = assembler.finish()
    assert target == cache / sha and cached_checkpoint(cache, sha) == target
    assert (target / WEIGHTS_FILE).read_bytes() == (path / WEIGHTS_FILE).read_bytes()
    policy, loaded_config = load_checkpoint(target, expected_sha256=sha)
    assert loaded_config == config
    assert [p.name for p in cache.iterdir()] == [sha], 'no partial file left'


def test_a_file_whose_chunks_are_sound_but_whose_hash_is_not_the_announced_one_is_refused(
        checkpoint, tmp_path):
    path, sha, config = checkpoint
    forged = hashlib.sha256(b'something else').hexdigest()
    weights = (path / WEIGHTS_FILE).read_bytes()
    assembler = ChunkAssembler(tmp_path / 'cache', forged, len(weights), len(weights), config)
    assert assembler.accept(encode_chunk(forged, len(weights), 0, weights))
    with pytest.raises(TransferError, match='announcement says'):
        assembler.finish()
    assert cached_checkpoint(tmp_path / 'cache', forged) is None
    assert list((tmp_path / 'cache').iterdir()) == []


def test_local_checkpoint_prefers_what_is_here_and_fetches_only_when_nothing_is(checkpoint,
                                                                                tmp_path):
    path, sha, config = checkpoint
    fetched = []

    def fetch():
        fetched.append(sha)
        assembler = ChunkAssembler(tmp_path / 'cache', sha, (path / WEIGHTS_FILE).stat().st_size,
                                   1 << 20, config)
        assembler.accept(ChunkSource(path / WEIGHTS_FILE, sha).chunk(0))
        return assembler.finish()
    assert local_checkpoint(str(path), sha, tmp_path / 'cache', fetch) == (path, 'announced')
    assert fetched == []
    elsewhere = str(tmp_path / 'not_here' / 'v0001')
    assert local_checkpoint(elsewhere, sha, tmp_path / 'cache', fetch) == (
        tmp_path / 'cache' / sha, 'fetched')
    assert local_checkpoint(elsewhere, sha, tmp_path / 'cache', fetch) == (
        tmp_path / 'cache' / sha, 'cache')
    assert fetched == [sha], 'fetched once'
    # A file at the announced path with other content does not count as having it: fetched.
    other = hashlib.sha256(b'v2').hexdigest()
    assert local_checkpoint(str(path), other, tmp_path / 'cache', lambda: tmp_path / 'x') == (
        tmp_path / 'x', 'fetched')
    # Not served: the announced directory, whose loading then says what is wrong.
    assert local_checkpoint(str(path), other, tmp_path / 'cache', None) == (path, 'announced')
