"""Dashboard, ROS-free part: settings, state from payloads, frame encoding, the web app."""

import concurrent.futures
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request

from active_finetune import payloads
from active_finetune.dashboard.app import CommandError, create_app, DashboardServer, \
    parse_command
from active_finetune.dashboard.config import DashboardConfig, is_loopback
from active_finetune.dashboard.frames import FrameHub, make_packet, parse_packet, policy_view
from active_finetune.dashboard.state import DashboardState
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(120)

TOKEN = 'a-token-of-24-characters'


# ---------------------------------------------------------------- settings

def test_loopback_needs_no_token_and_a_lan_address_needs_one():
    assert is_loopback('127.0.0.1') and is_loopback('::1') and is_loopback('localhost')
    assert not is_loopback('0.0.0.0') and not is_loopback('192.168.1.20')
    assert DashboardConfig().url() == 'http://127.0.0.1:8080/'
    for host in ('0.0.0.0', '192.168.1.20'):
        with pytest.raises(ValueError, match='token'):
            DashboardConfig(host=host)
        with pytest.raises(ValueError, match='token'):
            DashboardConfig(host=host, token='short')
    config = DashboardConfig(host='192.168.1.20', token=TOKEN, port=9000)
    assert config.url() == f'http://192.168.1.20:9000/?token={TOKEN}'
    with pytest.raises(ValueError, match='port'):
        DashboardConfig(port=70000)


# ---------------------------------------------------------------- state

def next_task_text(**changes):
    payload = payloads.NextTask(
        task='push-v3', request_id=4, round=1, tasks_this_round=['push-v3'], strategy='amf',
        scores={'push-v3': 0.45, 'reach-v3': 0.1, 'drawer-open-v3': float('nan')},
        terms={'push-v3': {'push-v3': 0.3, 'reach-v3': 0.15}},
        demo_counts={'push-v3': 1, 'reach-v3': 0, 'drawer-open-v3': 2}, demos_used=3, budget=8,
        budget_remaining=5, policy_version=1, reason='amf selection', **changes)
    return payloads.encode(payload)


def test_state_decodes_every_topic_through_payloads_and_keeps_the_last_good_value():
    clock = [100.0]
    state = DashboardState(expected_nodes=('policy', 'command_mux'), clock=lambda: clock[0])
    state.on_next_task(next_task_text())
    revision = state.revision
    state.on_next_task('{"task": 3}')
    state.on_next_task('not json')
    assert state.topic('operator/next_task')['task'] == 'push-v3'
    assert state.revision > revision
    errors = [e['text'] for e in state.snapshot()['events'] if e['level'] == 'error']
    assert len(errors) == 2 and "'task'" in errors[0]
    snapshot = state.snapshot()
    # NaN is not JSON: it reaches the page as null, the other scores unchanged.
    assert snapshot['topics']['operator/next_task']['scores'] == {
        'push-v3': 0.45, 'reach-v3': 0.1, 'drawer-open-v3': None}
    json.dumps(snapshot, allow_nan=False)

    state.on_trainer_status(payloads.encode(payloads.TrainerStatus(
        state='training', round=1, progress=0.5, message='step 200/300 loss -4.768')))
    state.on_trainer_status(payloads.encode(payloads.TrainerStatus(
        state='training', round=1, progress=0.9, message='step 300/300 loss 2.5e-01')))
    assert [p['loss'] for p in state.snapshot()['loss']] == [-4.768, 0.25]
    for version, rate in ((1, 0.2), (2, 0.6)):
        state.on_evaluation(payloads.encode(payloads.Evaluation(
            version=version, success={'push-v3': rate}, mean=rate, episodes=5)))
    assert [e['success']['push-v3'] for e in state.snapshot()['evaluations']] == [0.2, 0.6]
    sha = 'ab' * 32
    state.on_checkpoint(json.dumps({'version': 2, 'sha256': sha, 'path': '/c/2', 'round': 1,
                                    'weights_b64': 'AAAA', 'config': {'a': 1}}))
    checkpoint = state.topic('trainer/checkpoint')
    assert checkpoint['sha256'] == sha and checkpoint['weights_in_message']
    assert 'weights_b64' not in checkpoint and 'config' not in checkpoint


