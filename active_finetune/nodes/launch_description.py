"""
Launch descriptions of the package's graphs, shared by launch/*.launch.py.

Each launch file returns :func:`generate_graph_launch_description` for its graph of
config/graphs.yaml: one launch argument per graph argument plus ``fastdds_profile`` (and, for
the 'gazebo' graph, ``world``, ``gui`` and ``bridge_config``), then the Fast DDS profile, then
(for 'gazebo') Gazebo and ros_gz_bridge, then one launch_ros Node per graph node.  Nodes,
parameters and remappings come from active_finetune.graph, exactly as ``af-runner`` starts them.

``ros2 launch`` loads the launch files in the system Python, which does not see torch and the
other packages of the lab's venv: this module imports only launch, launch_ros,
ament_index_python and active_finetune.graph, and loads the graph with ``validate=False`` (no
settings classes); each node checks its parameters when it declares them.  Only the ROS layer
(this package, active_finetune.nodes) imports launch and launch_ros.
"""

import os

from active_finetune.graph import load_graph
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction, \
    SetEnvironmentVariable
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

SHARE = get_package_share_directory('active_finetune')
FASTDDS_PROFILES_ENV = 'FASTRTPS_DEFAULT_PROFILES_FILE'
FASTDDS_PROFILE = os.path.join(SHARE, 'config', 'fastdds_large_shm.xml')
GAZEBO_GRAPH = 'gazebo'
"""The graph that runs against Gazebo Harmonic (world, GUI, ros_gz_bridge)."""


def graph_arguments(graph_name):
    """
    Declare one launch argument per graph argument of config/graphs.yaml, and fastdds_profile.

    :param graph_name: name of the graph in config/graphs.yaml
    :return: list of DeclareLaunchArgument
    """
    return [DeclareLaunchArgument(argument.name, default_value=argument.default,
                                  description=argument.description)
            for argument in load_graph(graph_name, validate=False).arguments] + [
        DeclareLaunchArgument(
            'fastdds_profile', default_value=FASTDDS_PROFILE,
            description='Fast DDS XML profile for the nodes (FASTRTPS_DEFAULT_PROFILES_FILE): by '
            "default the package's large shared-memory profile (640x480 images in ~3 ms instead "
            'of ~13 ms), unless FASTRTPS_DEFAULT_PROFILES_FILE is already set; '
            "'' = Fast DDS defaults")]


def gazebo_arguments():
    """
    Declare the Gazebo-specific launch arguments.

    :return: list of DeclareLaunchArgument
    """
    return [
        DeclareLaunchArgument(
            'world', default_value=os.path.join(SHARE, 'gazebo', 'worlds', 'tabletop.sdf'),
            description='SDF world file for Gazebo Harmonic (gz sim 8)'),
        DeclareLaunchArgument(
            'gui', default_value='true',
            description="'true': Gazebo server and GUI; 'false': headless server only"),
        DeclareLaunchArgument(
            'bridge_config', default_value=os.path.join(SHARE, 'config', 'gazebo_bridge.yaml'),
            description='ros_gz_bridge YAML that maps the world topics onto the topic contract'),
    ]


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


def gazebo_and_bridge(context, namespace):
    """
    Start Gazebo and the bridge from the launch arguments' values.

    :param context: launch context
    :param namespace: the graph's namespace, for the bridge (its /clock stays global)
    :return: list of launch actions
    """
    headless = LaunchConfiguration('gui').perform(context).lower() in ('false', '0', 'no')
    world = LaunchConfiguration('world').perform(context)
    gz_sim = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(
            get_package_share_directory('ros_gz_sim'), 'launch', 'gz_sim.launch.py')),
        launch_arguments={'gz_args': f'-r {"-s " if headless else ""}{world}',
                          'on_exit_shutdown': 'true'}.items())
    bridge_config = LaunchConfiguration('bridge_config').perform(context)
    bridge = Node(package='ros_gz_bridge', executable='parameter_bridge', name='gz_bridge',
                  namespace=namespace, output='screen',
                  parameters=[{'config_file': bridge_config, 'use_sim_time': True}],
                  remappings=[('clock', '/clock')])
    return [gz_sim, bridge]


def graph_actions(context, graph_name):
    """
    Build the Fast DDS profile, (for 'gazebo') Gazebo and the bridge, and the graph's nodes.

    The graph is loaded without importing the nodes' settings classes (``validate=False``):
    ``ros2 launch`` runs in the system Python, which does not see torch and the other
    packages of the lab's venv; each node checks its parameters when it declares them.

    :param context: launch context
    :param graph_name: name of the graph in config/graphs.yaml
    :return: list of launch actions
    """
    names = [argument.name for argument in load_graph(graph_name, validate=False).arguments]
    graph = load_graph(graph_name, arguments={name: LaunchConfiguration(name).perform(context)
                                              for name in names}, validate=False)
    simulator = gazebo_and_bridge(context, graph.namespace) \
        if graph_name == GAZEBO_GRAPH else []
    return fastdds_environment(context) + simulator + [
        Node(package='active_finetune', executable=node.executable, name=node.name,
             namespace=node.namespace, output='screen', emulate_tty=True,
             parameters=[str(graph.parameters_file), node.parameters],
             remappings=list(node.remappings))
        for node in graph.nodes]


def generate_graph_launch_description(graph_name):
    """
    Describe the launch of one graph: the arguments, then the profile, simulator and nodes.

    :param graph_name: name of the graph in config/graphs.yaml ('sim', 'robot', 'gazebo')
    :return: LaunchDescription
    """
    arguments = graph_arguments(graph_name)
    if graph_name == GAZEBO_GRAPH:
        arguments += gazebo_arguments()
    return LaunchDescription(arguments + [OpaqueFunction(function=graph_actions,
                                                         kwargs={'graph_name': graph_name})])
