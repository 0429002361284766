"""The child launcher: a process started through it gets SIGTERM when its parent dies."""

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from active_finetune.child_launcher import launch_command, main, PARENT_GONE_STATUS
import pytest

DEADLINE_S = 60.0

# A parent that starts a sleeping child through the launcher, prints the child's pid and waits.
PARENT = """
import subprocess, sys, time
from active_finetune.child_launcher import launch_command
child = subprocess.Popen(launch_command(__import__("os").getpid(), [
    sys.executable, "-c",
    "import signal, sys, time\\n"
    "signal.signal(signal.SIGTERM, lambda *a: (print('child got SIGTERM', flush=True), "
    "sys.exit(0)))\\n"
    "print('child running', flush=True)\\n"
    "time.sleep(600)"]), stdout=open(sys.argv[1], "w"))
print(child.pid, flush=True)
time.sleep(600)
"""


def alive(pid):
    """Tell whether a process exists and is not a zombie (Linux /proc)."""
    try:
        state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != 'Z'


def wait_until(predicate, deadline_s=DEADLINE_S):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_the_child_gets_sigterm_when_its_parent_is_killed(tmp_path, process_groups):
    log = tmp_path / 'child.log'
    # Parent and child share one new process group, killed at teardown whatever failed.
    parent = process_groups.popen([sys.executable, '-c', PARENT, str(log)],
                                  stdout=subprocess.PIPE, text=True)
    child_pid = None
    try:
        child_pid = int(parent.stdout.readline())
        assert wait_until(lambda: 'child running' in log.read_text())
        os.kill(parent.pid, signal.SIGKILL)  # no clean-up can run in the parent
        parent.wait(timeout=DEADLINE_S)
        assert wait_until(lambda: not alive(child_pid)), 'the child outlived its parent'
        assert 'child got SIGTERM' in log.read_text()
    finally:
        for pid in (parent.pid, child_pid):
            if pid is not None and alive(pid):
                os.kill(pid, signal.SIGKILL)
        parent.stdout.close()
        if parent.poll() is None:
            parent.wait()


def test_nothing_starts_when_the_parent_is_already_gone(capsys):
    # Our parent is not process 1, so "parent 1" counts as a parent that died meanwhile.
    assert os.getppid() != 1
    assert main(['1', '--', sys.executable, '-c', 'print("started")']) == PARENT_GONE_STATUS
    assert 'died before' in capsys.readouterr().err


def test_launch_command_wraps_the_node_command():
    assert launch_command(42, ['python', '-m', 'x']) == [
        sys.executable, '-m', 'active_finetune.child_launcher', '42', '--', 'python', '-m', 'x']
    with pytest.raises(ValueError):
        launch_command('parent', ['x'])
    assert main(['x', '--', 'true']) == 2
