"""
Checkpoint weights by reference, bytes on request (ROS-free).

The trainer announces a checkpoint on ``trainer/checkpoint`` by path, sha256 and size.  A
subscriber that has no file with that sha256 (another machine, no shared disk) asks for the bytes
on ``trainer/checkpoint_request`` (:class:`active_finetune.payloads.CheckpointRequest`: the chunk
indices it lacks) and receives them as binary chunks on ``trainer/checkpoint_data``
(std_msgs/UInt8MultiArray, ``layout`` empty, ``data`` = one chunk as :func:`encode_chunk` frames
it).  A subscriber that has the file never asks, and none but the askers subscribe to the data
topic, so the bytes travel only to those that lack them.

Chunk framing (``data`` of one message; little-endian)::

    magic   4 bytes   b'AFCK'
    format  1 byte    1
    file    32 bytes  sha256 of the whole model.safetensors
    size    8 bytes   its size
    offset  8 bytes   where this chunk starts
    length  4 bytes   bytes in this chunk
    digest  32 bytes  sha256 of this chunk's bytes
    bytes   length bytes

A chunk whose digest does not match its bytes, or that does not fit the announced size and chunk
grid, is refused (and asked for again); the assembled file is hashed as a whole and written
atomically into ``<cache_dir>/<sha256>/`` (``model.safetensors`` and the announced
``config.json``) only when it matches the announced sha256, so nothing unverified is ever
loaded.  :class:`ChunkAssembler` does the receiving side, :class:`ChunkSource` the serving side.
"""

from dataclasses import dataclass
import hashlib
import json
import os
from pathlib import Path
import struct
import threading

from active_finetune.atomic_io import atomic_directory
from active_finetune.policy.checkpoint import CONFIG_FILE, WEIGHTS_FILE

MAGIC = b'AFCK'
FORMAT = 1
HEADER = struct.Struct('<4sB32sQQI32s')
"""The chunk header (see the module docstring): 89 bytes."""
DEFAULT_CHUNK_BYTES = 1 << 20
"""Chunk size the trainer serves: 1 MiB fits the shared-memory segment of the large Fast DDS
profile (:data:`active_finetune.nodes.qos.FASTDDS_LARGE_SHM_PROFILE_XML`)."""
CDR_PREFIX = struct.Struct('<4sIII')
"""Serialised std_msgs/UInt8MultiArray with an empty layout: CDR little-endian encapsulation,
0 dimensions, data_offset 0, then the data's length and the data."""
_CDR_LE = b'\x00\x01\x00\x00'


class TransferError(ValueError):
    """A chunk or an assembled file that does not match what was announced."""


@dataclass(frozen=True)
class Chunk:
    """
    One received chunk.

    :param sha256: hex sha256 of the whole file
    :param size: size of the whole file
    :param offset: where the chunk starts
    :param data: its bytes (memoryview)
    """

    sha256: str
    size: int
    offset: int
    data: memoryview


def encode_chunk(sha256, size, offset, data):
    """
    Frame one chunk.

    :param sha256: hex sha256 of the whole file
    :param size: the file's size
    :param offset: the chunk's offset
    :param data: the chunk's bytes
    :return: bytes
    """
    return HEADER.pack(MAGIC, FORMAT, bytes.fromhex(sha256), size, offset, len(data),
                       hashlib.sha256(data).digest()) + bytes(data)


def decode_chunk(buffer):
    """
    Unframe one chunk and check its digest.

    :param buffer: bytes-like, as :func:`encode_chunk` made it
    :return: :class:`Chunk`
    :raises TransferError: for a bad header, a length that does not match or a digest mismatch
    """
    view = memoryview(buffer).cast('B')
    if len(view) < HEADER.size:
        raise TransferError(f'chunk of {len(view)} bytes is shorter than its header')
    magic, version, file_digest, size, offset, length, digest = HEADER.unpack_from(view)
    if magic != MAGIC or version != FORMAT:
        raise TransferError(f'not a checkpoint chunk (magic {magic!r}, format {version})')
    data = view[HEADER.size:]
    if len(data) != length:
        raise TransferError(f'chunk at {offset} says {length} bytes, carries {len(data)}')
    if offset + length > size:
        raise TransferError(f'chunk at {offset} of {length} bytes ends past the file ({size})')
    if hashlib.sha256(data).digest() != digest:
        raise TransferError(f'chunk at {offset}: sha256 of its {length} bytes does not match '
                            'its header (corrupted)')
    return Chunk(sha256=file_digest.hex(), size=size, offset=offset, data=data)


