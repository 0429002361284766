"""
Checkpoint bytes on request over DDS: the trainer's server, the subscribers' fetcher.

The framing, the verification and the atomic write are ROS-free
(:mod:`active_finetune.policy.transfer`); this module moves the chunks:

- :class:`CheckpointServer` (trainer): subscribes ``trainer/checkpoint_request``
  (:class:`active_finetune.payloads.CheckpointRequest`) and publishes each requested chunk of a
  checkpoint it offered on ``trainer/checkpoint_data`` (std_msgs/UInt8MultiArray, serialised by
  hand: no per-byte Python conversion), from a thread of its own;
- :class:`CheckpointFetcher` (policy node, task selector): :meth:`CheckpointFetcher.fetch`, called
  off the control thread, subscribes the data topic only for the time of the transfer, asks for
  the missing chunks a window at a time (again after ``retry_s`` without them: lost, refused or
  sent before the subscription matched), and returns the verified checkpoint directory.  Its
  subscription callback only queues the serialised message; unframing, hashing and writing
  happen on the fetching thread, so a transfer costs the node's executor a copy per chunk.
"""

from collections import OrderedDict
import queue
import threading
import time
import uuid

from active_finetune.nodes.qos import COMMAND_QOS
from active_finetune.payloads import CheckpointRequest, decode_checkpoint_request, encode, \
    PayloadError
from active_finetune.policy.transfer import cached_checkpoint, chunk_from_message, \
    ChunkAssembler, ChunkSource, DEFAULT_CHUNK_BYTES, serialize_chunk_message, TransferError
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String, UInt8MultiArray

DATA_TOPIC = 'trainer/checkpoint_data'
REQUEST_TOPIC = 'trainer/checkpoint_request'
WINDOW_CHUNKS = 8
"""Chunks asked for at a time (8 MiB with the default chunk size)."""
DATA_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST,
                      depth=2 * WINDOW_CHUNKS)
"""Reliable, volatile (a late subscriber gets nothing: it asks), room for two windows."""
KEEP_OFFERED = 4
"""Checkpoints the server keeps offering (the newest ones)."""


