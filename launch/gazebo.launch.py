"""
Launch the package against Gazebo Harmonic: tabletop world, ros_gz_bridge, the 'gazebo' graph.

Usage: ``ros2 launch active_finetune gazebo.launch.py [gui:=false] [world:=/path/world.sdf] ...``.
The world (gazebo/worlds/tabletop.sdf) has a table, objects, a fixed RGB camera and a kinematic
two-finger end effector driven by velocity commands; config/gazebo_bridge.yaml maps its Gazebo
topics onto the package's topic contract (camera/image_raw, camera/camera_info, joint_states,
ee_pose, cmd/twist, cmd/gripper, /clock).  The nodes run with use_sim_time.  Besides the
Gazebo-specific arguments (world, gui, bridge_config) it takes the same graph arguments as
sim.launch.py, plus the driver-topic remaps of robot.launch.py; nodes, parameters and remappings
come from config/graphs.yaml and config/robot.yaml through active_finetune.graph.  ``namespace``
applies to the bridge too (its /clock stays global), and the nodes get the package's large
shared-memory Fast DDS profile as with robot.launch.py (``fastdds_profile``).
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

GRAPH = 'gazebo'
SHARE = get_package_share_directory('active_finetune')
FASTDDS_PROFILES_ENV = 'FASTRTPS_DEFAULT_PROFILES_FILE'
FASTDDS_PROFILE = os.path.join(SHARE, 'config', 'fastdds_large_shm.xml')


def graph_arguments():
    """
    Declare one launch argument per graph argument of config/graphs.yaml.

    :return: list of DeclareLaunchArgument
    """
    return [DeclareLaunchArgument(argument.name, default_value=argument.default,
                                  description=argument.description)
            for argument in load_graph(GRAPH, validate=False).arguments]


def gazebo_arguments():
    """
    Declare the Gazebo-specific launch arguments and fastdds_profile.

    :return: list of DeclareLaunchArgument
    """
    return [
        DeclareLaunchArgument(
            'fastdds_profile', default_value=FASTDDS_PROFILE,
            description='Fast DDS XML profile for the nodes (FASTRTPS_DEFAULT_PROFILES_FILE): by '
            "default the package's large shared-memory profile (640x480 images in ~3 ms instead "
            'of ~13 ms), unless FASTRTPS_DEFAULT_PROFILES_FILE is already set; '
            "'' = Fast DDS defaults"),
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


def gazebo_and_graph(context):
    """
    Start Gazebo, the bridge and the graph's nodes from the launch arguments' values.

    The graph is loaded without importing the nodes' settings classes (``validate=False``), as
    in robot.launch.py: ``ros2 launch`` runs in the system Python, without the lab's venv.

    :param context: launch context
    :return: list of launch actions
    """
    headless = LaunchConfiguration('gui').perform(context).lower() in ('false', '0', 'no')
    world = LaunchConfiguration('world').perform(context)
    gz_sim = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(
            get_package_share_directory('ros_gz_sim'), 'launch', 'gz_sim.launch.py')),
        launch_arguments={'gz_args': f'-r {"-s " if headless else ""}{world}',
                          'on_exit_shutdown': 'true'}.items())
    names = [argument.name for argument in load_graph(GRAPH, validate=False).arguments]
    graph = load_graph(GRAPH, arguments={name: LaunchConfiguration(name).perform(context)
                                         for name in names}, validate=False)
    bridge_config = LaunchConfiguration('bridge_config').perform(context)
    bridge = Node(package='ros_gz_bridge', executable='parameter_bridge', name='gz_bridge',
                  namespace=graph.namespace, output='screen',
                  parameters=[{'config_file': bridge_config, 'use_sim_time': True}],
                  remappings=[('clock', '/clock')])
    nodes = [Node(package='active_finetune', executable=node.executable, name=node.name,
                  namespace=node.namespace, output='screen', emulate_tty=True,
                  parameters=[str(graph.parameters_file), node.parameters],
                  remappings=list(node.remappings))
             for node in graph.nodes]
    return fastdds_environment(context) + [gz_sim, bridge] + nodes


def generate_launch_description():
    """
    Describe the launch: the arguments, then Gazebo, the bridge and the nodes.

    :return: LaunchDescription
    """
    return LaunchDescription(graph_arguments() + gazebo_arguments()
                             + [OpaqueFunction(function=gazebo_and_graph)])
