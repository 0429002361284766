"""
The launch files: real launch/launch_ros descriptions whose nodes come from active_finetune.graph.

Each launch file returns ``generate_graph_launch_description(GRAPH)`` of
active_finetune/nodes/launch_description.py, the one module that builds the arguments and actions
of every graph.  ``launch`` and ``launch_ros`` are not installable here (ENVIRONMENT.md: no
distribution on the reachable registries; the PyPI package named ``launch`` is an unrelated tool),
so the launch files cannot be loaded by launch's own Python loader in this test.  Instead the test
checks, from the syntax tree, that the shared module builds the arguments and Node actions from
``load_graph(<the graph>)`` (so node names, executables, parameters, remappings and namespaces are
the runner's by construction), that every DeclareLaunchArgument has a description, that the
graphs declare the same arguments, and that the Fast DDS profile the runner sets is set; and it
loads each launch file, as ``ros2 launch`` does, with recording stand-ins for launch, launch_ros
and ament_index_python, to check the arguments and actions it gives and that loading it imports
nothing heavy.  The graph is loaded with ``validate=False`` (``ros2 launch`` runs in the system
Python, without the lab's venv and its torch): tests here check that this imports nothing heavy
and gives exactly the validated result.  The driver-facing arguments (namespace, camera_topic,
use_camera) are checked on the graph, and a namespaced node's parameter file is checked with
rclpy itself.
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
SHARED = SOURCE_ROOT / 'active_finetune' / 'nodes' / 'launch_description.py'
SHARED_MODULE = 'active_finetune.nodes.launch_description'


def parse(name):
    return ast.parse((LAUNCH_DIR / name).read_text(), filename=name)


def parse_shared():
    return ast.parse(SHARED.read_text(), filename=str(SHARED))


def calls(tree, name):
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, 'id', getattr(node.func, 'attr', None)) == name]


def keywords(call):
    return {k.arg: k.value for k in call.keywords}


def test_every_launch_file_is_known():
    assert sorted(p.name for p in LAUNCH_DIR.glob('*.launch.py')) == sorted(LAUNCH_GRAPHS)


@pytest.mark.parametrize('name, graph', sorted(LAUNCH_GRAPHS.items()))
def test_launch_file_returns_the_shared_description_of_its_graph(name, graph):
    tree = parse(name)
    assert ast.get_docstring(tree)
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert list(functions) == ['generate_launch_description']
    assigned = {t.id: a.value.value for a in tree.body
                if isinstance(a, ast.Assign) and isinstance(a.value, ast.Constant)
                for t in a.targets if isinstance(t, ast.Name)}
    assert assigned == {'GRAPH': graph}
    imports = [(i.module, a.name) for i in tree.body if isinstance(i, (ast.Import, ast.ImportFrom))
               for a in i.names]
    assert imports == [(SHARED_MODULE, 'generate_graph_launch_description')]
    returns = [ast.unparse(r.value) for r in ast.walk(functions['generate_launch_description'])
               if isinstance(r, ast.Return)]
    assert returns == ['generate_graph_launch_description(GRAPH)']


def test_shared_launch_description_builds_the_nodes_from_the_graph():
    tree = parse_shared()
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert [a.arg for a in functions['generate_graph_launch_description'].args.args] == [
        'graph_name']
    imports = {(i.module, a.name) for i in tree.body if isinstance(i, ast.ImportFrom)
               for a in i.names}
    assert ('active_finetune.graph', 'load_graph') in imports
    assert ('launch_ros.actions', 'Node') in imports
    load_calls = calls(tree, 'load_graph')
    assert load_calls
    for call in load_calls:
        assert isinstance(call.args[0], ast.Name) and call.args[0].id == 'graph_name'
        assert ast.unparse(keywords(call)['validate']) == 'False', ast.unparse(call)
    package_nodes = [c for c in calls(tree, 'Node')
                     if ast.literal_eval(keywords(c)['package']) == 'active_finetune']
    assert len(package_nodes) == 1, 'one Node(...) per graph node, built in a comprehension'
    node_kw = keywords(package_nodes[0])
    assert ast.unparse(node_kw['executable']) == 'node.executable'
    assert ast.unparse(node_kw['name']) == 'node.name'
    assert ast.unparse(node_kw['parameters']) == '[str(graph.parameters_file), node.parameters]'
    assert ast.unparse(node_kw['remappings']) == 'list(node.remappings)'
    assert ast.unparse(node_kw['namespace']) == 'node.namespace'
    comprehension = next(c for c in ast.walk(tree) if isinstance(c, ast.ListComp)
                         and package_nodes[0] in ast.walk(c))
    assert ast.unparse(comprehension.generators[0].iter) == 'graph.nodes'


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


def test_every_launch_argument_has_a_description():
    declared = calls(parse_shared(), 'DeclareLaunchArgument')
    assert declared
    for call in declared:
        assert 'description' in keywords(call), ast.unparse(call)
        assert 'default_value' in keywords(call), ast.unparse(call)


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
    if kind == 'SetEnvironmentVariable':
        return [kind] + list(action.args)
    if kind == 'Node':
        return [kind, action.kwargs['package'], action.kwargs['name'],
                action.kwargs['namespace']]
    return [kind]

entities = runpy.run_path(sys.argv[1])['generate_launch_description']().args[0]
declared = [e for e in entities if type(e).__name__ == 'DeclareLaunchArgument']
opaque = [e for e in entities if type(e).__name__ == 'OpaqueFunction']
assert entities == declared + opaque and len(opaque) == 1
defaults = {e.args[0]: e.kwargs['default_value'] for e in declared}
runs = {}
for case, environment, profile in [('default', None, defaults['fastdds_profile']),
                                   ('set in environment', '/lab.xml', defaults['fastdds_profile']),
                                   ('given', '/lab.xml', '/given.xml'), ('off', None, '')]:
    os.environ.pop('FASTRTPS_DEFAULT_PROFILES_FILE', None)
    if environment:
        os.environ['FASTRTPS_DEFAULT_PROFILES_FILE'] = environment
    context = dict(defaults, fastdds_profile=profile, namespace='arm1')
    function = opaque[0].kwargs['function']
    actions = function(context, *opaque[0].kwargs.get('args', ()),
                       **(opaque[0].kwargs.get('kwargs') or {}))
    runs[case] = [describe(action) for action in actions]
heavy = sorted(m for m in sys.modules if m.split('.')[0] in
               ('torch', 'rclpy', 'numpy', 'cv2', 'scipy', 'mcap', 'mujoco', 'safetensors'))
print(json.dumps({'declared': [[e.args[0], e.kwargs['default_value']] for e in declared],
                  'runs': runs, 'heavy': heavy}))
"""


