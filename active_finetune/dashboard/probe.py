"""Small client helpers for scripts, benchmarks and tests that start a dashboard and poll it."""

import json
import socket
import urllib.request


def free_port():
    """:return: a free TCP port on the loopback interface."""
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def get_state(url):
    """
    Fetch the dashboard's state.

    :param url: the page's URL, ending in '/'
    :return: the parsed ``api/state`` answer, or None when the dashboard does not answer
    """
    try:
        with urllib.request.urlopen(url + 'api/state', timeout=3) as answer:
            return json.loads(answer.read())
    except (OSError, ValueError):
        return None
