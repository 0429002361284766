"""Shared pytest set-up: headless rendering, one torch thread, --runslow, process groups."""

import os
import signal
import subprocess

import pytest

os.environ.setdefault('MUJOCO_GL', 'egl')


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', default=False,
                     help='also run tests marked slow')


def pytest_configure(config):
    import torch
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if config.getoption('--runslow'):
        return
    skip = pytest.mark.skip(reason='slow: run with --runslow')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip)


class ProcessGroups:
    """
    Start processes each in a session (and process group) of its own; kill every group at the end.

    A test that starts processes through this (the ``process_groups`` fixture) leaves nothing
    running, whatever failed: at teardown every group still alive gets SIGKILL, including
    workers a child spawned and a child whose leader already exited.  :meth:`run` is
    ``subprocess.run(capture_output=True, text=True)`` that kills the whole group, not only the
    child, when its timeout passes.
    """

    def __init__(self):
        self._processes = []

    def popen(self, command, **kwargs):
        """
        Start ``command`` in a new session (``subprocess.Popen(start_new_session=True)``).

        :param command: argv list
        :param kwargs: more Popen arguments
        :return: the Popen
        """
        process = subprocess.Popen(command, start_new_session=True, **kwargs)
        self._processes.append(process)
        return process

    def run(self, command, timeout, **kwargs):
        """
        Run ``command`` to its end in a new session, capturing text output.

        :param command: argv list
        :param timeout: seconds; past it the whole group is killed and TimeoutExpired raised
        :param kwargs: more Popen arguments (e.g. env, cwd, stdin)
        :return: subprocess.CompletedProcess
        """
        kwargs.setdefault('stdout', subprocess.PIPE)
        kwargs.setdefault('stderr', subprocess.PIPE)
        process = self.popen(command, text=True, **kwargs)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:
            kill_group(process)
            process.communicate()
            raise
        kill_group(process)  # anything the child left behind in its group
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    def kill_all(self):
        """SIGKILL every group started here that is still alive, and reap the leaders."""
        for process in self._processes:
            kill_group(process)
            try:
                process.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                pass


def kill_group(process):
    """
    SIGKILL the process group a ``start_new_session`` child leads, if any member is left.

    The kernel does not give a pid to a new process while a group of that number exists, so
    the group id stays ours after the leader was reaped, as long as one member lives.

    :param process: Popen started with start_new_session=True
    """
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture
def process_groups():
    """Give a :class:`ProcessGroups`; every group it started is killed after the test."""
    groups = ProcessGroups()
    try:
        yield groups
    finally:
        groups.kill_all()
