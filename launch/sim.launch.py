"""
Launch the simulation graph: the whole AMF loop in MuJoCo/Meta-World with the scripted operator.

Usage: ``ros2 launch active_finetune sim.launch.py [budget:=8] [dataset_dir:=/data/episodes] ...``
(``ros2 launch active_finetune sim.launch.py --show-args`` lists the arguments).  Nodes,
parameters and remappings come from config/graphs.yaml and config/sim.yaml through
active_finetune.graph, exactly as ``af-runner sim`` starts them; the nodes get the package's
large shared-memory Fast DDS profile (config/fastdds_large_shm.xml) as with af-runner, unless
FASTRTPS_DEFAULT_PROFILES_FILE is set or ``fastdds_profile:=''``.
"""

import os

from active_finetune.graph import load_graph
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

GRAPH = 'sim'
FASTDDS_PROFILES_ENV = 'FASTRTPS_DEFAULT_PROFILES_FILE'
FASTDDS_PROFILE = os.path.join(get_package_share_directory('active_finetune'), 'config',
                               'fastdds_large_shm.xml')


def graph_arguments():
    """
    Declare one launch argument per graph argument of config/graphs.yaml, and fastdds_profile.

    :return: list of DeclareLaunchArgument
    """
    return [DeclareLaunchArgument(argument.name, default_value=argument.default,
                                  description=argument.description)
            for argument in load_graph(GRAPH, validate=False).arguments] + [
        DeclareLaunchArgument(
            'fastdds_profile', default_value=FASTDDS_PROFILE,
            description='Fast DDS XML profile for the nodes (FASTRTPS_DEFAULT_PROFILES_FILE): by '
            "default the package's large shared-memory profile (640x480 images in ~3 ms instead "
            'of ~13 ms), unless FASTRTPS_DEFAULT_PROFILES_FILE is already set; '
            "'' = Fast DDS defaults")]


def fastdds_environment(context):
    """
    Set FASTRTPS_DEFAULT_PROFILES_FILE for the nodes from the fastdds_profile argument.

    A profile file already named in the environment wins over the package's default, as in
    af-runner.

    :param context: launch context
    :return: list with a SetEnvironmentVariable action, or empty
    """
    profile = LaunchConfiguration('fastdds_profile').perform(context)
    if not profile or (profile == FASTDDS_PROFILE and os.environ.get(FASTDDS_PROFILES_ENV)):
        return []
    return [SetEnvironmentVariable(FASTDDS_PROFILES_ENV, profile)]


def graph_nodes(context):
    """
    Build the graph's Node actions from the launch arguments' values.

    The graph is loaded without importing the nodes' settings classes (``validate=False``):
    ``ros2 launch`` runs in the system Python, which does not see torch and the other
    packages of the lab's venv; each node checks its parameters when it declares them.

    :param context: launch context
    :return: list of launch_ros Node actions
    """
    names = [argument.name for argument in load_graph(GRAPH, validate=False).arguments]
    graph = load_graph(GRAPH, arguments={name: LaunchConfiguration(name).perform(context)
                                         for name in names}, validate=False)
    return fastdds_environment(context) + [
        Node(package='active_finetune', executable=node.executable, name=node.name,
             namespace=node.namespace, output='screen', emulate_tty=True,
             parameters=[str(graph.parameters_file), node.parameters],
             remappings=list(node.remappings))
        for node in graph.nodes]


def generate_launch_description():
    """
    Describe the launch: the arguments, then the Fast DDS profile and the nodes.

    :return: LaunchDescription
    """
    return LaunchDescription(graph_arguments() + [OpaqueFunction(function=graph_nodes)])
