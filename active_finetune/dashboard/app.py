"""
The dashboard's web application (FastAPI) and the uvicorn server thread that serves it.

Routes (all but ``/static/*`` need ``?token=`` when the node has a token):

- ``GET /``: the page (``static/index.html``); ``GET /static/<file>``: its JavaScript and CSS,
  read from the package once at start (nothing is fetched from the internet);
- ``GET /api/state``: the state snapshot (:meth:`DashboardState.snapshot`) as JSON;
- ``WS /ws``: the live channel.  The server sends text messages (``{"type": "state", ...}``
  at most ``state_rate_hz`` times a second when something changed, at least once a second;
  ``{"type": "result", "id", "action", "ok", "message"}`` for each command; ``{"type":
  "error", "message"}`` for a message it could not use) and binary frame packets
  (:mod:`active_finetune.dashboard.frames`).  The browser sends commands as JSON text:
  ``{"id": 1, "action": "record_start"}``; actions and their arguments are in
  :data:`ACTIONS`.

Every browser has its own sender task that holds only the newest state and the newest packet
of each stream, so a slow or stalled browser skips frames and never delays the others or the
ROS node; a browser that disconnects mid-stream is dropped.  A malformed message is answered
with an error and the connection stays open.
"""

import asyncio
import collections
import contextlib
import hmac
import importlib.resources
import json
import logging
import math
import threading
import time

from active_finetune.dashboard.frames import STREAMS
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse, Response
import uvicorn

logger = logging.getLogger(__name__)

ACTIONS = {
    'record_start': {}, 'record_stop': {}, 'discard': {}, 'skip': {}, 'rollback': {},
    'mark': {'success': bool, 'note': str},
    'estop': {'engage': bool},
}
"""Commands a browser may send, with their arguments and types (all required)."""

MAX_MESSAGE_BYTES = 4096
"""Largest command a browser may send; a larger one is refused (the socket stays open)."""

MAX_NOTE_CHARS = 1000
STATIC_FILES = {'index.html': 'text/html; charset=utf-8',
                'dashboard.js': 'text/javascript; charset=utf-8',
                'dashboard.css': 'text/css; charset=utf-8'}
MAX_PENDING_MESSAGES = 100
FORCED_STATE_PERIOD_S = 1.0


class CommandError(ValueError):
    """A browser message that is not a valid command."""


def parse_command(text):
    """
    Check a browser's command message.

    :param text: the websocket text message
    :return: (id, action, args dict)
    :raises CommandError: for anything that is not a known action with valid arguments
    """
    if len(text.encode('utf-8', errors='replace')) > MAX_MESSAGE_BYTES:
        raise CommandError(f'message longer than {MAX_MESSAGE_BYTES} bytes')
    try:
        message = json.loads(text)
    except ValueError as error:
        raise CommandError(f'not JSON: {error}') from None
    if not isinstance(message, dict):
        raise CommandError('a command is a JSON object')
    command_id = message.get('id')
    if command_id is not None and (isinstance(command_id, bool)
                                   or not isinstance(command_id, (int, str))):
        raise CommandError('id must be a number or text')
    action = message.get('action')
    if action not in ACTIONS:
        raise CommandError(f'unknown action {action!r}; actions: {", ".join(sorted(ACTIONS))}')
    args = {}
    for name, kind in ACTIONS[action].items():
        value = message.get(name)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise CommandError(f'{action}: {name} must be {kind.__name__}, got {value!r}')
        args[name] = value
    if action == 'mark' and len(args['note']) > MAX_NOTE_CHARS:
        raise CommandError(f'mark: note longer than {MAX_NOTE_CHARS} characters')
    return command_id, action, args


def load_static():
    """
    Read the page's files from the package (once, at start).

    :return: dict name -> bytes
    """
    folder = importlib.resources.files('active_finetune.dashboard') / 'static'
    return {name: (folder / name).read_bytes() for name in STATIC_FILES}