def test_warnings_tell_missing_nodes_stale_camera_recorder_error_and_disk_low():
    clock = [100.0]
    state = DashboardState(expected_nodes=('policy', 'command_mux', 'trainer'),
                           stale_camera_s=1.0, min_free_disk_mb=500.0, clock=lambda: clock[0])
    codes = {w['code'] for w in state.warnings()}
    assert codes == {'camera_none'}
    state.on_graph([], 0)
    assert {'no_nodes', 'mux_missing'} <= {w['code'] for w in state.warnings()}
    state.on_graph(['policy', 'command_mux'], 1)
    warnings = {w['code']: w['text'] for w in state.warnings()}
    assert warnings['nodes_missing'] == 'nodes missing: trainer' and 'mux_missing' not in warnings
    state.on_camera_frame(640, 480, 'rgb8', 30.0)
    assert 'camera_none' not in {w['code'] for w in state.warnings()}
    clock[0] += 1.5
    assert 'camera_stale' in {w['code'] for w in state.warnings()}
    assert state.snapshot()['camera']['stale']
    state.on_recorder_status(payloads.encode(payloads.RecorderStatus(
        state='error', message='No space left on device')))
    state.on_disk('/data', 120.0)
    warnings = {w['code']: w['text'] for w in state.warnings()}
    assert 'No space left' in warnings['recorder_error']
    assert warnings['disk_low'].startswith('disk low: 120 MB free')
    # The estop is what the mux confirms, not what was sent.
    state.on_estop_sent(True)
    assert state.estop_confirmed() is None and 'estop' not in warnings
    state.on_mux_status(payloads.encode(payloads.MuxStatus(source='none', estop=True)))
    assert state.estop_confirmed() is True
    assert 'estop' in {w['code'] for w in state.warnings()}


# ---------------------------------------------------------------- frames

def test_policy_view_is_the_policy_inference_resize():
    from active_finetune.policy.inference import resize_image
    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    assert np.array_equal(policy_view(rgb, 96), resize_image(rgb, 96))


def test_frame_hub_encodes_the_newest_frame_at_most_fps_and_only_while_watched():
    packets = []
    watching = threading.Event()
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(3)]
    hub = FrameHub(lambda i: (frames[i % 3], 1000.0 + i, 'rgb8'),
                   lambda stream, packet: packets.append((stream, packet)), watching.is_set,
                   fps=10.0, policy_image_size=96, full_max_width=320)
    try:
        for i in range(20):
            hub.offer(i)
            time.sleep(0.01)
        time.sleep(0.2)
        assert packets == [], 'encoded with nobody watching'
        watching.set()
        started = time.monotonic()
        i = 0
        while time.monotonic() - started < 1.5:  # a 100 Hz camera
            hub.offer(i)
            i += 1
            time.sleep(0.01)
        time.sleep(0.2)
    finally:
        hub.close()
    full = [parse_packet(p) for s, p in packets if s == 'full']
    policy = [parse_packet(p) for s, p in packets if s == 'policy']
    assert len(full) == len(policy)
    # 10 fps asked: a frame is taken once it comes 0.75 of a period after the previous one
    # taken, so at most 1 / 0.075 s = 13.3 a second over the 1.5 s (+0.2 s) of frames.
    assert 12 <= len(full) <= 1.7 * 13.4 + 1, len(full)
    header, jpeg = full[-1]
    assert (header['width'], header['height']) == (320, 240)
    assert (header['source_width'], header['source_height']) == (640, 480)
    assert jpeg[:2] == b'\xff\xd8' and header['received_s'] <= header['encoded_s']
    assert policy[-1][0]['width'] == policy[-1][0]['height'] == 96
    assert [h['seq'] for h, _ in full] == sorted(h['seq'] for h, _ in full)


def test_frame_hub_reports_a_bad_frame_and_goes_on():
    errors, packets = [], []

    def decode(message):
        if message == 'bad':
            raise ValueError('image encoding 16UC1 is not supported')
        return np.zeros((60, 80, 3), np.uint8), 1.0, 'rgb8'

    hub = FrameHub(decode, lambda s, p: packets.append(p), lambda: True, fps=50.0,
                   on_error=errors.append)
    try:
        hub.offer('bad')
        deadline = time.monotonic() + 5
        while not errors and time.monotonic() < deadline:
            time.sleep(0.01)
        hub.offer('good')
        while len(errors) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        hub.close()
    assert errors == ['ValueError: image encoding 16UC1 is not supported', '']
    assert len(packets) == 2


def test_packets_round_trip():
    header, jpeg = parse_packet(make_packet({'stream': 'full', 'seq': 3}, b'\xff\xd8xyz'))
    assert header == {'stream': 'full', 'seq': 3} and jpeg == b'\xff\xd8xyz'
    with pytest.raises(ValueError):
        parse_packet(b'\x00\x00\x00\x10{}')


# ---------------------------------------------------------------- commands and web app

def test_parse_command_accepts_the_actions_and_refuses_the_rest():
    assert parse_command('{"id": 1, "action": "record_start"}') == (1, 'record_start', {})
    assert parse_command('{"action": "mark", "success": false, "note": "slipped"}') == (
        None, 'mark', {'success': False, 'note': 'slipped'})
    assert parse_command('{"id": "a", "action": "estop", "engage": true}')[2] == {
        'engage': True}
    for bad in ('nope', '[1]', '{"action": "fly"}', '{"action": "estop", "engage": 1}',
                '{"action": "mark", "success": true}', '{"id": true, "action": "skip"}',
                json.dumps({'action': 'mark', 'success': True, 'note': 'x' * 5000})):
        with pytest.raises(CommandError):
            parse_command(bad)


