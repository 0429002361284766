"""
The graph description (active_finetune.graph) and the runner starting it (active_finetune.runner).

Graph tests are plain pytest.  Runner tests start real node processes through real DDS in a
random ROS domain: a small graph of two command mux nodes (fast), and the whole 'sim' graph
(slow: run with --runslow; test/e2e drives it through the full loop).
"""

import ast
import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import threading
import time

from active_finetune.graph import coerce_value, default_config_dir, GraphConfigError, \
    load_graph, OverrideError, resolve_path, ROBOT_TOPICS, SOURCE_ROOT
from active_finetune.runner import GraphRunner, NodeDiedError
import pytest
import yaml

CONFIG_DIR = SOURCE_ROOT / 'config'
DEADLINE_S = 30.0


def setup_py_nodes():
    """Console scripts of nodes in setup.py (its NODES dict), read without running setup()."""
    tree = ast.parse((SOURCE_ROOT / 'setup.py').read_text())
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and statement.targets[0].id == 'NODES':
            return ast.literal_eval(statement.value)
    raise AssertionError('setup.py has no NODES dict')


# ---------------------------------------------------------------- graph description

def test_config_dir_of_the_checkout_is_found():
    assert default_config_dir() == CONFIG_DIR


def test_sim_graph_has_the_loop_nodes_with_installed_executables():
    graph = load_graph('sim')
    assert [n.name for n in graph.nodes] == [
        'sim_bridge', 'command_mux', 'policy', 'task_selector', 'demo_recorder', 'trainer',
        'dashboard']
    nodes = setup_py_nodes()
    for node in graph.nodes:
        assert node.executable in nodes and nodes[node.executable] == node.executable
        assert (SOURCE_ROOT / 'active_finetune' / 'nodes' / f'{node.executable}.py').is_file()
    assert graph.node('sim_bridge').parameters['scripted_operator'] is True


def test_robot_graph_runs_camera_and_spacemouse_and_remaps_the_driver_topics():
    graph = load_graph('robot', arguments={'joint_states_topic': '/franka/joint_states',
                                           'cmd_twist_topic': '/servo_node/delta_twist_cmds',
                                           'ee_pose_topic': ''})
    assert [n.name for n in graph.nodes] == [
        'camera', 'spacemouse', 'command_mux', 'policy', 'task_selector', 'demo_recorder',
        'trainer', 'dashboard']
    assert graph.node('camera').parameters['backend'] == 'realsense'
    for node in graph.nodes:
        assert set(node.remappings) == {('joint_states', '/franka/joint_states'),
                                        ('cmd/twist', '/servo_node/delta_twist_cmds')}


@pytest.mark.parametrize('graph_name', ['sim', 'robot', 'gazebo'])
def test_parameter_files_are_typed_as_the_nodes_declare_them(graph_name):
    """Check the YAML types: ros2 launch hands the file to rcl, an int for a float would fail."""
    graph = load_graph(graph_name)
    blocks = yaml.safe_load(graph.parameters_file.read_text())
    for node in graph.nodes:
        for param, value in blocks.get(node.name, {}).get('ros__parameters', {}).items():
            checked = node.parameters[param]
            if not isinstance(value, str):
                assert type(value) is type(checked), f'{node.name}.{param}: {value!r}'


@pytest.mark.parametrize('graph_name', ['sim', 'robot', 'gazebo'])
def test_every_dataset_dir_of_a_graph_is_the_same(graph_name):
    graph = load_graph(graph_name)
    dirs = {node.name: node.parameters['dataset_dir'] for node in graph.nodes
            if 'dataset_dir' in node.parameters}
    assert {'task_selector', 'demo_recorder', 'trainer'} <= set(dirs)
    assert len(set(dirs.values())) == 1, dirs


def test_sim_parameters_are_the_ones_asked_for():
    graph = load_graph('sim')
    assert graph.node('task_selector').parameters['budget'] == 8
    assert graph.node('task_selector').parameters['demos_per_round'] == 2
    assert graph.node('trainer').parameters['steps'] == 300
    assert graph.node('trainer').parameters['evaluate_episodes'] == 2
    assert graph.node('policy').parameters['checkpoint_path'] == str(
        SOURCE_ROOT / 'checkpoints' / 'pretrained_mt10_skewed')
    assert graph.node('trainer').parameters['dataset_dir'] == str(
        SOURCE_ROOT / 'runs/sim/episodes')