def _clean(value):
    """Replace NaN/infinity by None so the text is strict JSON for the browser."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def to_json(value):
    """:return: strict JSON text of ``value`` (NaN and infinities as null)."""
    return json.dumps(_clean(value), allow_nan=False)


class Client:
    """One browser connection: its socket and what is waiting to be sent to it."""

    def __init__(self, websocket):
        self.websocket = websocket
        self.frames = {}
        self.state = None
        self.messages = collections.deque(maxlen=MAX_PENDING_MESSAGES)
        self.wake = asyncio.Event()
        self.sent_frames = 0
        self.connected_s = time.time()

    def push_frame(self, stream, packet):
        self.frames[stream] = packet
        self.wake.set()

    def push_state(self, text):
        self.state = text
        self.wake.set()

    def push_message(self, text):
        self.messages.append(text)
        self.wake.set()

    async def send_loop(self):
        """Send what is waiting, newest state and newest frame per stream only; until closed."""
        websocket = self.websocket
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.messages:
                await websocket.send_text(self.messages.popleft())
            if self.state is not None:
                text, self.state = self.state, None
                await websocket.send_text(text)
            for stream in STREAMS:
                packet = self.frames.pop(stream, None)
                if packet is not None:
                    await websocket.send_bytes(packet)
                    self.sent_frames += 1


class Broadcaster:
    """
    The set of connected browsers; takes frames from the encoder thread (thread-safe).

    :param state: :class:`~active_finetune.dashboard.state.DashboardState`
    :param state_rate_hz: most state messages per second
    """

    def __init__(self, state, state_rate_hz=10.0):
        self.state = state
        self.state_period_s = 1.0 / state_rate_hz
        self.clients = set()
        self.loop = None
        self.dropped_clients = 0

    def watching(self):
        """:return: True while a browser is connected (the frame hub encodes only then)."""
        return bool(self.clients) and self.loop is not None

    def publish_frame(self, stream, packet):
        """Give every browser the newest packet of a stream (from any thread)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._frame, stream, packet)

    def _frame(self, stream, packet):
        for client in self.clients:
            client.push_frame(stream, packet)

    async def state_loop(self):
        """Send the state snapshot when it changed (and at least once a second)."""
        last_revision, last_sent_s = None, 0.0
        while True:
            await asyncio.sleep(self.state_period_s)
            now_s = time.monotonic()
            if not self.clients:
                continue
            if self.state.revision == last_revision and \
                    now_s - last_sent_s < FORCED_STATE_PERIOD_S:
                continue
            last_revision, last_sent_s = self.state.revision, now_s
            try:
                text = to_json(self.state.snapshot())
            except Exception as error:  # noqa: B902 - the loop must go on
                logger.error('state snapshot failed: %r', error)
                continue
            for client in self.clients:
                client.push_state(text)