def serialize_chunk_message(chunk):
    """
    Serialise a framed chunk as a std_msgs/UInt8MultiArray (CDR), ready to publish raw.

    :param chunk: bytes from :func:`encode_chunk`
    :return: bytes
    """
    return CDR_PREFIX.pack(_CDR_LE, 0, 0, len(chunk)) + chunk


def chunk_from_message(raw):
    """
    Take the ``data`` out of a serialised std_msgs/UInt8MultiArray without copying.

    :param raw: the serialised message (a raw subscription's bytes)
    :return: memoryview of ``data``
    :raises TransferError: for a message with layout dimensions or a bad length
    """
    view = memoryview(raw).cast('B')
    if len(view) < CDR_PREFIX.size:
        raise TransferError(f'message of {len(view)} bytes is too short')
    encapsulation, dims, _, length = CDR_PREFIX.unpack_from(view)
    if encapsulation != _CDR_LE or dims != 0:
        raise TransferError('trainer/checkpoint_data: expected little-endian CDR with an empty '
                            f'layout (got encapsulation {bytes(encapsulation)!r}, {dims} dims)')
    if CDR_PREFIX.size + length > len(view):
        raise TransferError(f'data of {length} bytes does not fit the {len(view)}-byte message')
    return view[CDR_PREFIX.size:CDR_PREFIX.size + length]