@pytest.mark.parametrize('name, graph', sorted(LAUNCH_GRAPHS.items()))
def test_launch_file_loads_in_a_python_without_torch_and_gives_its_graph(name, graph, tmp_path):
    """Load the file as ``ros2 launch`` does, with stand-ins for launch, launch_ros and ament."""
    result = subprocess.run([sys.executable, '-c', LOAD_LAUNCH_FILE, str(LAUNCH_DIR / name)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=str(SOURCE_ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert loaded['heavy'] == []
    profile = '/share/active_finetune/config/fastdds_large_shm.xml'
    expected = [[a.name, a.default] for a in load_graph(graph, validate=False).arguments]
    expected.append(['fastdds_profile', profile])
    simulator = []
    if graph == 'gazebo':
        expected += [['world', '/share/active_finetune/gazebo/worlds/tabletop.sdf'],
                     ['gui', 'true'],
                     ['bridge_config', '/share/active_finetune/config/gazebo_bridge.yaml']]
        simulator = [['IncludeLaunchDescription'],
                     ['Node', 'ros_gz_bridge', 'gz_bridge', '/arm1']]
    assert loaded['declared'] == expected
    nodes = [['Node', 'active_finetune', node.name, node.namespace] for node in load_graph(
        graph, validate=False, arguments={'namespace': 'arm1'}).nodes]
    assert nodes and all(node[3] == '/arm1' for node in nodes)
    runs = loaded['runs']
    assert runs['default'] == [['SetEnvironmentVariable', FASTDDS_PROFILES_ENV, profile]] + \
        simulator + nodes
    assert runs['set in environment'] == simulator + nodes
    assert runs['given'] == [['SetEnvironmentVariable', FASTDDS_PROFILES_ENV, '/given.xml']] + \
        simulator + nodes
    assert runs['off'] == simulator + nodes


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


def test_launch_files_give_the_nodes_the_runners_fast_dds_profile():
    tree = parse_shared()
    assigned = {t.id: a.value for a in tree.body if isinstance(a, ast.Assign)
                for t in a.targets if isinstance(t, ast.Name)}
    assert ast.literal_eval(assigned['FASTDDS_PROFILES_ENV']) == FASTDDS_PROFILES_ENV
    assert "'config', 'fastdds_large_shm.xml')" in ast.unparse(assigned['FASTDDS_PROFILE'])
    declared = {ast.literal_eval(c.args[0]): keywords(c)
                for c in calls(tree, 'DeclareLaunchArgument')
                if isinstance(c.args[0], ast.Constant)}
    assert ast.unparse(declared['fastdds_profile']['default_value']) == 'FASTDDS_PROFILE'
    setters = calls(tree, 'SetEnvironmentVariable')
    assert [ast.unparse(c.args[0]) for c in setters] == ['FASTDDS_PROFILES_ENV']
    # Set by the function whose actions come before the nodes (launch runs them in order).
    returns = [ast.unparse(r.value) for r in ast.walk(tree) if isinstance(r, ast.Return)
               and r.value is not None and 'fastdds_environment(context)' in ast.unparse(r.value)]
    assert len(returns) == 1 and returns[0].startswith('fastdds_environment(context) + ')


def test_the_installed_profile_file_is_the_runners_profile():
    text = (SOURCE_ROOT / 'config' / 'fastdds_large_shm.xml').read_text()
    assert re.sub(r'<!--.*?-->\n', '', text, flags=re.S) == FASTDDS_LARGE_SHM_PROFILE_XML


def test_gazebo_launch_declares_world_gui_and_bridge_config():
    declared_calls = calls(parse_shared(), 'DeclareLaunchArgument')
    declared = {ast.literal_eval(c.args[0]) for c in declared_calls
                if isinstance(c.args[0], ast.Constant)}
    assert declared == {'world', 'gui', 'bridge_config', 'fastdds_profile'}
    source = SHARED.read_text()
    assert "'gazebo', 'worlds', 'tabletop.sdf'" in source
    assert "'config', 'gazebo_bridge.yaml'" in source
    assert "executable='parameter_bridge'" in source


def test_launch_files_are_installed_by_setup_py():
    setup = (SOURCE_ROOT / 'setup.py').read_text()
    for pattern in ("glob('launch/*.launch.py')", "glob('config/*.yaml')",
                    "glob('config/*.xml')", "glob('gazebo/worlds/*.sdf')"):
        assert pattern in setup
