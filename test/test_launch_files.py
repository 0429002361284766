"""
The launch files: real launch/launch_ros descriptions whose nodes come from active_finetune.graph.

``launch`` and ``launch_ros`` are not installable here (ENVIRONMENT.md: no distribution on the
reachable registries; the PyPI package named ``launch`` is an unrelated tool), so the launch files
cannot be loaded by launch's Python loader in this test.  Instead the test checks, from their
syntax tree, that each builds its arguments and Node actions from ``load_graph(<its graph>)``
(so node names, executables, parameters and remappings are the runner's by construction), that
every DeclareLaunchArgument has a description, and that the graphs declare the same arguments.
"""

import ast

from active_finetune.graph import load_graph, SOURCE_ROOT
import pytest

LAUNCH_DIR = SOURCE_ROOT / 'launch'
LAUNCH_GRAPHS = {'sim.launch.py': 'sim', 'robot.launch.py': 'robot', 'gazebo.launch.py': 'gazebo'}


def parse(name):
    return ast.parse((LAUNCH_DIR / name).read_text(), filename=name)


def calls(tree, name):
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, 'id', getattr(node.func, 'attr', None)) == name]


def keywords(call):
    return {k.arg: k.value for k in call.keywords}


def test_every_launch_file_is_known():
    assert sorted(p.name for p in LAUNCH_DIR.glob('*.launch.py')) == sorted(LAUNCH_GRAPHS)


@pytest.mark.parametrize('name, graph', sorted(LAUNCH_GRAPHS.items()))
def test_launch_file_builds_its_nodes_from_its_graph(name, graph):
    tree = parse(name)
    functions = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert 'generate_launch_description' in functions
    assigned = {t.id: a.value.value for a in tree.body
                if isinstance(a, ast.Assign) and isinstance(a.value, ast.Constant)
                for t in a.targets if isinstance(t, ast.Name)}
    assert assigned['GRAPH'] == graph
    imports = {(i.module, a.name) for i in tree.body if isinstance(i, ast.ImportFrom)
               for a in i.names}
    assert ('active_finetune.graph', 'load_graph') in imports
    assert ('launch_ros.actions', 'Node') in imports
    for call in calls(tree, 'load_graph'):
        assert isinstance(call.args[0], ast.Name) and call.args[0].id == 'GRAPH'
    package_nodes = [c for c in calls(tree, 'Node')
                     if ast.literal_eval(keywords(c)['package']) == 'active_finetune']
    assert len(package_nodes) == 1, 'one Node(...) per graph node, built in a comprehension'
    node_kw = keywords(package_nodes[0])
    assert ast.unparse(node_kw['executable']) == 'node.executable'
    assert ast.unparse(node_kw['name']) == 'node.name'
    assert ast.unparse(node_kw['parameters']) == '[str(graph.parameters_file), node.parameters]'
    assert ast.unparse(node_kw['remappings']) == 'list(node.remappings)'
    comprehension = next(c for c in ast.walk(tree) if isinstance(c, ast.ListComp)
                         and package_nodes[0] in ast.walk(c))
    assert ast.unparse(comprehension.generators[0].iter) == 'graph.nodes'


@pytest.mark.parametrize('name', sorted(LAUNCH_GRAPHS))
def test_every_launch_argument_has_a_description(name):
    declared = calls(parse(name), 'DeclareLaunchArgument')
    assert declared
    for call in declared:
        assert 'description' in keywords(call), ast.unparse(call)
        assert 'default_value' in keywords(call), ast.unparse(call)


def test_graph_arguments_have_descriptions_and_gazebo_takes_the_sim_arguments():
    sim = {a.name for a in load_graph('sim', validate=False).arguments}
    robot = {a.name for a in load_graph('robot', validate=False).arguments}
    gazebo = {a.name for a in load_graph('gazebo', validate=False).arguments}
    assert sim == {'dataset_dir', 'checkpoint', 'checkpoint_dir', 'strategy', 'budget',
                   'demos_per_round'}
    assert gazebo == robot and sim < gazebo
    assert robot - sim == {'joint_states_topic', 'ee_pose_topic', 'cmd_twist_topic',
                           'cmd_gripper_topic'}
    for graph in ('sim', 'robot', 'gazebo'):
        for argument in load_graph(graph, validate=False).arguments:
            assert argument.description and (argument.parameters or argument.remap)


def test_gazebo_launch_declares_world_gui_and_bridge_config():
    declared_calls = calls(parse('gazebo.launch.py'), 'DeclareLaunchArgument')
    declared = {ast.literal_eval(c.args[0]) for c in declared_calls
                if isinstance(c.args[0], ast.Constant)}
    assert declared == {'world', 'gui', 'bridge_config'}
    source = (LAUNCH_DIR / 'gazebo.launch.py').read_text()
    assert "'gazebo', 'worlds', 'tabletop.sdf'" in source
    assert "'config', 'gazebo_bridge.yaml'" in source
    assert "executable='parameter_bridge'" in source


def test_launch_files_are_installed_by_setup_py():
    setup = (SOURCE_ROOT / 'setup.py').read_text()
    for pattern in ("glob('launch/*.launch.py')", "glob('config/*.yaml')",
                    "glob('gazebo/worlds/*.sdf')"):
        assert pattern in setup
