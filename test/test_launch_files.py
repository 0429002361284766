"""
The launch files describe the graphs that af-runner starts, loaded through the same graph loader.

Each launch file is loaded as ``ros2 launch`` loads it, in a Python that must import nothing
heavy (``ros2 launch`` runs in the system Python, without the lab's venv and its torch).
``launch`` and ``launch_ros`` have no wheel on these machines, so they are replaced by
recording stand-ins; the test then runs the file's launch function with given argument values
and compares what it gives with :func:`active_finetune.graph.load_graph`: the declared
arguments (every one with a description) are the graph's, the Node actions carry exactly the
executables, names, namespaces, parameters and remappings of the validated graph that af-runner
starts with the same arguments, the Fast DDS profile is set before the nodes unless the
environment names one, and the Gazebo graph also starts Gazebo and ros_gz_bridge from its own
arguments.  The graph loaded with ``validate=False`` (what the launch files use) imports nothing
heavy and gives exactly the validated result.  The driver-facing arguments (namespace,
camera_topic, use_camera) are checked on the graph, and a namespaced node's parameter file is
checked with rclpy itself.
"""

import ast
import dataclasses
import json
import os
import re
import subprocess
import sys

from active_finetune.graph import load_graph, OverrideError, SOURCE_ROOT
from active_finetune.nodes.qos import FASTDDS_LARGE_SHM_PROFILE_XML, FASTDDS_PROFILES_ENV
import pytest

LAUNCH_DIR = SOURCE_ROOT / 'launch'
LAUNCH_GRAPHS = {'sim.launch.py': 'sim', 'robot.launch.py': 'robot', 'gazebo.launch.py': 'gazebo'}


def test_every_launch_file_is_known():
    assert sorted(p.name for p in LAUNCH_DIR.glob('*.launch.py')) == sorted(LAUNCH_GRAPHS)