def create_app(state, perform, static=None, token='', state_rate_hz=10.0, max_clients=20,
               command_timeout_s=30.0):
    """
    Build the dashboard's FastAPI application.

    :param state: :class:`~active_finetune.dashboard.state.DashboardState`
    :param perform: callable(action, args) -> concurrent.futures.Future of (ok, message); runs
        a command through the ROS node (thread-safe, never blocks)
    :param static: dict name -> bytes of the page's files (default :func:`load_static`)
    :param token: required ``?token=`` value ('' = none)
    :param state_rate_hz: most state messages per second per browser
    :param max_clients: most browsers at once
    :param command_timeout_s: a command whose future has not finished by then is reported failed
    :return: (FastAPI app, :class:`Broadcaster`)
    """
    static = load_static() if static is None else static
    broadcaster = Broadcaster(state, state_rate_hz)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        broadcaster.loop = asyncio.get_running_loop()
        task = asyncio.create_task(broadcaster.state_loop())
        try:
            yield
        finally:
            task.cancel()
            broadcaster.loop = None

    app = FastAPI(title='active_finetune dashboard', lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.broadcaster = broadcaster

    def authorised(query_token):
        if not token:
            return True
        return hmac.compare_digest(str(query_token or '').encode(), token.encode())

    def refused():
        return PlainTextResponse('this dashboard needs ?token=<token> (the URL the node logs)',
                                 status_code=401)

    @app.get('/')
    async def index(request: Request):
        if not authorised(request.query_params.get('token')):
            return refused()
        return Response(static['index.html'], media_type=STATIC_FILES['index.html'],
                        headers={'Cache-Control': 'no-store'})

    @app.get('/static/{name}')
    async def static_file(name: str):
        if name not in static or name == 'index.html':
            return PlainTextResponse('not found', status_code=404)
        return Response(static[name], media_type=STATIC_FILES[name],
                        headers={'Cache-Control': 'no-store'})

    @app.get('/api/state')
    async def api_state(request: Request):
        if not authorised(request.query_params.get('token')):
            return refused()
        return JSONResponse(json.loads(to_json(state.snapshot())))

    async def run_command(client, command_id, action, args):
        try:
            future = perform(action, args)
            ok, message = await asyncio.wait_for(asyncio.wrap_future(future), command_timeout_s)
        except asyncio.TimeoutError:
            ok, message = False, f'no answer within {command_timeout_s:g} s'
        except Exception as error:  # noqa: B902 - report, never kill the connection
            ok, message = False, f'{type(error).__name__}: {error}'
        client.push_message(to_json({'type': 'result', 'id': command_id, 'action': action,
                                     'ok': bool(ok), 'message': str(message)}))

    @app.websocket('/ws')
    async def websocket_endpoint(websocket: WebSocket):
        if not authorised(websocket.query_params.get('token')):
            await websocket.close(code=1008, reason='token required')
            return
        if len(broadcaster.clients) >= max_clients:
            await websocket.close(code=1013, reason=f'at most {max_clients} browsers')
            return
        await websocket.accept()
        client = Client(websocket)
        broadcaster.clients.add(client)
        client.push_state(to_json(state.snapshot()))
        sender = asyncio.create_task(client.send_loop())
        commands = set()
        try:
            while True:
                receive = asyncio.create_task(websocket.receive())
                done, _ = await asyncio.wait({receive, sender},
                                             return_when=asyncio.FIRST_COMPLETED)
                if sender in done:  # the socket broke while sending
                    receive.cancel()
                    break
                message = receive.result()
                if message['type'] == 'websocket.disconnect':
                    break
                text = message.get('text')
                if text is None:
                    client.push_message(to_json({'type': 'error',
                                                 'message': 'binary messages are not commands'}))
                    continue
                try:
                    command_id, action, args = parse_command(text)
                except CommandError as error:
                    client.push_message(to_json({'type': 'error', 'message': str(error)}))
                    continue
                task = asyncio.create_task(run_command(client, command_id, action, args))
                commands.add(task)
                task.add_done_callback(commands.discard)
        except (WebSocketDisconnect, RuntimeError, OSError) as error:
            logger.info('browser connection ended: %r', error)
        finally:
            broadcaster.clients.discard(client)
            broadcaster.dropped_clients += 1
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            with contextlib.suppress(Exception):
                await websocket.close()

    return app, broadcaster


class DashboardServer:
    """
    Serve the app with uvicorn on its own thread (the ROS executor keeps the main thread).

    :param app: the FastAPI application
    :param host: bind address
    :param port: TCP port (0: any free port; :attr:`port` is the bound one after :meth:`start`)
    """

    def __init__(self, app, host, port):
        self.host = host
        self.port = port
        config = uvicorn.Config(app, host=host, port=port, log_level='warning', access_log=False,
                                ws='websockets-sansio', ws_max_size=64 * 1024, lifespan='on',
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name='dashboard-http',
                                        daemon=True)

    def start(self, timeout_s=10.0):
        """
        Start serving and wait until the socket is bound.

        :param timeout_s: how long to wait
        :return: the bound port
        :raises RuntimeError: when the server did not start (port in use, bad address, ...)
        """
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f'the dashboard web server did not start on '
                                   f'{self.host}:{self.port} (address in use or not on this '
                                   'machine?)')
            time.sleep(0.02)
        sockets = [s for server in self.server.servers for s in server.sockets]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self.port

    def stop(self, timeout_s=5.0):
        """Ask the server to exit and wait for its thread."""
        self.server.should_exit = True
        self._thread.join(timeout_s)
