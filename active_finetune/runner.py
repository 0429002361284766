"""
Start a node graph from the same YAML as the launch files, where ``ros2 launch`` is missing.

:class:`GraphRunner` starts every node of a graph (:mod:`active_finetune.graph`) in its own
process, in its own process group, with its parameters in a ROS 2 parameter file and its output
in ``<log_dir>/<node>.log``.  :meth:`GraphRunner.check` raises :class:`NodeDiedError` when a
node process has exited; :meth:`GraphRunner.stop` sends SIGINT to every process group, waits,
then SIGTERM, then SIGKILL, so no node (nor a worker it spawned) is left behind.  Every node is
started through :mod:`active_finetune.child_launcher`, so it gets SIGTERM (and stops as on
Ctrl-C, publishing its final zero) when the runner dies without stopping it (SIGKILL, a crash).

``af-runner sim|robot|gazebo [--set node.param=value] [--arg name=value] [--log-dir DIR]`` is the
command-line form: Ctrl-C, SIGTERM or SIGHUP (terminal closed, SSH dropped) stops the graph
cleanly, also when it was started with SIGINT ignored (in the background of a script); it exits
non-zero when a node dies.
"""

import argparse
import collections
import logging
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from active_finetune.child_launcher import launch_command
from active_finetune.graph import GraphConfigError, load_graph, parse_assignment

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 30
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Signals that make ``af-runner`` stop the graph cleanly."""


class NodeDiedError(RuntimeError):
    """
    A node process of the graph exited while the graph was running.

    :param node: node name
    :param returncode: the process's exit status (negative: killed by that signal)
    :param log_path: the node's log file
    :param log_tail: the last lines of that log
    """

    def __init__(self, node, returncode, log_path, log_tail):
        self.node = node
        self.returncode = returncode
        self.log_path = log_path
        self.log_tail = log_tail
        super().__init__(f'node {node!r} exited with status {returncode} (log {log_path}); '
                         f'last lines:\n{log_tail}')


def read_log_tail(path, lines=LOG_TAIL_LINES):
    """
    Return the last lines of a log file.

    :param path: file path
    :param lines: how many lines
    :return: str ('' when the file is missing)
    """
    try:
        with open(path, 'rb') as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 64 * 1024))
            text = log.read().decode('utf-8', errors='replace')
    except OSError:
        return ''
    return '\n'.join(collections.deque(text.splitlines(), maxlen=lines))


def default_log_dir(graph_name):
    """
    Name a fresh log directory under ROS's log root (ROS_LOG_DIR, ROS_HOME/log or ~/.ros/log).

    :param graph_name: graph name, part of the directory name
    :return: Path
    """
    root = os.environ.get('ROS_LOG_DIR') or os.path.join(
        os.environ.get('ROS_HOME', os.path.expanduser('~/.ros')), 'log')
    return Path(root) / f'af-runner-{graph_name}-{time.strftime("%Y%m%d-%H%M%S")}-{os.getpid()}'


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running(process):
    """Reap the leader if it exited; a group counts as running while any member is left."""
    process.poll()
    return _group_alive(process.pid)


def _signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class GraphRunner:
    """
    Run the nodes of a graph, each in its own process group; a context manager.

    :param graph_name: graph of config/graphs.yaml ('sim', 'robot', 'gazebo')
    :param overrides: dict ``'node.param' -> value`` (see :func:`active_finetune.graph.load_graph`)
    :param log_dir: directory for ``<node>.log`` and the parameter files (default
        :func:`default_log_dir`)
    :param arguments: dict of graph arguments (launch-argument equivalents)
    :param config_dir: config directory (default: the package's)
    :param env: extra environment variables for the node processes
    :param fastdds_profile: give every node the large shared-memory Fast DDS profile of
        :mod:`active_finetune.nodes.qos` (unless FASTRTPS_DEFAULT_PROFILES_FILE is already set)
    :param stop_timeout_s: how long :meth:`stop` waits after SIGINT, and again after SIGTERM
    :param die_with_runner: start each node through :mod:`active_finetune.child_launcher`, so
        it gets SIGTERM when the thread that started it exits (call :meth:`start` and
        :meth:`restart` from a thread that lives as long as the graph, e.g. the main thread)
    """

    def __init__(self, graph_name, overrides=None, log_dir=None, arguments=None, config_dir=None,
                 env=None, fastdds_profile=True, stop_timeout_s=15.0, die_with_runner=True):
        self.graph = load_graph(graph_name, overrides=overrides, arguments=arguments,
                                config_dir=config_dir)
        self.log_dir = Path(log_dir) if log_dir else default_log_dir(graph_name)
        self.extra_env = dict(env or {})
        self.fastdds_profile = fastdds_profile
        self.stop_timeout_s = stop_timeout_s
        self.die_with_runner = die_with_runner
        self.processes = {}
        self._log_files = {}
        self._env = None

    def __enter__(self):
        """Start the graph."""
        self.start()
        return self

    def __exit__(self, exc_type, exc, traceback):
        """Stop the graph, whatever happened in the block."""
        self.stop()
        return False

    def log_path(self, node):
        """
        Give the log file of a node.

        :param node: node name
        :return: Path
        """
        return self.log_dir / f'{node}.log'

    def log_tails(self, lines=LOG_TAIL_LINES):
        """
        Show the end of every node's log, e.g. to explain a failure.

        :param lines: lines per node
        :return: text, one ``--- <node> log tail ---`` block per node
        """
        return '\n'.join(f'--- {node} log tail ---\n{read_log_tail(self.log_path(node), lines)}'
                         for node in self.processes)

    def _environment(self):
        env = dict(os.environ)
        env.update(self.extra_env)
        env.setdefault('PYTHONUNBUFFERED', '1')
        env.setdefault('RCUTILS_LOGGING_BUFFERED_STREAM', '0')
        if self.fastdds_profile and 'FASTRTPS_DEFAULT_PROFILES_FILE' not in env:
            # Imported here: the profile text lives with the QoS profiles, which need rclpy.
            from active_finetune.nodes.qos import write_fastdds_profile
            env.update(write_fastdds_profile(self.log_dir / 'params' / 'fastdds_large_shm.xml'))
        return env

    def start(self):
        """
        Start every node of the graph in start order.

        :raises RuntimeError: when called twice
        :raises OSError: when a process cannot be started (already started ones are stopped)
        """
        if self.processes:
            raise RuntimeError(f'graph {self.graph.name!r} is already running')
        (self.log_dir / 'params').mkdir(parents=True, exist_ok=True)
        self._env = self._environment()
        try:
            for node in self.graph.nodes:
                self._launch(node)
        except OSError:
            self.stop()
            raise

    def _launch(self, node):
        params_file = self.log_dir / 'params' / f'{node.name}.yaml'
        params_file.write_text(node.parameters_yaml())
        if node.name not in self._log_files:
            self._log_files[node.name] = open(self.log_path(node.name), 'ab')
        log = self._log_files[node.name]
        command = node.command(params_file)
        log.write(f'# {" ".join(command)}\n'.encode())
        log.flush()
        if self.die_with_runner:
            command = launch_command(os.getpid(), command)
        self.processes[node.name] = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=self._env, start_new_session=True)
        logger.info('started %s (pid %d), log %s', node.name, self.processes[node.name].pid,
                    self.log_path(node.name))

    def kill(self, node, sig=signal.SIGKILL, timeout_s=10.0):
        """
        Send ``sig`` to a node's process group and wait for it to exit (fault injection).

        :param node: node name
        :param sig: signal (default SIGKILL: no clean-up runs, like a power cut of that process)
        :param timeout_s: how long to wait for the exit
        :return: the exit status, or None if it is still running
        :raises KeyError: for a node that was not started
        """
        process = self.processes[node]
        _signal_group(process.pid, sig)
        deadline = time.monotonic() + timeout_s
        while _running(process) and time.monotonic() < deadline:
            time.sleep(0.05)
        return process.poll()

    def restart(self, node):
        """
        Start a node again with the same command and parameters (after it died or was killed).

        :param node: node name
        :raises RuntimeError: when the node is still running
        :raises KeyError: for a node that is not part of the graph
        """
        if _running(self.processes[node]):
            raise RuntimeError(f'node {node!r} is still running; kill it first')
        self._launch(self.graph.node(node))

    def pid(self, node):
        """
        Give the process id of a node.

        :param node: node name
        :return: the node's process id
        :raises KeyError: for a node that was not started
        """
        return self.processes[node].pid

    def check(self):
        """
        Raise if any node process has exited.

        :raises NodeDiedError: naming the first node found dead, with the tail of its log
        """
        for name, process in self.processes.items():
            returncode = process.poll()
            if returncode is not None:
                self._log_files[name].flush()
                raise NodeDiedError(name, returncode, self.log_path(name),
                                    read_log_tail(self.log_path(name)))

    def _wait_all(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not any(_running(p) for p in self.processes.values()):
                return True
            time.sleep(0.05)
        return False

    def stop(self):
        """
        Stop every node: SIGINT to each process group, then SIGTERM, then SIGKILL.

        Signals go to the whole group, so worker processes a node spawned stop too.

        :return: dict node -> exit status
        """
        if not self.processes:
            return {}
        for sig, timeout_s in ((signal.SIGINT, self.stop_timeout_s),
                               (signal.SIGTERM, self.stop_timeout_s), (signal.SIGKILL, 5.0)):
            alive = [name for name, p in self.processes.items() if _running(p)]
            if not alive:
                break
            if sig != signal.SIGINT:
                logger.warning('nodes %s still running; sending %s', alive, sig.name)
            for name in alive:
                _signal_group(self.processes[name].pid, sig)
            if self._wait_all(timeout_s):
                break
        statuses = {}
        for name, process in self.processes.items():
            try:
                statuses[name] = process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                statuses[name] = None
                logger.error('node %s (pid %d) did not exit', name, process.pid)
        for log in self._log_files.values():
            log.close()
        self._log_files.clear()
        self.processes.clear()
        return statuses


def _parse_assignments(items, what):
    result = {}
    for item in items or ():
        key, value = parse_assignment(item)
        if key in result:
            raise GraphConfigError(f'{what} {key!r} given twice')
        result[key] = value
    return result


def main(argv=None):
    """
    Command-line entry point ``af-runner``.

    :param argv: arguments (default: sys.argv)
    :return: exit status: 0 after a clean Ctrl-C/SIGTERM/SIGHUP stop, 1 when a node died, 2 for
        bad input
    """
    parser = argparse.ArgumentParser(
        prog='af-runner', description='Run a node graph of active_finetune, each node in its own '
        'process, from the same YAML as the launch files (ros2 launch equivalent).')
    parser.add_argument('graph', help='graph name of config/graphs.yaml: sim, robot or gazebo')
    parser.add_argument('--set', dest='overrides', action='append', metavar='NODE.PARAM=VALUE',
                        help='override a node parameter (YAML syntax for numbers, booleans, '
                        'lists)')
    parser.add_argument('--arg', dest='arguments', action='append', metavar='NAME=VALUE',
                        help='set a graph argument, as ros2 launch NAME:=VALUE would')
    parser.add_argument('--log-dir', default=None, help='directory for <node>.log (default: under '
                        '~/.ros/log)')
    parser.add_argument('--config-dir', default=None,
                        help='directory with graphs.yaml and the parameter files (default: '
                        'the package config)')
    parser.add_argument('--print', dest='print_only', action='store_true',
                        help='print each node command line and parameters, start nothing')
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get('LOGLEVEL', 'INFO'),
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    try:
        overrides = _parse_assignments(args.overrides, 'parameter')
        arguments = _parse_assignments(args.arguments, 'argument')
        if args.print_only:
            graph = load_graph(args.graph, overrides=overrides, arguments=arguments,
                               config_dir=args.config_dir)
            for node in graph.nodes:
                print(' '.join(node.command(f'<{node.name}.yaml>')))
                print(node.parameters_yaml())
            return 0
        runner = GraphRunner(args.graph, overrides=overrides, arguments=arguments,
                             log_dir=args.log_dir, config_dir=args.config_dir)
    except GraphConfigError as error:
        print(f'af-runner: {error}', file=sys.stderr)
        return 2
    # Installed explicitly: a process started in the background by a non-interactive shell
    # inherits SIGINT ignored, and Python then leaves it ignored.
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in STOP_SIGNALS}
    status = 0
    try:
        runner.start()
        print(f'af-runner: graph {args.graph!r} running ({len(runner.processes)} nodes), logs in '
              f'{runner.log_dir}; Ctrl-C to stop', file=sys.stderr)
        while True:
            runner.check()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print('af-runner: stopping', file=sys.stderr)
    except NodeDiedError as error:
        print(f'af-runner: {error}', file=sys.stderr)
        status = 1
    finally:
        # A second Ctrl-C (or SIGTERM, SIGHUP) must not interrupt the shutdown and orphan nodes.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        try:
            statuses = runner.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    unclean = {name: code for name, code in statuses.items() if code not in (0, None)}
    if unclean:
        print(f'af-runner: nodes exited with non-zero status on shutdown: {unclean}',
              file=sys.stderr)
    return status


if __name__ == '__main__':
    raise SystemExit(main())
