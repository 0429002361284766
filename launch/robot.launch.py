"""
Launch the lab-robot graph: RealSense camera, SpaceMouse, command mux, policy and the AMF loop.

The arm's driver (e.g. MoveIt Servo) runs separately; its topics are remapped in by arguments:
``ros2 launch active_finetune robot.launch.py joint_states_topic:=/joint_states
ee_pose_topic:=/franka/ee_pose cmd_twist_topic:=/servo_node/delta_twist_cmds``.
Nodes, parameters and remappings come from config/graphs.yaml and config/robot.yaml through
active_finetune.graph, exactly as ``af-runner robot --arg name=value`` starts them.
"""

from active_finetune.graph import load_graph
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

GRAPH = 'robot'


def graph_arguments():
    """
    Declare one launch argument per graph argument of config/graphs.yaml.

    :return: list of DeclareLaunchArgument
    """
    return [DeclareLaunchArgument(argument.name, default_value=argument.default,
                                  description=argument.description)
            for argument in load_graph(GRAPH, validate=False).arguments]


def graph_nodes(context):
    """
    Build the graph's Node actions from the launch arguments' values.

    :param context: launch context
    :return: list of launch_ros Node actions
    """
    names = [argument.name for argument in load_graph(GRAPH, validate=False).arguments]
    graph = load_graph(GRAPH, arguments={name: LaunchConfiguration(name).perform(context)
                                         for name in names})
    return [Node(package='active_finetune', executable=node.executable, name=node.name,
                 output='screen', emulate_tty=True,
                 parameters=[str(graph.parameters_file), node.parameters],
                 remappings=list(node.remappings))
            for node in graph.nodes]


def generate_launch_description():
    """
    Describe the launch: the arguments, then the nodes.

    :return: LaunchDescription
    """
    return LaunchDescription(graph_arguments() + [OpaqueFunction(function=graph_nodes)])
