"""
Camera frames for the browser: the newest frame, downscaled and JPEG-encoded on one thread.

The ROS image callback only hands the serialised message to :meth:`FrameHub.offer` (no
deserialisation, no copy of the pixels, nothing that can block the executor).  The hub's
encoder thread takes the newest frame at most ``fps`` times a second, and only while a browser
watches: it decodes it (the node's ``decode`` function), makes the two streams and passes each
packet to the ``sink`` (the web server, which keeps only the newest packet per browser, so a
slow browser skips frames instead of queueing them):

- ``policy``: the frame as the policy sees it, ``policy_image_size`` square with area
  interpolation (:func:`policy_view`, the same resize as ``active_finetune.policy.inference``);
- ``full``: the camera's frame, downscaled on the server only above ``full_max_width``.

A packet is ``uint32 big-endian header length | UTF-8 JSON header | JPEG bytes``; the header
holds ``stream``, ``seq``, ``width``, ``height``, ``stamp_s`` (the image header stamp),
``received_s`` (wall time the message reached the node) and ``encoded_s``, so the page can
show the added latency (display time minus ``received_s``) and the frame rate.
"""

import collections
import json
import struct
import threading
import time

import cv2
import numpy as np

STREAMS = ('policy', 'full')
"""The two camera streams the page shows."""

HEADER_LENGTH = struct.Struct('>I')

MIN_SPACING = 0.75
"""A frame that arrives this fraction of a period (1 / fps) after the previous one encoded is
encoded at once; an earlier one waits for the rest of the period (and a newer frame replaces
it meanwhile)."""


def policy_view(rgb, size):
    """
    Resize a frame as the policy does: ``size`` x ``size``, area interpolation.

    :param rgb: (H, W, 3) uint8
    :param size: side in pixels
    :return: (size, size, 3) uint8
    """
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def full_view(rgb, max_width):
    """
    Downscale a frame to at most ``max_width`` pixels wide, keeping its aspect ratio.

    :param rgb: (H, W, 3) uint8
    :param max_width: widest frame sent (px)
    :return: (h, w, 3) uint8
    """
    height, width = rgb.shape[:2]
    if width <= max_width:
        return rgb
    new_height = max(1, round(height * max_width / width))
    return cv2.resize(rgb, (max_width, new_height), interpolation=cv2.INTER_AREA)


