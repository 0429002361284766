"""
Launch the simulation graph: the whole AMF loop in MuJoCo/Meta-World with the scripted operator.

Usage: ``ros2 launch active_finetune sim.launch.py [budget:=8] [dataset_dir:=/data/episodes] ...``
(``ros2 launch active_finetune sim.launch.py --show-args`` lists the arguments).  Nodes,
parameters and remappings come from config/graphs.yaml and config/sim.yaml through
active_finetune.graph, exactly as ``af-runner sim`` starts them.
"""

from active_finetune.graph import load_graph
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

GRAPH = 'sim'


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