def test_overrides_are_type_checked_and_ints_become_floats():
    graph = load_graph('sim', overrides={'command_mux.rate_hz': 30, 'trainer.steps': 40,
                                         'trainer.log_dir': ''})
    assert graph.node('command_mux').parameters['rate_hz'] == 30.0
    assert isinstance(graph.node('command_mux').parameters['rate_hz'], float)
    assert graph.node('trainer').parameters['steps'] == 40
    assert graph.node('trainer').parameters['log_dir'] == ''
    with pytest.raises(OverrideError, match='trainer.steps.*expected int.*str'):
        load_graph('sim', overrides={'trainer.steps': 'many'})
    with pytest.raises(OverrideError, match='expected float.*bool'):
        load_graph('sim', overrides={'command_mux.rate_hz': True})
    with pytest.raises(OverrideError, match="no parameter 'stepz'"):
        load_graph('sim', overrides={'trainer.stepz': 40})
    with pytest.raises(OverrideError, match="node 'camera' is not in the graph"):
        load_graph('sim', overrides={'camera.fps': 15.0})
    with pytest.raises(OverrideError, match='expected node.param'):
        load_graph('sim', overrides={'budget': 3})


def test_text_values_from_the_command_line_are_parsed_to_the_declared_type():
    graph = load_graph('sim', overrides={'trainer.steps': '12', 'command_mux.rate_hz': '25',
                                         'trainer.send_weights': 'false',
                                         'task_selector.strategy': '123'})
    assert graph.node('trainer').parameters['steps'] == 12
    assert graph.node('command_mux').parameters['rate_hz'] == 25.0
    assert graph.node('trainer').parameters['send_weights'] is False
    assert graph.node('task_selector').parameters['strategy'] == '123'


def test_graph_arguments_set_every_node_they_name_and_overrides_win(tmp_path):
    graph = load_graph('sim', arguments={'dataset_dir': str(tmp_path / 'eps'), 'budget': '4',
                                         'demos_per_round': ''},
                       overrides={'trainer.dataset_dir': str(tmp_path / 'other')})
    assert graph.node('task_selector').parameters['dataset_dir'] == str(tmp_path / 'eps')
    assert graph.node('demo_recorder').parameters['dataset_dir'] == str(tmp_path / 'eps')
    assert graph.node('trainer').parameters['dataset_dir'] == str(tmp_path / 'other')
    assert graph.node('task_selector').parameters['budget'] == 4
    assert graph.node('trainer').parameters['demos_per_round'] == 2
    with pytest.raises(OverrideError, match="unknown argument 'joint_states_topic'"):
        load_graph('sim', arguments={'joint_states_topic': '/x'})


def test_unknown_graph_is_refused():
    with pytest.raises(GraphConfigError, match="unknown graph 'lab'"):
        load_graph('lab')


def test_coerce_value_handles_lists():
    assert coerce_value([1, 2], (1.0, 1.0), 'n.p') == [1.0, 2.0]
    with pytest.raises(OverrideError, match=r'n.p\[1\]'):
        coerce_value([1, 'x'], (1, 1), 'n.p')


def test_relative_paths_resolve_against_the_checkout_or_share_and_cwd(tmp_path):
    checkout = SOURCE_ROOT
    assert resolve_path('dataset_dir', 'runs/x', checkout) == str(checkout / 'runs/x')
    assert resolve_path('initial_checkpoint', 'ckpt', checkout) == str(checkout / 'ckpt')
    assert resolve_path('dataset_dir', '/abs/x', checkout) == '/abs/x'
    assert resolve_path('log_dir', '', checkout) == ''
    assert resolve_path('strategy', 'amf', checkout) == 'amf'
    share = tmp_path / 'share'
    share.mkdir()
    work = tmp_path / 'work'
    assert resolve_path('checkpoint_path', 'ckpt', share, cwd=work) == str(share / 'ckpt')
    assert resolve_path('checkpoint_dir', 'out', share, cwd=work) == str(work / 'out')


