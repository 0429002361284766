"""
Settings of the operator dashboard (the ROS parameters of ``dashboard_node``).

The page is served on ``host:port``.  A loopback host (``127.0.0.1``, ``::1``, ``localhost``,
the default) needs nothing else; any other address (a LAN address of the robot PC, or
``0.0.0.0``) is refused without a ``token``: the page, its state and its websocket then answer
only requests that carry ``?token=<token>`` (the URL the node logs has it).
"""

from dataclasses import dataclass, field, fields
import ipaddress
import math

LOOPBACK_NAMES = ('localhost',)
"""Host names taken as loopback without resolving them."""

MIN_TOKEN_LENGTH = 16
"""Shortest token accepted for a non-loopback host (characters)."""


def is_loopback(host):
    """
    Tell whether a bind address only accepts connections from this machine.

    :param host: IP address or host name as given to the server
    :return: True for 127.0.0.0/8, ::1 and ``localhost``; False otherwise (names are not resolved)
    """
    text = str(host).strip().strip('[]')
    if text.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


@dataclass
class DashboardConfig:
    """
    Parameters of the dashboard node.

    :param host: address the web server binds (loopback by default)
    :param port: TCP port of the web server (0: any free port, logged at start)
    :param token: access token; required (>= 16 characters) when ``host`` is not loopback
    :param camera_fps: most frames per second sent to the browser, per stream
    :param jpeg_quality: JPEG quality of the streamed frames (1-100)
    :param policy_image_size: side of the policy-input stream (the policy's input size, px)
    :param full_max_width: the full stream is downscaled on the server above this width (px)
    :param stale_camera_s: no frame for this long shows the camera as stale (s)
    :param dataset_dir: directory of recorded episodes, whose free disk space is shown
    :param min_free_disk_mb: less free space than this in dataset_dir shows 'disk low' (MB)
    :param expected_nodes: node names of the graph; a missing one is shown as missing
    :param service_timeout_s: deadline of a button's service call (s)
    :param estop_confirm_timeout_s: how long an estop button waits for mux/status (s)
    :param state_rate_hz: most state updates per second sent to each browser
    :param max_clients: most browser connections served at once (more are refused)
    """

    host: str = field(default='127.0.0.1', metadata={
        'description': 'address the web server binds: loopback by default; a LAN address or '
                       "'0.0.0.0' requires token (text)", 'read_only': True})
    port: int = field(default=8080, metadata={
        'description': 'TCP port of the web server (0: a free port, logged; count)',
        'range': (0, 65535), 'read_only': True})
    token: str = field(default='', metadata={
        'description': 'access token, at least 16 characters, required when host is not '
                       'loopback; the page URL then ends in ?token=<token> (text)',
        'read_only': True})
    camera_fps: float = field(default=15.0, metadata={
        'description': 'most camera frames per second sent to a browser, per stream (Hz)',
        'range': (1.0, 60.0), 'read_only': True})
    jpeg_quality: int = field(default=80, metadata={
        'description': 'JPEG quality of the streamed frames (1-100, unitless)',
        'range': (1, 100), 'read_only': True})
    policy_image_size: int = field(default=96, metadata={
        'description': "side of the policy-input stream, the policy's input size (px)",
        'range': (16, 1024), 'read_only': True})
    full_max_width: int = field(default=1280, metadata={
        'description': 'the full-resolution stream is downscaled on the server above this '
                       'width (px)', 'range': (64, 8192), 'read_only': True})
    stale_camera_s: float = field(default=1.0, metadata={
        'description': 'no camera frame for this long shows the camera as stale (s)',
        'range': (0.1, 60.0), 'read_only': True})
    dataset_dir: str = field(default='data/episodes', metadata={
        'description': 'directory of recorded episodes whose free disk space is shown (path)',
        'read_only': True})
    min_free_disk_mb: float = field(default=1000.0, metadata={
        'description': "less free space than this in dataset_dir shows 'disk low' (MB)",
        'range': (0.0, None), 'read_only': True})
    expected_nodes: tuple = field(default=(
        'command_mux', 'policy', 'task_selector', 'demo_recorder', 'trainer'), metadata={
        'description': 'node names of the graph; one not found in the ROS graph is shown as '
                       'missing (names)', 'read_only': True})
    service_timeout_s: float = field(default=3.0, metadata={
        'description': "deadline of a button's service call (s)", 'range': (0.1, 60.0),
        'read_only': True})
    estop_confirm_timeout_s: float = field(default=2.0, metadata={
        'description': 'how long an estop button waits for the command mux to confirm on '
                       'mux/status (s)', 'range': (0.1, 60.0), 'read_only': True})
    state_rate_hz: float = field(default=10.0, metadata={
        'description': 'most state updates per second sent to each browser (Hz)',
        'range': (0.5, 50.0), 'read_only': True})
    max_clients: int = field(default=20, metadata={
        'description': 'most browser connections served at once; more are refused (count)',
        'range': (1, 1000), 'read_only': True})

    def __post_init__(self):
        self.expected_nodes = tuple(self.expected_nodes)
        numbers = (('port', 0, 65535), ('camera_fps', 1.0, 60.0), ('jpeg_quality', 1, 100),
                   ('policy_image_size', 16, 1024), ('full_max_width', 64, 8192),
                   ('stale_camera_s', 0.1, 60.0), ('min_free_disk_mb', 0.0, math.inf),
                   ('service_timeout_s', 0.1, 60.0), ('estop_confirm_timeout_s', 0.1, 60.0),
                   ('state_rate_hz', 0.5, 50.0), ('max_clients', 1, 1000))
        for name, low, high in numbers:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not low <= value <= high:
                raise ValueError(f'{name} must be a number in [{low}, {high}], got {value!r}')
        for name in ('port', 'jpeg_quality', 'policy_image_size', 'full_max_width',
                     'max_clients'):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f'{name} must be an integer, got {getattr(self, name)!r}')
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f'host must be an address, got {self.host!r}')
        if not isinstance(self.token, str):
            raise ValueError('token must be text')
        if not is_loopback(self.host) and len(self.token) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f'host {self.host!r} is not a loopback address: anyone on that network could '
                f'drive the robot, so a token of at least {MIN_TOKEN_LENGTH} characters is '
                "required (-p token:=$(python3 -c 'import secrets; print(secrets.token_urlsafe"
                "(24))'))")
        if self.token and len(self.token) < MIN_TOKEN_LENGTH:
            raise ValueError(f'token must have at least {MIN_TOKEN_LENGTH} characters')
        if not all(isinstance(n, str) and n for n in self.expected_nodes):
            raise ValueError(f'expected_nodes must be node names, got {self.expected_nodes!r}')

    def url(self, port=None):
        """
        Give the page's URL, with the token when there is one.

        :param port: the port actually bound (default: ``port``)
        :return: str, e.g. ``http://127.0.0.1:8080/``
        """
        host = self.host.strip()
        if host in ('0.0.0.0', '::'):
            host = '127.0.0.1'
        if ':' in host and not host.startswith('['):
            host = f'[{host}]'
        suffix = f'?token={self.token}' if self.token else ''
        return f'http://{host}:{self.port if port is None else port}/{suffix}'


def graph_dashboard_url(graph):
    """
    Give the URL a graph's dashboard will serve, from the parameters its node starts with.

    The host, port and token come from the graph's parameter file, its arguments and its
    overrides (:func:`active_finetune.graph.load_graph`), as the node reads them.  When that
    port is taken at start the node serves on a free port instead, logs it and publishes it on
    ``dashboard/url``.

    :param graph: :class:`active_finetune.graph.Graph`
    :return: str, e.g. ``http://127.0.0.1:8080/``; None when the graph has no dashboard node
        (``dashboard:=false``) or its port is 0 (any free port, known only once it runs)
    :raises ValueError: for parameters the node would refuse (e.g. a LAN host without a token)
    """
    node = next((n for n in graph.nodes if n.executable == 'dashboard_node'), None)
    if node is None:
        return None
    names = {f.name for f in fields(DashboardConfig)}
    config = DashboardConfig(**{k: v for k, v in node.parameters.items() if k in names})
    if config.port == 0:
        return None
    return config.url()
