"""
What a node graph is.

Its nodes (with final parameters and remappings), its arguments, the topics it exchanges with the
robot, and the errors of a graph description that cannot be used.
"""

import dataclasses
from pathlib import Path
import sys

import yaml

PACKAGE = 'active_finetune'


class GraphConfigError(ValueError):
    """A graph description or parameter file that cannot be used (unknown node, bad value...)."""


class OverrideError(GraphConfigError):
    """An override (``node.param=value``) or graph argument naming or typing something wrongly."""


@dataclasses.dataclass(frozen=True)
class RobotTopic:
    """
    A topic the package exchanges with the robot driver or simulator (Gazebo: bridged).

    :param name: topic name in the package's contract (relative)
    :param ros_type: ROS type, ``pkg/msg/Type``
    :param direction: 'in' (the package subscribes) or 'out' (the package publishes)
    """

    name: str
    ros_type: str
    direction: str


ROBOT_TOPICS = (
    RobotTopic('camera/image_raw', 'sensor_msgs/msg/Image', 'in'),
    RobotTopic('camera/camera_info', 'sensor_msgs/msg/CameraInfo', 'in'),
    RobotTopic('joint_states', 'sensor_msgs/msg/JointState', 'in'),
    RobotTopic('ee_pose', 'geometry_msgs/msg/PoseStamped', 'in'),
    RobotTopic('cmd/twist', 'geometry_msgs/msg/TwistStamped', 'out'),
    RobotTopic('cmd/gripper', 'std_msgs/msg/Float64', 'out'),
)
"""What the nodes take from, and send to, the robot or simulator (docs/interfaces.md)."""


@dataclasses.dataclass(frozen=True)
class GraphArgument:
    """
    A graph argument: sets parameters of several nodes, remaps a topic, namespaces or drops nodes.

    Exactly one of ``parameters``, ``remap``, ``namespace`` and ``node`` is given.

    :param name: argument name (``ros2 launch ... name:=value``, ``af-runner --arg name=value``)
    :param description: what it sets
    :param default: default value as text ('' for parameter arguments: keep the parameter file's)
    :param parameters: ``node.param`` keys it sets (nodes not in the graph are skipped)
    :param remap: topic it remaps in every node of the graph (``remap:=value``), or ''
    :param namespace: the argument is the ROS namespace of every node ('' = none)
    :param node: name of a node the argument switches on ('true', the default) or off ('false')
    """

    name: str
    description: str
    default: str
    parameters: tuple = ()
    remap: str = ''
    namespace: bool = False
    node: str = ''


@dataclasses.dataclass(frozen=True)
class GraphNode:
    """
    One node of a graph, with its final parameters and remappings.

    :param name: node name
    :param executable: console script name (setup.py), also the module under active_finetune.nodes
    :param parameters: dict of parameter values (checked, paths resolved)
    :param remappings: tuple of (from, to) topic remappings
    :param settings: 'module:Class' of the settings dataclass (its fields are the parameters;
        '' when the graph was loaded without validation)
    :param namespace: ROS namespace of the node, '' or absolute (``/arm1``)
    """

    name: str
    executable: str
    parameters: dict
    remappings: tuple
    settings: str
    namespace: str = ''

    @property
    def parameters_key(self):
        """
        Name the node in a ROS 2 parameter file: its name, or its full name when namespaced.

        rcl matches a file's key ``policy`` only to the node ``/policy``, not ``/arm1/policy``.
        """
        return f'{self.namespace}/{self.name}' if self.namespace else self.name

    @property
    def module(self):
        """Python module of the node (``python -m`` target)."""
        return f'{PACKAGE}.nodes.{self.executable}'

    def parameters_yaml(self):
        """
        Render the node's parameters as a ROS 2 parameter file.

        :return: YAML text ``<name>: {ros__parameters: {...}}`` (``/<ns>/<name>`` when namespaced)
        """
        return yaml.safe_dump({self.parameters_key: {'ros__parameters': self.parameters}},
                              sort_keys=True)

    def ros_arguments(self, params_file):
        """
        Build the ROS arguments that give the node its name, parameters and remappings.

        :param params_file: path of the file written from :meth:`parameters_yaml`
        :return: list of str, starting with ``--ros-args``
        """
        arguments = ['--ros-args', '-r', f'__node:={self.name}', '--params-file', str(params_file)]
        if self.namespace:
            arguments += ['-r', f'__ns:={self.namespace}']
        for source, target in self.remappings:
            arguments += ['-r', f'{source}:={target}']
        return arguments

    def command(self, params_file):
        """
        Build the command line that starts the node in its own Python process.

        :param params_file: path of the file written from :meth:`parameters_yaml`
        :return: list of str
        """
        return [sys.executable, '-m', self.module] + self.ros_arguments(params_file)


@dataclasses.dataclass(frozen=True)
class Graph:
    """
    A graph ready to start: its nodes in start order and the arguments it accepts.

    :param name: graph name ('sim', 'robot', 'gazebo')
    :param description: what the graph is for
    :param nodes: tuple of :class:`GraphNode`
    :param arguments: tuple of :class:`GraphArgument`
    :param parameters_file: the ROS 2 parameter file the values came from
    :param namespace: ROS namespace of the graph's nodes ('' = none)
    """

    name: str
    description: str
    nodes: tuple
    arguments: tuple
    parameters_file: Path
    namespace: str = ''

    def node(self, name):
        """
        Look a node up by name.

        :param name: node name
        :return: :class:`GraphNode`
        :raises KeyError: for a node not in the graph
        """
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f'node {name!r} is not in graph {self.name!r}; it has '
                       f'{[n.name for n in self.nodes]}')