def test_node_command_line_names_params_file_and_remaps(tmp_path):
    graph = load_graph('robot', arguments={'cmd_gripper_topic': '/gripper/cmd'})
    node = graph.node('policy')
    command = node.command(tmp_path / 'policy.yaml')
    assert command[:3] == [sys.executable, '-m', 'active_finetune.nodes.policy_node']
    assert command[3:8] == ['--ros-args', '-r', '__node:=policy', '--params-file',
                            str(tmp_path / 'policy.yaml')]
    assert command[8:] == ['-r', 'cmd/gripper:=/gripper/cmd']
    written = yaml.safe_load(node.parameters_yaml())
    assert written == {'policy': {'ros__parameters': node.parameters}}


def test_robot_topics_match_the_interfaces_table():
    table = (SOURCE_ROOT / 'docs' / 'interfaces.md').read_text()
    for topic in ROBOT_TOPICS:
        assert f'`{topic.name}`' in table, topic.name


def test_graph_and_runner_modules_import_no_ros():
    code = ('import sys, active_finetune.graph, active_finetune.runner; '
            'bad = sorted(m for m in sys.modules '
            'if m.startswith("rclpy") or m.endswith("_msgs")); '
            'print(bad); sys.exit(1 if bad else 0)')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- runner, real processes

def write_mini_config(tmp_path):
    """Write a config dir with graph 'mini': two command mux nodes, one of them remapped."""
    config = tmp_path / 'config'
    config.mkdir()
    real = yaml.safe_load((CONFIG_DIR / 'graphs.yaml').read_text())
    described = {'executables': real['executables'], 'graphs': {'mini': {
        'description': 'two command muxes', 'parameters': 'mini.yaml',
        'nodes': [{'name': 'mux_a', 'executable': 'command_mux_node',
                   'remappings': [['cmd/twist', 'mini/cmd_twist']]},
                  {'name': 'mux_b', 'executable': 'command_mux_node'}]}}}
    (config / 'graphs.yaml').write_text(yaml.safe_dump(described))
    (config / 'mini.yaml').write_text(yaml.safe_dump({
        'mux_a': {'ros__parameters': {'rate_hz': 25.0}},
        'mux_b': {'ros__parameters': {'rate_hz': 10.0, 'command_timeout_s': 0.5}}}))
    return config


@pytest.fixture
def domain_id():
    return random.SystemRandom().randint(1, 100)


@pytest.fixture
def ros_probe(domain_id):
    """Give an rclpy node in its own context on the test's domain (sees the graph, calls)."""
    import rclpy
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node(f'graph_probe_{random.randint(0, 10 ** 6)}', context=context)
    try:
        yield node
    finally:
        node.destroy_node()
        context.try_shutdown()


def wait_for_nodes(probe, names, deadline_s=DEADLINE_S, runner=None):
    """Wait until every name is in the ROS graph, checking the runner meanwhile."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if runner is not None:
            runner.check()
        if set(names) <= set(probe.get_node_names()):
            return
        time.sleep(0.1)
    pytest.fail(f'nodes {sorted(set(names) - set(probe.get_node_names()))} did not appear')


def get_parameters(probe, node_name, names):
    """Call /<node>/get_parameters and return the values as Python values."""
    import rclpy
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python
    client = probe.create_client(GetParameters, f'/{node_name}/get_parameters')
    try:
        assert client.wait_for_service(timeout_sec=10.0), f'{node_name} has no parameter service'
        future = client.call_async(GetParameters.Request(names=list(names)))
        executor = rclpy.executors.SingleThreadedExecutor(context=probe.context)
        executor.add_node(probe)
        executor.spin_until_future_complete(future, timeout_sec=10.0)
        executor.remove_node(probe)
        assert future.done(), f'{node_name}/get_parameters did not answer'
        return dict(zip(names, (parameter_value_to_python(v) for v in future.result().values)))
    finally:
        probe.destroy_client(client)


def processes_mentioning(text):
    """Pids of live processes whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / 'cmdline').read_bytes().decode(errors='replace')
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry.name))
    return pids