class CheckpointServer:
    """
    Serve the chunks of offered checkpoints to whoever asks.

    :param node: the trainer node
    :param chunk_bytes: chunk size
    """

    def __init__(self, node, chunk_bytes=DEFAULT_CHUNK_BYTES):
        self.chunk_bytes = int(chunk_bytes)
        self._logger = node.get_logger()
        self._pub = node.create_publisher(UInt8MultiArray, DATA_TOPIC, DATA_QOS)
        node.create_subscription(String, REQUEST_TOPIC, self._on_request, COMMAND_QOS)
        self._sources = OrderedDict()
        self._lock = threading.Lock()
        self._queue = queue.Queue()
        self.chunks_sent = 0
        self._thread = threading.Thread(target=self._run, name='checkpoint-server', daemon=True)
        self._thread.start()

    def offer(self, weights_path, sha256):
        """
        Serve this weights file from now on (the oldest of more than :data:`KEEP_OFFERED` goes).

        :param weights_path: model.safetensors
        :param sha256: its hex sha256 (as announced)
        :return: the :class:`ChunkSource` (size, chunk count)
        :raises OSError: when the file cannot be read
        """
        source = ChunkSource(weights_path, sha256, self.chunk_bytes)
        with self._lock:
            self._sources[sha256] = source
            self._sources.move_to_end(sha256)
            while len(self._sources) > KEEP_OFFERED:
                self._sources.popitem(last=False)
        return source

    def _on_request(self, msg):
        try:
            request = decode_checkpoint_request(msg.data)
        except PayloadError as error:
            self._logger.warning(f'ignoring malformed {REQUEST_TOPIC}: {error}',
                                 throttle_duration_sec=10.0)
            return
        with self._lock:
            source = self._sources.get(request.sha256)
        if source is None:
            self._logger.warning(f'{request.requester or "someone"} asks for weights '
                                 f'{request.sha256[:12]}, which this trainer does not offer',
                                 throttle_duration_sec=10.0)
            return
        self._queue.put((source, [i for i in request.chunks if 0 <= i < source.count]))

    def _run(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            source, indices = item
            for index in indices:
                try:
                    chunk = source.chunk(index)
                except (OSError, TransferError) as error:
                    self._logger.error(f'cannot serve chunk {index} of {source.path}: {error}',
                                       throttle_duration_sec=10.0)
                    break
                self._pub.publish(serialize_chunk_message(chunk))
                self.chunks_sent += 1

    def close(self):
        """Stop the sending thread (chunks queued are dropped)."""
        self._queue.put(None)
        self._thread.join(5.0)


class CheckpointFetcher:
    """
    Fetch announced weights this machine lacks (blocking: call it off the control thread).

    :param node: the subscribing node
    :param cache_dir: where fetched checkpoints are kept (``<cache_dir>/<sha256>/``)
    :param callback_group: callback group of the temporary data subscription
    :param window: chunks asked for at a time
    :param retry_s: ask again for chunks that did not come within this time
    """

    def __init__(self, node, cache_dir, callback_group=None, window=WINDOW_CHUNKS,
                 retry_s=1.0):
        self.cache_dir = cache_dir
        self.window = int(window)
        self.retry_s = float(retry_s)
        self._node = node
        self._group = callback_group
        self._requester = f'{node.get_fully_qualified_name()}#{uuid.uuid4().hex[:8]}'
        self._request_pub = node.create_publisher(String, REQUEST_TOPIC, COMMAND_QOS)
        self._lock = threading.Lock()
        self.fetches = 0
        self.last = {}
        """Figures of the newest fetch: sha256, size, chunks, requests, refused, seconds."""

    def fetch(self, sha256, size, chunk_bytes, config, timeout_s):
        """
        Get the weights from the trainer, verify and store them.

        :param sha256: announced hex sha256
        :param size: announced size (bytes)
        :param chunk_bytes: announced chunk size
        :param config: announced config.json dict (stored beside the weights)
        :param timeout_s: give up after this long
        :return: the checkpoint directory ``<cache_dir>/<sha256>``
        :raises TransferError: on a timeout or a whole-file hash mismatch
        """
        with self._lock:  # one transfer at a time per node
            cached = cached_checkpoint(self.cache_dir, sha256)
            if cached is not None:
                return cached
            if size is None or not chunk_bytes or config is None:
                raise TransferError(f'weights {sha256[:12]}: the announcement has no size, chunk '
                                    'size or config; the trainer does not serve them')
            return self._fetch(sha256, int(size), int(chunk_bytes), config, timeout_s)

    def _fetch(self, sha256, size, chunk_bytes, config, timeout_s):
        started = time.monotonic()
        assembler = ChunkAssembler(self.cache_dir, sha256, size, chunk_bytes, config)
        arrived = queue.SimpleQueue()
        subscription = self._node.create_subscription(
            UInt8MultiArray, DATA_TOPIC, arrived.put, DATA_QOS, raw=True,
            callback_group=self._group)
        requests = 0
        try:
            deadline = started + timeout_s
            match_deadline = min(deadline, started + self.retry_s)
            while subscription.get_publisher_count() == 0 and time.monotonic() < match_deadline:
                time.sleep(0.01)
            while not assembler.complete:
                now = time.monotonic()
                if now > deadline:
                    raise TransferError(
                        f'weights {sha256[:12]}: {len(assembler.received)} of {assembler.count} '
                        f'chunks after {timeout_s:g} s ({assembler.refused} refused'
                        f'{": " + assembler.last_refusal if assembler.refused else ""})')
                wanted = assembler.missing(self.window)
                self._request_pub.publish(String(data=encode(CheckpointRequest(
                    sha256=sha256, chunks=wanted, requester=self._requester))))
                requests += 1
                self._take(arrived, assembler, wanted, min(deadline, now + self.retry_s))
            path = assembler.finish()
        finally:
            self._node.destroy_subscription(subscription)
            assembler.close()
        self.fetches += 1
        self.last = {'sha256': sha256, 'size': size, 'chunks': assembler.count,
                     'requests': requests, 'refused': assembler.refused,
                     'seconds': round(time.monotonic() - started, 3)}
        self._node.get_logger().info(
            f'fetched weights {sha256[:12]} ({size} bytes, {assembler.count} chunks, '
            f'{requests} requests, {assembler.refused} chunks refused) in '
            f'{self.last["seconds"]:.2f} s')
        return path

    def _take(self, arrived, assembler, wanted, until):
        """Unframe and store arriving chunks until the wanted ones are in or ``until``."""
        wanted = set(wanted)
        while not wanted <= assembler.received:
            left = until - time.monotonic()
            if left <= 0:
                return
            try:
                raw = arrived.get(timeout=left)
            except queue.Empty:
                return
            try:
                assembler.accept(chunk_from_message(raw))
            except TransferError as error:
                assembler.refuse(str(error))