class Served:
    """A dashboard app served on a free loopback port, with a frame pump."""

    def __init__(self, token='', max_clients=20):
        self.state = DashboardState(clock=time.time)
        self.calls = []
        app, self.broadcaster = create_app(self.state, self.perform, token=token,
                                           state_rate_hz=20.0, max_clients=max_clients)
        self.server = DashboardServer(app, '127.0.0.1', 0)
        self.port = self.server.start()
        self.stop = threading.Event()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def perform(self, action, args):
        self.calls.append((action, args))
        future = concurrent.futures.Future()
        future.set_result((action != 'rollback', f'{action} answered by the fake node'))
        return future

    def _pump(self):
        seq = 0
        while not self.stop.is_set():
            seq += 1
            packet = make_packet({'stream': 'full', 'seq': seq, 'received_s': time.time()},
                                 b'\xff\xd8' + bytes(20000))
            self.broadcaster.publish_frame('full', packet)
            time.sleep(1 / 30)

    def ws(self, query=''):
        return connect(f'ws://127.0.0.1:{self.port}/ws{query}', open_timeout=5)

    def close(self):
        self.stop.set()
        self.pump.join(2)
        self.server.stop()


@pytest.fixture
def served():
    app = Served()
    yield app
    app.close()


def receive_until(ws, predicate, timeout_s=5.0):
    """Read messages until one satisfies ``predicate``; return it (decoded) or fail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        value = message if isinstance(message, bytes) else json.loads(message)
        if predicate(value):
            return value
    raise AssertionError('no such message in time')


def count_frames(ws, seconds):
    frames, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            message = ws.recv(timeout=0.2)
        except TimeoutError:
            continue
        frames += isinstance(message, bytes)
    return frames


def test_malformed_messages_are_answered_and_the_connection_keeps_serving(served):
    with served.ws() as ws:
        first = receive_until(ws, lambda m: isinstance(m, dict) and m['type'] == 'state')
        assert 'warnings' in first and 'topics' in first
        for bad in ('{{{', '{"action": "launch_rocket"}', b'\x00\x01binary'):
            ws.send(bad)
            error = receive_until(ws, lambda m: isinstance(m, dict) and m['type'] == 'error')
            assert error['message']
        ws.send(json.dumps({'id': 7, 'action': 'record_start'}))
        result = receive_until(ws, lambda m: isinstance(m, dict) and m['type'] == 'result')
        assert result == {'type': 'result', 'id': 7, 'action': 'record_start', 'ok': True,
                          'message': 'record_start answered by the fake node'}
        ws.send(json.dumps({'id': 8, 'action': 'rollback'}))
        result = receive_until(ws, lambda m: isinstance(m, dict) and m['type'] == 'result')
        assert result['ok'] is False and result['id'] == 8
        assert count_frames(ws, 1.0) >= 10
    # Larger than the server's websocket limit: that connection is closed, the server serves on.
    with served.ws() as ws:
        ws.send('x' * 100_000)
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=5)
    with served.ws() as ws:
        assert count_frames(ws, 1.0) >= 10
    assert served.calls == [('record_start', {}), ('rollback', {})]


def test_ten_clients_at_once_and_one_that_disconnects_mid_stream(served):
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(served.ws()) for _ in range(10)]
        counts = [0] * 10
        threads = [threading.Thread(target=lambda i=i: counts.__setitem__(
            i, count_frames(clients[i], 2.0))) for i in range(10)]
        # One more client that stops reading, then vanishes without a close handshake.
        quitter = stack.enter_context(served.ws())
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        quitter.socket.close()
        for thread in threads:
            thread.join(10)
        assert min(counts) >= 30, counts  # 30 fps pump for 2 s, each client >= 15 fps
        deadline = time.monotonic() + 5
        while len(served.broadcaster.clients) > 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(served.broadcaster.clients) == 10
    with served.ws() as ws:
        assert count_frames(ws, 1.0) >= 10


def test_token_is_required_when_set_and_clients_are_limited():
    app = Served(token=TOKEN, max_clients=2)
    try:
        base = f'http://127.0.0.1:{app.port}'
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + '/', timeout=5)
        assert refused.value.code == 401
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + '/api/state?token=wrong-token-of-24-chars', timeout=5)
        page = urllib.request.urlopen(f'{base}/?token={TOKEN}', timeout=5).read().decode()
        assert 'static/dashboard.js' in page and 'https://' not in page
        script = urllib.request.urlopen(base + '/static/dashboard.js', timeout=5).read()
        assert b'new WebSocket' in script
        state = json.loads(urllib.request.urlopen(f'{base}/api/state?token={TOKEN}',
                                                  timeout=5).read())
        assert state['type'] == 'state'
        with pytest.raises(InvalidStatus, match='403'):
            with app.ws() as ws:
                ws.recv(timeout=5)
        with app.ws(f'?token={TOKEN}') as one, app.ws(f'?token={TOKEN}') as two:
            assert count_frames(one, 0.5) and count_frames(two, 0.5)
            with pytest.raises(InvalidStatus, match='403'):
                with app.ws(f'?token={TOKEN}') as third:
                    third.recv(timeout=5)
    finally:
        app.close()