def kill_everything(process, log_dir):
    """
    Kill a runner's process group and every process its log directory names (test clean-up).

    :param process: the Popen of the runner (started with start_new_session=True)
    :param log_dir: the runner's --log-dir: every node's command line names its params file there
    """
    # The runner's group only while it is unreaped (a reaped pid may belong to another process);
    # each node leads a group of its own (with any worker it spawned).
    pids = ([process.pid] if process.poll() is None else []) + \
        processes_mentioning(str(log_dir))
    for pid in pids:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    process.wait()


def wait_until_gone(text, deadline_s=DEADLINE_S * 2):
    """Wait until no live process names ``text`` on its command line; return the leftovers."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        left = [pid for pid in processes_mentioning(text) if process_alive(pid)]
        if not left:
            return []
        time.sleep(0.1)
    return left


def process_alive(pid):
    """Tell a live process from a gone or zombie one (Linux /proc)."""
    try:
        state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != 'Z'


def test_runner_starts_nodes_with_params_detects_a_death_and_leaves_nothing(
        tmp_path, domain_id, ros_probe):
    config = write_mini_config(tmp_path)
    log_dir = tmp_path / 'logs'
    runner = GraphRunner('mini', overrides={'mux_b.max_linear_velocity_mps': 1}, log_dir=log_dir,
                         config_dir=config, env={'ROS_DOMAIN_ID': str(domain_id)},
                         stop_timeout_s=5.0)
    with runner:
        wait_for_nodes(ros_probe, ['mux_a', 'mux_b'], runner=runner)
        assert get_parameters(ros_probe, 'mux_a', ['rate_hz']) == {'rate_hz': 25.0}
        assert get_parameters(ros_probe, 'mux_b', ['rate_hz', 'command_timeout_s',
                                                   'max_linear_velocity_mps']) == {
            'rate_hz': 10.0, 'command_timeout_s': 0.5, 'max_linear_velocity_mps': 1.0}
        topics = dict(ros_probe.get_topic_names_and_types())
        assert '/mini/cmd_twist' in topics and '/cmd/twist' in topics
        runner.check()
        pids = {name: runner.pid(name) for name in ('mux_a', 'mux_b')}
        import os
        os.killpg(pids['mux_b'], signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        with pytest.raises(NodeDiedError, match="'mux_b' exited with status -9") as died:
            while time.monotonic() < deadline:
                runner.check()
                time.sleep(0.05)
        assert died.value.node == 'mux_b' and died.value.log_path == log_dir / 'mux_b.log'
        tails = runner.log_tails(2)
        assert tails.startswith('--- mux_a log tail ---\n')
        assert '\n--- mux_b log tail ---\n' in tails
    assert not processes_mentioning(str(log_dir)), 'a node process outlived the runner'
    assert (log_dir / 'mux_a.log').read_text().startswith('# ')
    assert yaml.safe_load((log_dir / 'params' / 'mux_b.yaml').read_text())['mux_b'][
        'ros__parameters']['max_linear_velocity_mps'] == 1.0


# Started with SIGINT ignored, as a process started in the background by a script is.
IGNORE_SIGINT_THEN_EXEC = ('import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); '
                           'os.execv(sys.executable, [sys.executable] + sys.argv[1:])')


@pytest.mark.timeout(300)
@pytest.mark.parametrize('stop_signal, expected_status, sigint_ignored', [
    (signal.SIGINT, 0, False), (signal.SIGTERM, 0, False), (signal.SIGHUP, 0, False),
    (signal.SIGINT, 0, True), (None, 1, False)])
def test_af_runner_command_stops_cleanly_and_fails_when_a_node_dies(
        tmp_path, domain_id, ros_probe, stop_signal, expected_status, sigint_ignored):
    config = write_mini_config(tmp_path)
    log_dir = tmp_path / 'logs'
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id))
    command = [sys.executable, '-m', 'active_finetune.runner', 'mini', '--config-dir',
               str(config), '--log-dir', str(log_dir), '--set', 'mux_a.teleop_hold_s=2']
    if sigint_ignored:
        command = [sys.executable, '-c', IGNORE_SIGINT_THEN_EXEC] + command[1:]
    runner = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        wait_for_nodes(ros_probe, ['mux_a', 'mux_b'], deadline_s=120.0)
        assert get_parameters(ros_probe, 'mux_a', ['teleop_hold_s']) == {'teleop_hold_s': 2.0}
        if stop_signal is None:
            params_file = str(log_dir / 'params' / 'mux_a.yaml')
            (victim,) = [pid for pid in processes_mentioning(params_file) if pid != runner.pid]
            os.kill(victim, signal.SIGKILL)
        else:
            runner.send_signal(stop_signal)
        output, _ = runner.communicate(timeout=90.0)
        left = wait_until_gone(str(log_dir))
    finally:
        kill_everything(runner, log_dir)  # whatever failed: nothing may be left running
    assert runner.returncode == expected_status, output.decode()
    if stop_signal is None:
        assert b"node 'mux_a' exited" in output
    assert not left, 'a node process outlived af-runner'


def write_drive_config(tmp_path):
    """Write a config dir with graph 'drive': the command mux, the policy on a tiny checkpoint."""
    import torch
    from active_finetune.policy.checkpoint import save_checkpoint
    from active_finetune.policy.model import PolicyConfig, TaskPolicy
    policy = TaskPolicy(PolicyConfig(tasks=('reach-v3',), image_size=16, conv_channels=(4,),
                                     hidden_dim=8, feature_dim=4, task_embedding_dim=2))
    with torch.no_grad():  # constant action (0.5, 0.5, 0.5, 0.5): the robot moves
        for param in policy.parameters():
            param.zero_()
        policy.net.head.linear.bias[:4] = torch.atanh(torch.tensor([0.5] * 4))
    save_checkpoint(policy, tmp_path / 'ckpt')
    config = tmp_path / 'config'
    config.mkdir()
    real = yaml.safe_load((CONFIG_DIR / 'graphs.yaml').read_text())
    described = {'executables': real['executables'], 'graphs': {'drive': {
        'description': 'the policy driving through the mux', 'parameters': 'drive.yaml',
        'nodes': [{'name': 'command_mux', 'executable': 'command_mux_node'},
                  {'name': 'policy', 'executable': 'policy_node'}]}}}
    (config / 'graphs.yaml').write_text(yaml.safe_dump(described))
    (config / 'drive.yaml').write_text(yaml.safe_dump({
        'command_mux': {'ros__parameters': {'command_timeout_s': 0.5}},
        'policy': {'ros__parameters': {
            'checkpoint_path': str(tmp_path / 'ckpt'), 'device': 'cpu', 'task': 'reach-v3',
            'max_input_age_s': 1.0, 'control_rate_hz': 20.0}}}))
    return config


class RobotStandIn:
    """
    Publish camera, joint state and pose at 20 Hz from the probe node and log cmd/twist.

    :param probe: rclpy node (its own context)
    """

    def __init__(self, probe):
        import rclpy
        from active_finetune.nodes.conversions import rgb_to_image, s_to_stamp
        from active_finetune.nodes.qos import COMMAND_QOS, IMAGE_QOS, SENSOR_QOS
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from sensor_msgs.msg import Image, JointState
        self._probe = probe
        self._rgb_to_image, self._s_to_stamp = rgb_to_image, s_to_stamp
        self._pose_type, self._joint_type = PoseStamped, JointState
        self._image_pub = probe.create_publisher(Image, 'camera/image_raw', IMAGE_QOS)
        self._joint_pub = probe.create_publisher(JointState, 'joint_states', SENSOR_QOS)
        self._pose_pub = probe.create_publisher(PoseStamped, 'ee_pose', SENSOR_QOS)
        self._lock = threading.Lock()
        self._twists = []
        probe.create_subscription(TwistStamped, 'cmd/twist', self._on_twist, COMMAND_QOS)
        probe.create_timer(0.05, self._publish)
        self._executor = rclpy.executors.SingleThreadedExecutor(context=probe.context)
        self._executor.add_node(probe)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while not self._stop.is_set():
            self._executor.spin_once(timeout_sec=0.1)

    def _on_twist(self, msg):
        with self._lock:
            self._twists.append((msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z))

    def _publish(self):
        now_s = self._probe.get_clock().now().nanoseconds * 1e-9
        self._image_pub.publish(self._rgb_to_image(
            __import__('numpy').zeros((16, 16, 3), 'uint8'), now_s, 'camera'))
        joints = self._joint_type(name=['gripper_finger_distance'], position=[0.05])
        joints.header.stamp = self._s_to_stamp(now_s)
        self._joint_pub.publish(joints)
        pose = self._pose_type()
        pose.header.stamp = self._s_to_stamp(now_s)
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.0, 0.6, 0.2
        self._pose_pub.publish(pose)

    @property
    def twists(self):
        """:return: the cmd/twist linear velocities received so far."""
        with self._lock:
            return list(self._twists)

    def close(self):
        """Stop spinning and release the executor."""
        self._stop.set()
        self._thread.join(10.0)
        self._executor.remove_node(self._probe)
        self._executor.shutdown()


@pytest.mark.timeout(400)
@pytest.mark.parametrize('stop_signal', [signal.SIGHUP, signal.SIGKILL])
def test_stopping_or_killing_af_runner_while_the_policy_drives_leaves_zero_and_no_process(
        tmp_path, domain_id, ros_probe, stop_signal):
    """SIGHUP: a closed terminal; SIGKILL: a test timeout. Either way the robot stops."""
    config = write_drive_config(tmp_path)
    log_dir = tmp_path / 'logs'
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id))
    runner = subprocess.Popen(
        [sys.executable, '-m', 'active_finetune.runner', 'drive', '--config-dir', str(config),
         '--log-dir', str(log_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    robot = RobotStandIn(ros_probe)
    try:
        wait_for_nodes(ros_probe, ['command_mux', 'policy'], deadline_s=180.0)
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline and not any(any(v) for v in robot.twists[-5:]):
            assert runner.poll() is None, runner.stdout.read().decode()
            time.sleep(0.1)
        assert any(any(v) for v in robot.twists[-5:]), 'the policy drives the robot'
        node_pids = [pid for pid in processes_mentioning(str(log_dir)) if pid != runner.pid]
        assert len(node_pids) == 2, node_pids
        runner.send_signal(stop_signal)
        runner.wait(timeout=120.0)
        left = wait_until_gone(str(log_dir))
        time.sleep(0.5)  # the last messages in flight
        twists = robot.twists
    finally:
        robot.close()
        kill_everything(runner, log_dir)  # whatever failed: nothing may be left running
        runner.stdout.close()
    assert not left, 'a node outlived af-runner'
    assert not any(process_alive(pid) for pid in node_pids)
    assert twists[-1] == (0.0, 0.0, 0.0), f'last cmd/twist {twists[-1]} is not zero'
    expected = 0 if stop_signal == signal.SIGHUP else -signal.SIGKILL
    assert runner.returncode == expected
    if stop_signal == signal.SIGKILL:
        for node in ('command_mux', 'policy'):
            log = (log_dir / f'{node}.log').read_text()
            assert 'Traceback' not in log, log


@pytest.mark.slow
def test_whole_sim_graph_comes_up_with_its_parameters(tmp_path, domain_id, ros_probe):
    overrides = {'task_selector.dataset_dir': str(tmp_path / 'episodes'),
                 'demo_recorder.dataset_dir': str(tmp_path / 'episodes'),
                 'trainer.dataset_dir': str(tmp_path / 'episodes'),
                 'trainer.checkpoint_dir': str(tmp_path / 'checkpoints'),
                 'trainer.evaluate_episodes': 0, 'task_selector.budget': 3}
    graph = load_graph('sim', overrides=overrides)
    runner = GraphRunner('sim', overrides=overrides, log_dir=tmp_path / 'logs',
                         env={'ROS_DOMAIN_ID': str(domain_id)})
    with runner:
        wait_for_nodes(ros_probe, [n.name for n in graph.nodes], deadline_s=120.0, runner=runner)
        for node in graph.nodes:
            names = sorted(node.parameters)
            got = get_parameters(ros_probe, node.name, names)
            for name in names:
                expected = node.parameters[name]
                value = list(got[name]) if isinstance(expected, list) else got[name]
                assert value == expected, f'{node.name}.{name}: {got[name]!r} != {expected!r}'
        runner.check()
    assert not processes_mentioning(str(tmp_path / 'logs'))