def chunk_count(size, chunk_bytes):
    """:return: number of chunks of a file of ``size`` bytes (at least 1)."""
    return max(1, -(-size // chunk_bytes))


def cached_checkpoint(cache_dir, sha256):
    """
    Find a checkpoint fetched earlier.

    :param cache_dir: the subscriber's cache directory
    :param sha256: hex sha256 of the weights
    :return: the checkpoint directory, or None
    """
    path = Path(cache_dir) / sha256
    if (path / WEIGHTS_FILE).is_file() and (path / CONFIG_FILE).is_file():
        return path
    return None


class ChunkSource:
    """
    The serving side: chunks of one weights file, read on demand.

    :param path: the model.safetensors file
    :param sha256: its announced hex sha256
    :param chunk_bytes: chunk size
    """

    def __init__(self, path, sha256, chunk_bytes=DEFAULT_CHUNK_BYTES):
        self.path = Path(path)
        self.sha256 = sha256
        self.chunk_bytes = int(chunk_bytes)
        self.size = self.path.stat().st_size
        self.count = chunk_count(self.size, self.chunk_bytes)

    def chunk(self, index):
        """
        Read and frame one chunk.

        :param index: 0 .. count - 1
        :return: bytes (:func:`encode_chunk`)
        :raises TransferError: for an index outside the file
        :raises OSError: when the file cannot be read
        """
        if not 0 <= index < self.count:
            raise TransferError(f'chunk {index} outside 0..{self.count - 1}')
        offset = index * self.chunk_bytes
        with open(self.path, 'rb') as stream:
            data = os.pread(stream.fileno(), min(self.chunk_bytes, self.size - offset), offset)
        return encode_chunk(self.sha256, self.size, offset, data)


class ChunkAssembler:
    """
    The receiving side: collect the chunks of one file, verify it, write it atomically.

    Thread-safe: :meth:`accept` may run on one thread while another reads :meth:`missing`.

    :param cache_dir: where ``<sha256>/`` is written
    :param sha256: announced hex sha256 of model.safetensors
    :param size: announced size
    :param chunk_bytes: announced chunk size
    :param config: the announced config.json dict (written beside the weights)
    """

    def __init__(self, cache_dir, sha256, size, chunk_bytes, config):
        if size < 0 or chunk_bytes < 1:
            raise TransferError(f'bad size {size} or chunk size {chunk_bytes}')
        self.cache_dir = Path(cache_dir)
        self.sha256 = sha256
        self.size = int(size)
        self.chunk_bytes = int(chunk_bytes)
        self.config = config
        self.count = chunk_count(self.size, self.chunk_bytes)
        self.received = set()
        self.refused = 0
        self.last_refusal = ''
        self._lock = threading.Lock()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._partial = self.cache_dir / f'.{sha256}.{os.getpid()}.partial'
        self._fd = os.open(self._partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.ftruncate(self._fd, self.size)

    def accept(self, buffer):
        """
        Take one framed chunk; chunks of another file are ignored.

        :param buffer: bytes-like (:func:`encode_chunk`)
        :return: True when it was new and kept
        """
        try:
            chunk = decode_chunk(buffer)
        except TransferError as error:
            return self.refuse(str(error))
        if chunk.sha256 != self.sha256:
            return False
        index, rest = divmod(chunk.offset, self.chunk_bytes)
        expected = min(self.chunk_bytes, self.size - chunk.offset) if index < self.count else -1
        if chunk.size != self.size or rest or len(chunk.data) != expected:
            return self.refuse(f'chunk at {chunk.offset} ({len(chunk.data)} bytes of a '
                               f'{chunk.size}-byte file) is off the announced grid')
        if index in self.received:
            return False
        os.pwrite(self._fd, chunk.data, chunk.offset)
        with self._lock:
            self.received.add(index)
        return True

    def refuse(self, reason):
        """
        Count a chunk refused (bad framing, digest or grid).

        :param reason: why
        :return: False
        """
        with self._lock:
            self.refused += 1
            self.last_refusal = reason
        return False

    def missing(self, limit=None):
        """
        List the chunks not received yet, lowest first.

        :param limit: at most this many (None: all)
        :return: chunk indices
        """
        with self._lock:
            indices = [i for i in range(self.count) if i not in self.received]
        return indices if limit is None else indices[:limit]

    @property
    def complete(self):
        """:return: True when every chunk arrived."""
        with self._lock:
            return len(self.received) == self.count

    def finish(self):
        """
        Verify the whole file and move it into ``<cache_dir>/<sha256>/`` atomically.

        :return: the checkpoint directory
        :raises TransferError: when a chunk is missing or the file's sha256 is not the announced
            one (the partial file is removed)
        """
        if not self.complete:
            raise TransferError(f'{len(self.missing())} of {self.count} chunks missing')
        digest = hashlib.sha256()
        for offset in range(0, self.size, 1 << 22):
            digest.update(os.pread(self._fd, min(1 << 22, self.size - offset), offset))
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        if digest.hexdigest() != self.sha256:
            self._partial.unlink(missing_ok=True)
            raise TransferError(f'assembled weights hash to {digest.hexdigest()[:12]}, the '
                                f'announcement says {self.sha256[:12]}; refused')
        target = self.cache_dir / self.sha256
        try:
            if cached_checkpoint(self.cache_dir, self.sha256) is None:
                with atomic_directory(target) as tmp:
                    os.replace(self._partial, tmp / WEIGHTS_FILE)
                    (tmp / CONFIG_FILE).write_text(json.dumps(self.config, indent=2,
                                                              sort_keys=True))
        except FileExistsError:
            pass  # another process of this machine fetched the same weights meanwhile
        self._partial.unlink(missing_ok=True)
        return target

    def close(self):
        """Drop an unfinished transfer (the partial file is removed)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._partial.unlink(missing_ok=True)


def has_weights(path, sha256):
    """
    Tell whether a checkpoint directory holds weights with this sha256 (reads and hashes them).

    :param path: checkpoint directory ('' for none)
    :param sha256: hex sha256
    :return: bool
    """
    if not path:
        return False
    weights = Path(path) / WEIGHTS_FILE
    try:
        digest = hashlib.sha256()
        with open(weights, 'rb') as stream:
            for block in iter(lambda: stream.read(1 << 22), b''):
                digest.update(block)
    except OSError:
        return False
    return digest.hexdigest() == sha256 and (Path(path) / CONFIG_FILE).is_file()


def local_checkpoint(path, sha256, cache_dir, fetch=None):
    """
    Find the announced checkpoint on this machine, fetching its bytes when it is not here.

    Order: ``<cache_dir>/<sha256>/`` (fetched earlier), then the announced directory when its
    weights hash to ``sha256`` (a shared disk or the same machine), then ``fetch()``; without
    ``fetch`` (the trainer does not serve the weights) the announced directory, unverified: the
    loader's own checks then say what is wrong with it.

    :param path: announced checkpoint directory
    :param sha256: announced hex sha256 of the weights
    :param cache_dir: this subscriber's cache directory
    :param fetch: callable() -> checkpoint directory (the bytes on request), or None
    :return: (checkpoint directory, 'announced' | 'cache' | 'fetched')
    :raises TransferError: when fetching fails
    """
    cached = cached_checkpoint(cache_dir, sha256)
    if cached is not None:
        return cached, 'cache'
    if has_weights(path, sha256):
        return Path(path), 'announced'
    if fetch is None:
        # Not served: the announced directory it is; loading it says what is wrong with it.
        return Path(path), 'announced'
    return Path(fetch()), 'fetched'