def test_only_the_ros_layer_imports_launch_and_launch_ros():
    """The ROS-free core (outside active_finetune/nodes) never imports launch or launch_ros."""
    for path in sorted((SOURCE_ROOT / 'active_finetune').rglob('*.py')):
        if 'nodes' in path.relative_to(SOURCE_ROOT / 'active_finetune').parts[:-1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            assert not {n.split('.')[0] for n in names} & {'launch', 'launch_ros'}, path


def test_graph_arguments_have_descriptions_and_gazebo_takes_the_sim_arguments():
    sim = {a.name for a in load_graph('sim', validate=False).arguments}
    robot = {a.name for a in load_graph('robot', validate=False).arguments}
    gazebo = {a.name for a in load_graph('gazebo', validate=False).arguments}
    assert sim == {'dataset_dir', 'checkpoint', 'checkpoint_dir', 'strategy', 'budget',
                   'demos_per_round', 'namespace', 'dashboard', 'dashboard_host',
                   'dashboard_port', 'dashboard_token'}
    assert robot - gazebo == {'use_camera'} and sim < gazebo < robot
    assert gazebo - sim == {'camera_topic', 'joint_states_topic', 'ee_pose_topic',
                            'cmd_twist_topic', 'cmd_gripper_topic'}
    for graph in ('sim', 'robot', 'gazebo'):
        for argument in load_graph(graph, validate=False).arguments:
            kinds = [argument.parameters, argument.remap, argument.namespace, argument.node]
            assert argument.description and sum(map(bool, kinds)) == 1, argument


def launch_argument_texts(graph):
    """Give every argument of a graph a text value, as ``ros2 launch`` hands them over."""
    names = {argument.name for argument in load_graph(graph, validate=False).arguments}
    texts = {'dataset_dir': '/data/amf/episodes',
             'checkpoint': 'checkpoints/pretrained_mt10_skewed',
             'checkpoint_dir': 'out/checkpoints', 'strategy': 'uniform', 'budget': '20',
             'demos_per_round': '3', 'namespace': 'arm1',
             'camera_topic': '/camera/camera/color/image_raw',
             'joint_states_topic': '/joint_states', 'ee_pose_topic': '/franka/ee_pose',
             'cmd_twist_topic': '/servo_node/delta_twist_cmds',
             'cmd_gripper_topic': '/gripper/command', 'use_camera': 'false',
             'dashboard': 'true', 'dashboard_host': '0.0.0.0', 'dashboard_port': '8081',
             'dashboard_token': 'a-token-of-24-characters'}
    assert names <= set(texts), names - set(texts)
    return {name: texts[name] for name in names}


@pytest.mark.parametrize('graph', ['sim', 'robot', 'gazebo'])
@pytest.mark.parametrize('given', ['defaults', 'every argument'])
def test_launch_graph_without_validation_is_the_validated_graph(graph, given):
    """``ros2 launch`` cannot import the settings classes (torch); it must not need them."""
    if given == 'defaults':
        arguments = {a.name: a.default for a in load_graph(graph, validate=False).arguments}
    else:
        arguments = launch_argument_texts(graph)
    checked = load_graph(graph, arguments=arguments)
    launched = load_graph(graph, arguments=arguments, validate=False)
    assert [dataclasses.replace(node, settings='') for node in checked.nodes] == \
        list(launched.nodes)
    for checked_node, node in zip(checked.nodes, launched.nodes):
        for param, value in checked_node.parameters.items():
            assert type(node.parameters[param]) is type(value), f'{node.name}.{param}'
    assert launched.namespace == checked.namespace


def test_launch_graph_imports_no_torch_rclpy_or_numpy():
    code = ('import sys; from active_finetune.graph import load_graph; '
            '[load_graph(g, validate=False) for g in ("sim", "robot", "gazebo")]; '
            'heavy = sorted(m for m in sys.modules if m.split(".")[0] in '
            '("torch", "rclpy", "numpy", "cv2", "scipy", "mcap", "mujoco", "safetensors")); '
            'print(heavy); sys.exit(1 if heavy else 0)')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


LOAD_LAUNCH_FILE = """
import json, os, runpy, sys, types

class Action:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]

def module(name, **attributes):
    sys.modules[name] = types.ModuleType(name)
    sys.modules[name].__dict__.update(attributes, __path__=[])

kinds = ('LaunchDescription', 'DeclareLaunchArgument', 'IncludeLaunchDescription',
         'OpaqueFunction', 'SetEnvironmentVariable', 'PythonLaunchDescriptionSource', 'Node')
stand_ins = {kind: type(kind, (Action,), {}) for kind in kinds}
module('launch', LaunchDescription=stand_ins['LaunchDescription'])
module('launch.actions', **stand_ins)
module('launch.launch_description_sources', **stand_ins)
module('launch.substitutions', LaunchConfiguration=LaunchConfiguration)
module('launch_ros')
module('launch_ros.actions', Node=stand_ins['Node'])
module('ament_index_python')
module('ament_index_python.packages', get_package_share_directory=lambda p: '/share/' + p)

def describe(action):
    kind = type(action).__name__
    if kind == 'IncludeLaunchDescription':
        return {'kind': kind, 'source': action.args[0].args[0],
                'launch_arguments': dict(action.kwargs['launch_arguments'])}
    return {'kind': kind, 'args': list(action.args), 'kwargs': action.kwargs}

launch_file, contexts, environments = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
entities = runpy.run_path(launch_file)['generate_launch_description']().args[0]
declared = [e for e in entities if type(e).__name__ == 'DeclareLaunchArgument']
opaque = [e for e in entities if type(e).__name__ == 'OpaqueFunction']
assert entities == declared + opaque and len(opaque) == 1
defaults = {e.args[0]: e.kwargs['default_value'] for e in declared}
runs = {}
for case, given in contexts.items():
    os.environ.pop('FASTRTPS_DEFAULT_PROFILES_FILE', None)
    if environments.get(case):
        os.environ['FASTRTPS_DEFAULT_PROFILES_FILE'] = environments[case]
    function = opaque[0].kwargs['function']
    actions = function(dict(defaults, **given), *opaque[0].kwargs.get('args', ()),
                       **(opaque[0].kwargs.get('kwargs') or {}))
    runs[case] = [describe(action) for action in actions]
heavy = sorted(m for m in sys.modules if m.split('.')[0] in
               ('torch', 'rclpy', 'numpy', 'cv2', 'scipy', 'mcap', 'mujoco', 'safetensors'))
print(json.dumps({'declared': [[e.args[0], e.kwargs['default_value'], e.kwargs['description']]
                               for e in declared],
                  'runs': runs, 'heavy': heavy}))
"""
"""
Load a launch file as ``ros2 launch`` does, with recording stand-ins for launch and launch_ros.

``get_package_share_directory(p)`` is ``/share/<p>``.  Prints the declared arguments and, for
each context (launch argument values over the defaults), the actions the file gives.
"""

SHARE = '/share/active_finetune'
PROFILE = f'{SHARE}/config/fastdds_large_shm.xml'


def load_launch_file(name, tmp_path, contexts, environments=None):
    """
    Run a launch file through :data:`LOAD_LAUNCH_FILE` in a Python that imports no heavy package.

    :param name: file in launch/
    :param tmp_path: working directory (not the source tree: paths must not depend on it)
    :param contexts: case -> {launch argument: text} given over the declared defaults
    :param environments: case -> FASTRTPS_DEFAULT_PROFILES_FILE set before the case runs
    :return: dict 'declared' ([name, default, description]), 'runs' (case -> actions), 'heavy'
    """
    result = subprocess.run(
        [sys.executable, '-c', LOAD_LAUNCH_FILE, str(LAUNCH_DIR / name), json.dumps(contexts),
         json.dumps(environments or {})],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(SOURCE_ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert loaded['heavy'] == [], 'ros2 launch runs in the system Python, without torch'
    return loaded


def expected_node_actions(graph, arguments):
    """Node actions of a graph as af-runner starts it: the validated graph, same arguments."""
    order = [a.name for a in load_graph(graph, validate=False).arguments]
    loaded = load_graph(graph, arguments={name: arguments[name] for name in order
                                          if name in arguments})
    return [{'kind': 'Node', 'args': [], 'kwargs': {
        'package': 'active_finetune', 'executable': node.executable, 'name': node.name,
        'namespace': node.namespace, 'output': 'screen', 'emulate_tty': True,
        'parameters': [str(loaded.parameters_file), node.parameters],
        'remappings': [list(pair) for pair in node.remappings]}} for node in loaded.nodes]


def profile_action(path):
    return {'kind': 'SetEnvironmentVariable', 'args': [FASTDDS_PROFILES_ENV, path], 'kwargs': {}}


@pytest.mark.parametrize('name, graph', sorted(LAUNCH_GRAPHS.items()))
def test_launch_file_declares_the_graph_arguments_with_descriptions(name, graph, tmp_path):
    loaded = load_launch_file(name, tmp_path, {})
    expected = [[a.name, a.default, a.description]
                for a in load_graph(graph, validate=False).arguments]
    assert [d[:2] for d in loaded['declared'][:len(expected)]] == [e[:2] for e in expected]
    assert loaded['declared'][:len(expected)] == expected
    extra = {d[0]: d[1] for d in loaded['declared'][len(expected):]}
    if graph == 'gazebo':
        assert extra == {'fastdds_profile': PROFILE,
                         'world': f'{SHARE}/gazebo/worlds/tabletop.sdf', 'gui': 'true',
                         'bridge_config': f'{SHARE}/config/gazebo_bridge.yaml'}
    else:
        assert extra == {'fastdds_profile': PROFILE}
    for argument, default, description in loaded['declared']:
        assert description.strip(), argument
        assert isinstance(default, str), argument
    for extra_name, default in extra.items():
        if default.startswith(SHARE):  # a file the package installs into its share directory
            assert (SOURCE_ROOT / default[len(SHARE) + 1:]).is_file(), extra_name


@pytest.mark.parametrize('name, graph', sorted(LAUNCH_GRAPHS.items()))
def test_launch_file_starts_the_nodes_af_runner_starts(name, graph, tmp_path):
    """Each Node action carries the graph loader's executable, name, parameters and remaps."""
    every = launch_argument_texts(graph)
    loaded = load_launch_file(name, tmp_path, {'defaults': {}, 'every argument': every},
                              environments={'defaults': '', 'every argument': '/lab.xml'})
    defaults = {a.name: a.default for a in load_graph(graph, validate=False).arguments}
    for case, arguments in (('defaults', defaults), ('every argument', every)):
        nodes = [a for a in loaded['runs'][case] if a['kind'] == 'Node'
                 and a['kwargs']['package'] == 'active_finetune']
        assert nodes == expected_node_actions(graph, arguments), case
        assert nodes == loaded['runs'][case][-len(nodes):], 'the nodes start last'
    names = [n['kwargs']['name'] for n in loaded['runs']['every argument']
             if n['kind'] == 'Node' and n['kwargs']['package'] == 'active_finetune']
    if graph == 'robot':
        assert 'camera' not in names  # use_camera:=false
    for action in loaded['runs']['every argument']:
        if action['kind'] == 'Node':
            assert action['kwargs']['namespace'] == '/arm1'


@pytest.mark.parametrize('name, graph', sorted(LAUNCH_GRAPHS.items()))
def test_launch_file_gives_the_nodes_the_runners_fast_dds_profile(name, graph, tmp_path):
    """The package's profile unless the environment names one; a given one wins; '' is off."""
    loaded = load_launch_file(
        name, tmp_path, {'default': {}, 'set in environment': {},
                         'given': {'fastdds_profile': '/given.xml'},
                         'off': {'fastdds_profile': ''}},
        environments={'set in environment': '/lab.xml', 'given': '/lab.xml'})
    runs = {case: [a for a in actions if a['kind'] == 'SetEnvironmentVariable']
            for case, actions in loaded['runs'].items()}
    assert runs == {'default': [profile_action(PROFILE)], 'set in environment': [],
                    'given': [profile_action('/given.xml')], 'off': []}
    for case, actions in loaded['runs'].items():
        if runs[case]:
            assert actions[0] == runs[case][0], 'set before any process starts'


def test_gazebo_launch_starts_gazebo_and_the_bridge_from_its_arguments(tmp_path):
    loaded = load_launch_file('gazebo.launch.py', tmp_path, {
        'defaults': {'namespace': ''},
        'headless': {'gui': 'false', 'world': '/worlds/lab.sdf', 'namespace': 'arm1',
                     'bridge_config': '/lab/bridge.yaml'}})
    for case, world, flags, namespace, config in (
            ('defaults', f'{SHARE}/gazebo/worlds/tabletop.sdf', '-r ', '',
             f'{SHARE}/config/gazebo_bridge.yaml'),
            ('headless', '/worlds/lab.sdf', '-r -s ', '/arm1', '/lab/bridge.yaml')):
        actions = [a for a in loaded['runs'][case] if a['kind'] != 'SetEnvironmentVariable']
        assert actions[0] == {'kind': 'IncludeLaunchDescription',
                              'source': '/share/ros_gz_sim/launch/gz_sim.launch.py',
                              'launch_arguments': {'gz_args': flags + world,
                                                   'on_exit_shutdown': 'true'}}
        bridge = actions[1]
        assert bridge['kind'] == 'Node' and bridge['kwargs'] == {
            'package': 'ros_gz_bridge', 'executable': 'parameter_bridge', 'name': 'gz_bridge',
            'namespace': namespace, 'output': 'screen',
            'parameters': [{'config_file': config, 'use_sim_time': True}],
            'remappings': [['clock', '/clock']]}
        assert all(a['kwargs']['package'] == 'active_finetune' for a in actions[2:])
    for name in ('sim.launch.py', 'robot.launch.py'):
        other = load_launch_file(name, tmp_path, {'defaults': {}})
        assert all(a['kind'] != 'IncludeLaunchDescription' and
                   a['kwargs'].get('package') in (None, 'active_finetune')
                   for a in other['runs']['defaults'])


def test_driver_arguments_namespace_camera_topic_and_use_camera():
    default = load_graph('robot', validate=False)
    assert 'camera' in [node.name for node in default.nodes]
    assert all(node.namespace == '' and not node.remappings for node in default.nodes)
    graph = load_graph('robot', validate=False, arguments={
        'use_camera': 'false', 'namespace': 'arm1/left',
        'camera_topic': '/camera/camera/color/image_raw'})
    assert [node.name for node in graph.nodes] == [
        'spacemouse', 'command_mux', 'policy', 'task_selector', 'demo_recorder', 'trainer',
        'dashboard']
    assert graph.namespace == '/arm1/left'
    for node in graph.nodes:
        assert node.namespace == '/arm1/left'
        assert node.remappings == (('camera/image_raw', '/camera/camera/color/image_raw'),)
    policy = graph.node('policy')
    assert policy.ros_arguments('p.yaml')[5:] == [
        '-r', '__ns:=/arm1/left', '-r', 'camera/image_raw:=/camera/camera/color/image_raw']
    assert policy.parameters_yaml().startswith('/arm1/left/policy:\n')
    assert load_graph('robot', validate=False, arguments={'namespace': '/'}).namespace == ''
    with pytest.raises(OverrideError, match='not a ROS namespace'):
        load_graph('robot', validate=False, arguments={'namespace': '/arm-1'})
    with pytest.raises(OverrideError, match='expected true or false'):
        load_graph('robot', validate=False, arguments={'use_camera': 'maybe'})
    with pytest.raises(OverrideError, match="unknown argument 'use_camera'"):
        load_graph('gazebo', validate=False, arguments={'use_camera': 'false'})


def test_qos_overrides_pass_through_the_graph_to_the_nodes():
    """The nodes' QoS override parameters are rclpy's, not the settings dataclass's."""
    topic = '/camera/camera/color/image_raw'
    graph = load_graph('robot', arguments={'camera_topic': topic}, overrides={
        f'policy.qos_overrides.{topic}.subscription.reliability': 'best_effort',
        f'demo_recorder.qos_overrides.{topic}.subscription.depth': '2'})
    assert graph.node('policy').parameters[
        f'qos_overrides.{topic}.subscription.reliability'] == 'best_effort'
    assert graph.node('demo_recorder').parameters[
        f'qos_overrides.{topic}.subscription.depth'] == 2
    with pytest.raises(OverrideError, match="no parameter 'qos_override'"):
        load_graph('robot', overrides={'policy.qos_override': 'x'})


NAMESPACED_NODE = """
import sys
import rclpy
from rclpy.node import Node
rclpy.init(args=sys.argv)
node = Node('policy')
node.declare_parameter('max_input_age_s', 0.0)
print(node.get_fully_qualified_name(), node.get_parameter('max_input_age_s').value)
node.destroy_node()
rclpy.shutdown()
"""


def test_a_namespaced_node_reads_the_parameter_file_the_runner_writes(tmp_path):
    """Check the file key: rcl matches ``policy`` only to ``/policy``, not ``/arm1/policy``."""
    node = load_graph('robot', arguments={'namespace': '/arm1'},
                      overrides={'policy.max_input_age_s': 0.5}).node('policy')
    params = tmp_path / 'policy.yaml'
    params.write_text(node.parameters_yaml())
    result = subprocess.run(
        [sys.executable, '-c', NAMESPACED_NODE] + node.ros_arguments(params),
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, ROS_DOMAIN_ID='0', ROS_AUTOMATIC_DISCOVERY_RANGE='OFF'))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['/arm1/policy', '0.5']


def test_the_installed_profile_file_is_the_runners_profile():
    text = (SOURCE_ROOT / 'config' / 'fastdds_large_shm.xml').read_text()
    assert re.sub(r'<!--.*?-->\n', '', text, flags=re.S) == FASTDDS_LARGE_SHM_PROFILE_XML
