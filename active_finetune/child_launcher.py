"""
Start a command that dies with its parent: ``python -m active_finetune.child_launcher PID -- CMD``.

The graph runner starts every node through this launcher.  It asks Linux to send the process
``SIGTERM`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``), checks that the parent is still
the process ``PID`` (it may have died before the request took effect), then replaces itself with
the command (``execvp``: same process id, and the death signal survives the exec).  So a runner
killed by SIGKILL, or by a closed terminal, leaves no node running: each node gets SIGTERM and
stops as on Ctrl-C (the policy and the mux publish a final zero twist).

The signal follows the *thread* that started the process: a runner must start its nodes from a
thread that lives as long as the graph (the main thread of ``af-runner``).

ROS-free and import-light: it runs before every node.
"""

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
"""prctl option: signal to receive when the parent dies (linux/prctl.h)."""
PARENT_GONE_STATUS = 70
"""Exit status when the parent died before the death signal was armed."""


class ParentDeathSignalError(OSError):
    """The parent-death signal cannot be set (not Linux, or prctl failed)."""


def set_parent_death_signal(sig=signal.SIGTERM):
    """
    Ask the kernel to send ``sig`` to this process when its parent thread exits (Linux only).

    :param sig: the signal
    :raises ParentDeathSignalError: on a system without prctl or when the call fails
    """
    if not sys.platform.startswith('linux'):
        raise ParentDeathSignalError(f'no parent-death signal on {sys.platform}')
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise ParentDeathSignalError(errno, f'prctl(PR_SET_PDEATHSIG, {int(sig)}) failed: '
                                     f'{os.strerror(errno)}')


def launch_command(parent_pid, command):
    """
    Build the command line that runs ``command`` through this launcher.

    :param parent_pid: process id of the parent whose death must end the command
    :param command: list of str
    :return: list of str
    """
    return [sys.executable, '-m', 'active_finetune.child_launcher', str(int(parent_pid)),
            '--'] + list(command)


def main(argv=None):
    """
    Arm the death signal, check the parent, exec the command.

    :param argv: ``[PID, '--', command...]`` (default: sys.argv[1:])
    :return: an exit status when the command cannot be started (otherwise it never returns)
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[1] != '--' or not argv[0].isdigit():
        print(f'usage: python -m active_finetune.child_launcher PARENT_PID -- COMMAND...; '
              f'got {argv!r}', file=sys.stderr)
        return 2
    parent_pid, command = int(argv[0]), argv[2:]
    try:
        set_parent_death_signal(signal.SIGTERM)
    except ParentDeathSignalError as error:
        print(f'child_launcher: {error}; {command[0]} may outlive its parent', file=sys.stderr)
    if os.getppid() != parent_pid:
        print(f'child_launcher: parent {parent_pid} died before {command[0]} started; not '
              'starting it', file=sys.stderr)
        return PARENT_GONE_STATUS
    try:
        os.execvp(command[0], command)
    except OSError as error:
        print(f'child_launcher: cannot start {command!r}: {error}', file=sys.stderr)
        return 127
    return 0  # not reached: execvp replaced this process


if __name__ == '__main__':
    raise SystemExit(main())