def encode_jpeg(rgb, quality):
    """
    Encode an RGB frame as JPEG.

    :param rgb: (H, W, 3) uint8
    :param quality: 1-100
    :return: bytes
    :raises ValueError: when OpenCV cannot encode it
    """
    ok, data = cv2.imencode('.jpg', np.ascontiguousarray(rgb[:, :, ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f'JPEG encoding of a {rgb.shape} frame failed')
    return data.tobytes()


def make_packet(header, jpeg):
    """
    Build a frame packet: header length, JSON header, JPEG.

    :param header: dict
    :param jpeg: bytes
    :return: bytes
    """
    text = json.dumps(header).encode()
    return HEADER_LENGTH.pack(len(text)) + text + jpeg


def parse_packet(packet):
    """
    Split a frame packet (what the page does in JavaScript; for tests and benchmarks).

    :param packet: bytes
    :return: (header dict, JPEG bytes)
    :raises ValueError: for a packet that is too short
    """
    if len(packet) < HEADER_LENGTH.size:
        raise ValueError('frame packet shorter than its header length')
    (length,) = HEADER_LENGTH.unpack_from(packet)
    if HEADER_LENGTH.size + length > len(packet):
        raise ValueError('frame packet shorter than its header')
    header = json.loads(packet[HEADER_LENGTH.size:HEADER_LENGTH.size + length])
    return header, bytes(packet[HEADER_LENGTH.size + length:])


class FrameHub:
    """
    Hold the newest camera message and turn it into JPEG packets for the browsers.

    :param decode: callable(message) -> (rgb array, stamp_s); raises ValueError for a bad image
    :param sink: callable(stream, packet bytes), called on the encoder thread
    :param watching: callable() -> True while at least one browser wants frames
    :param fps: most frames per second encoded
    :param jpeg_quality: JPEG quality
    :param policy_image_size: side of the policy stream (px)
    :param full_max_width: widest full-stream frame (px)
    :param on_frame: callable(width, height, encoding, rate_hz) per arrival, or None
        (width/height/encoding are 0/'' until a frame was decoded)
    :param on_error: callable(text) when a frame cannot be shown ('' when one could again)
    :param clock: wall clock (s)
    """

    def __init__(self, decode, sink, watching, fps=15.0, jpeg_quality=80, policy_image_size=96,
                 full_max_width=1280, on_frame=None, on_error=None, clock=time.time):
        self.decode = decode
        self.sink = sink
        self.watching = watching
        self.period_s = 1.0 / fps
        self.jpeg_quality = jpeg_quality
        self.policy_image_size = policy_image_size
        self.full_max_width = full_max_width
        self.on_frame = on_frame
        self.on_error = on_error
        self.clock = clock
        self._condition = threading.Condition()
        self._newest = None
        self._stop = False
        self._arrivals = collections.deque(maxlen=30)
        self._size = (0, 0, '')
        self._error = ''
        self._last_encoded_s = -1e9
        self._last_received_s = -1e9
        self.seq = 0
        self.encoded = 0
        self.encode_s = collections.deque(maxlen=200)
        self._thread = threading.Thread(target=self._run, name='dashboard-frames', daemon=True)
        self._thread.start()

    def offer(self, message, received_s=None):
        """
        Hand over the newest camera message (cheap: called in the ROS callback).

        :param message: whatever ``decode`` takes (the node gives the serialised bytes)
        :param received_s: arrival wall time (default: now)
        """
        received_s = self.clock() if received_s is None else received_s
        with self._condition:
            self._newest = (message, received_s)
            self._arrivals.append(received_s)
            self._condition.notify()
        if self.on_frame is not None:
            self.on_frame(*self._size, self.rate_hz())

    def rate_hz(self):
        """:return: arrival rate over the newest frames (Hz; 0 before two frames)."""
        arrivals = list(self._arrivals)
        if len(arrivals) < 2 or arrivals[-1] <= arrivals[0]:
            return 0.0
        return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])

    def close(self, timeout_s=2.0):
        """Stop the encoder thread."""
        with self._condition:
            self._stop = True
            self._condition.notify()
        self._thread.join(timeout_s)

    def _take(self):
        """
        Wait for a frame to encode; None when stopping.

        A frame is taken as soon as it arrives when it came at least :data:`MIN_SPACING` of a
        period after the previous one taken (so a faster camera is thinned without making the
        frame wait), else once a whole period has passed since the previous encoding.
        """
        while True:
            with self._condition:
                while True:
                    if self._stop:
                        return None
                    item = self._newest
                    if item is None:
                        self._condition.wait(0.5)
                        continue
                    spaced = item[1] >= self._last_received_s + MIN_SPACING * self.period_s
                    due_s = self._last_encoded_s + self.period_s - time.monotonic()
                    if spaced or due_s <= 0:
                        break
                    self._condition.wait(due_s)
                self._newest = None
            if not self.watching():
                continue
            self._last_encoded_s = time.monotonic()
            self._last_received_s = item[1]
            return item

    def _run(self):
        while True:
            item = self._take()
            if item is None:
                return
            try:
                self._encode(*item)
            except Exception as error:  # noqa: B902 - a bad frame must not end the thread
                text = f'{type(error).__name__}: {error}'
                if text != self._error and self.on_error is not None:
                    self.on_error(text)
                self._error = text
                continue
            if self._error and self.on_error is not None:
                self.on_error('')
            self._error = ''

    def _encode(self, message, received_s):
        started = time.perf_counter()
        rgb, stamp_s, encoding = self.decode(message)
        self._size = (int(rgb.shape[1]), int(rgb.shape[0]), encoding)
        self.seq += 1
        views = {'policy': policy_view(rgb, self.policy_image_size),
                 'full': full_view(rgb, self.full_max_width)}
        packets = []
        for stream in STREAMS:
            view = views[stream]
            jpeg = encode_jpeg(view, self.jpeg_quality)
            header = {'stream': stream, 'seq': self.seq, 'width': int(view.shape[1]),
                      'height': int(view.shape[0]), 'source_width': self._size[0],
                      'source_height': self._size[1], 'stamp_s': stamp_s,
                      'received_s': received_s, 'encoded_s': self.clock()}
            packets.append((stream, make_packet(header, jpeg)))
        self.encode_s.append(time.perf_counter() - started)
        self.encoded += 1
        for stream, packet in packets:
            self.sink(stream, packet)
