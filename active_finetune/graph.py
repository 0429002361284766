"""
The package's node graphs, described once and read by the runner, the launch files and the tests.

Two kinds of files in ``config/``:

- ``graphs.yaml``: which nodes run in each graph (``sim``, ``robot``, ``gazebo``), their
  executables, remappings, and the graph's arguments (launch arguments / ``af-runner --arg``:
  parameters of several nodes, driver topic remaps, the namespace, a node switched on or off).
  Each executable names its settings dataclass, whose fields are the node's parameters.
- ``<parameters file>.yaml`` (``sim.yaml``, ``robot.yaml``): standard ROS 2 parameter files
  (``node_name: {ros__parameters: {...}}``), the same files ``ros2 launch`` hands to the nodes.

:func:`load_graph` merges, in increasing precedence, the parameter file, the graph's arguments
and ``node.param`` overrides, checks every value against the node's settings dataclass (ROS
parameters are strictly typed: an int where a float is declared is converted, anything else is
refused) and resolves relative paths (see :func:`resolve_path`).  It imports no rclpy.  With
``validate=False`` (what the launch files use: ``ros2 launch`` runs in the system Python, which
does not see torch and the other packages of the lab's venv) it imports nothing but yaml and
takes each argument's type from the parameter file's value, which the tests keep identical to
the validated result; the nodes check their parameters again when they declare them.

Relative paths: values of parameters whose name ends in ``_path``, ``_dir`` or ``checkpoint``
are resolved here, so every node sees absolute paths whatever its working directory:

- inputs (``*_path``, ``*checkpoint``: files the nodes read) against the package root: the
  source checkout when the config comes from one, else the installed share directory
  (``share/active_finetune``, where the pretrained checkpoint is installed);
- outputs (``*_dir``: where nodes write episodes, checkpoints, logs) against the source checkout,
  or against the current working directory for an installed package (share directories are not
  for data).

Empty values stay empty (they mean "off", e.g. ``log_dir: ''``).
"""

import ast
import dataclasses
import importlib
import logging
from pathlib import Path
import re
import sys

import yaml

logger = logging.getLogger(__name__)

PACKAGE = 'active_finetune'
SOURCE_ROOT = Path(__file__).resolve().parents[1]
GRAPHS_FILE = 'graphs.yaml'
PATH_SUFFIXES = ('_path', '_dir', 'checkpoint')
INPUT_PATH_SUFFIXES = ('_path', 'checkpoint')
NAMESPACE_PATTERN = re.compile(r'(/[A-Za-z_][A-Za-z0-9_]*)+')
QOS_OVERRIDES = 'qos_overrides'
"""Prefix of the QoS override parameters rclpy declares (passed to the nodes unchecked)."""
SWITCH_VALUES = {'true': True, 'false': False, '1': True, '0': False, 'yes': True, 'no': False,
                 'on': True, 'off': False}


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


def default_config_dir():
    """
    Find the package's config directory: the source checkout's, else the installed share directory.

    :return: Path
    :raises GraphConfigError: when neither has graphs.yaml
    """
    candidates = [SOURCE_ROOT / 'config', Path(sys.prefix) / 'share' / PACKAGE / 'config']
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory(PACKAGE)) / 'config')
    except (ImportError, LookupError, OSError, ValueError):
        pass
    for candidate in candidates:
        if (candidate / GRAPHS_FILE).is_file():
            return candidate
    raise GraphConfigError(f'{GRAPHS_FILE} not found in {[str(c) for c in candidates]}')


def is_source_checkout(root):
    """
    Tell a source checkout (setup.py next to config/) from an installed share directory.

    :param root: the directory holding config/
    :return: bool
    """
    return (Path(root) / 'setup.py').is_file()


def resolve_path(key, value, package_root, cwd=None):
    """
    Make a path parameter absolute (see the module docstring for the rule).

    :param key: parameter name (decides whether it is a path, and input or output)
    :param value: parameter value
    :param package_root: directory holding config/ (source checkout or share directory)
    :param cwd: working directory for outputs of an installed package (default: the current one)
    :return: the value, absolute when it is a non-empty relative path
    """
    if not isinstance(value, str) or not value or not key.endswith(PATH_SUFFIXES):
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    package_root = Path(package_root)
    if key.endswith(INPUT_PATH_SUFFIXES) or is_source_checkout(package_root):
        base = package_root
    else:
        base = Path(cwd) if cwd is not None else Path.cwd()
    return str((base / path).resolve())


def discover_settings(executable):
    """
    Find a node's settings dataclass from its source: the class it passes to ``declare_config``.

    Reads ``active_finetune/nodes/<executable>.py`` with :mod:`ast` (nothing is imported), finds
    ``declare_config(self, Name, ...)`` and where ``Name`` is imported from.

    :param executable: node executable (module name under active_finetune.nodes)
    :return: 'package.module:Class'
    :raises GraphConfigError: when the module or the call cannot be found
    """
    path = SOURCE_ROOT / PACKAGE / 'nodes' / f'{executable}.py'
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError) as error:
        raise GraphConfigError(f'cannot read node module of {executable!r}: {error}') from error
    class_name = None
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, 'id', None) == 'declare_config' \
                and len(call.args) >= 2 and isinstance(call.args[1], ast.Name):
            class_name = call.args[1].id
            break
    if class_name is None:
        raise GraphConfigError(f'{path} has no declare_config(self, SettingsClass) call')
    for statement in tree.body:
        if isinstance(statement, ast.ImportFrom) and statement.module and statement.level == 0:
            if any((alias.asname or alias.name) == class_name for alias in statement.names):
                return f'{statement.module}:{class_name}'
    return f'{PACKAGE}.nodes.{executable}:{class_name}'


def settings_defaults(spec):
    """
    Import a settings dataclass and return its parameter defaults.

    :param spec: 'package.module:Class'
    :return: dict field name -> default
    :raises GraphConfigError: when the class cannot be imported or is not a dataclass
    """
    module_name, _, class_name = spec.partition(':')
    try:
        settings_cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise GraphConfigError(f'settings class {spec!r} cannot be imported: {error}') from error
    if not dataclasses.is_dataclass(settings_cls):
        raise GraphConfigError(f'settings class {spec!r} is not a dataclass')
    defaults = {}
    for f in dataclasses.fields(settings_cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
        else:
            raise GraphConfigError(
                f'{spec}.{f.name} has no default, so it cannot be a ROS parameter')
    return defaults


def _type_name(value):
    return type(value).__name__


def coerce_value(value, default, where):
    """
    Check a parameter value against the type of its default, as ROS parameters are typed.

    An int is accepted (and converted) where a float is declared; lists replace tuples.

    :param value: the proposed value
    :param default: the declared default (its type is the parameter's type)
    :param where: 'node.param', for messages
    :return: the value, converted where that is safe
    :raises OverrideError: when the type does not match
    """
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)) and value:
            element = default[0] if default else value[0]
            return [coerce_value(v, element, f'{where}[{i}]') for i, v in enumerate(value)]
    else:
        raise GraphConfigError(
            f'{where}: default {default!r} has a type ROS parameters do not have')
    raise OverrideError(f'{where}: expected {_type_name(default)} like the declared default '
                        f'{default!r}, got {_type_name(value)} {value!r}')


def parse_text_value(text, default):
    """
    Turn a command-line or launch-argument text into a value of the parameter's type.

    :param text: the text (YAML syntax for numbers, booleans and lists)
    :param default: the declared default
    :return: the parsed value (not yet checked)
    """
    if isinstance(default, str):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise OverrideError(f'cannot parse {text!r}: {error}') from error


def parse_assignment(text):
    """
    Split ``key=value`` (command line ``--set``/``--arg``).

    :param text: the assignment
    :return: (key, value text)
    :raises OverrideError: without '='
    """
    key, sep, value = text.partition('=')
    if not sep or not key.strip():
        raise OverrideError(f'expected key=value, got {text!r}')
    return key.strip(), value


def read_yaml(path):
    """
    Read a YAML file whose top level is a mapping.

    :param path: file path
    :return: dict
    :raises GraphConfigError: when missing or malformed
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise GraphConfigError(f'cannot read {path}: {error}') from error
    if not isinstance(data, dict):
        raise GraphConfigError(f'{path}: expected a mapping at the top level, got {data!r}')
    return data


def graph_names(config_dir=None):
    """
    List the graphs described in graphs.yaml.

    :param config_dir: config directory (default :func:`default_config_dir`)
    :return: list of names
    """
    config_dir = Path(config_dir) if config_dir else default_config_dir()
    return sorted(read_yaml(config_dir / GRAPHS_FILE)['graphs'])


def _parameter_blocks(path):
    data = read_yaml(path)
    blocks = {}
    for node_name, block in data.items():
        if not isinstance(block, dict) or set(block) != {'ros__parameters'} \
                or not isinstance(block['ros__parameters'], dict):
            raise GraphConfigError(
                f'{path}: {node_name!r} must hold exactly a ros__parameters mapping')
        blocks[node_name] = dict(block['ros__parameters'])
    return blocks


def _split_key(key, nodes):
    node_name, sep, param = key.partition('.')
    if not sep or not param:
        raise OverrideError(f'expected node.param, got {key!r}')
    if node_name not in nodes:
        raise OverrideError(
            f'{key!r}: node {node_name!r} is not in the graph; it has {sorted(nodes)}')
    return node_name, param


def _arguments(description, graph_name):
    arguments = []
    for name, spec in (description.get('arguments') or {}).items():
        if not spec.get('description'):
            raise GraphConfigError(f'graph {graph_name!r}: argument {name!r} needs a description')
        kinds = [kind for kind in ('parameters', 'remap', 'namespace', 'node') if spec.get(kind)]
        if len(kinds) != 1:
            raise GraphConfigError(f'graph {graph_name!r}: argument {name!r} needs exactly one of '
                                   f'parameters, remap, namespace, node; it has {kinds}')
        remap = spec.get('remap', '')
        node = spec.get('node', '')
        default = spec.get('default', remap or ('true' if node else ''))
        arguments.append(GraphArgument(
            name=name, description=spec['description'],
            default=str(default).lower() if isinstance(default, bool) else str(default),
            parameters=tuple(spec.get('parameters', ())), remap=remap,
            namespace=bool(spec.get('namespace')), node=node))
    return tuple(arguments)


def parse_namespace(value, where='namespace'):
    """
    Check a ROS namespace and make it absolute.

    :param value: '' or '/' (none), ``arm1`` or ``/arm1/left`` (tokens of letters, digits and
        underscores, not starting with a digit)
    :param where: name for messages
    :return: '' or the absolute namespace without a trailing slash
    :raises OverrideError: for anything else
    """
    text = str(value if value is not None else '').strip()
    if text in ('', '/'):
        return ''
    text = '/' + text.strip('/')
    if not NAMESPACE_PATTERN.fullmatch(text):
        raise OverrideError(f'{where}: {value!r} is not a ROS namespace (tokens of letters, '
                            'digits and underscores, not starting with a digit, separated by /)')
    return text


def is_qos_override(param):
    """
    Tell rclpy's QoS override parameters (``qos_overrides./topic.subscription.reliability``).

    They are declared by rclpy for subscriptions created with QoS overriding options, not by the
    node's settings dataclass, so they pass through unchecked (rclpy checks them).

    :param param: parameter name (or the ``qos_overrides`` mapping of a parameter file)
    :return: bool
    """
    return param == QOS_OVERRIDES or param.startswith(QOS_OVERRIDES + '.')


def parse_switch(value, where):
    """
    Read a true/false graph argument given as a bool or as launch/command-line text.

    :param value: bool, or text such as 'true', 'false', '1', '0'
    :param where: name for messages
    :return: bool
    :raises OverrideError: for any other value
    """
    if isinstance(value, bool):
        return value
    key = str(value).strip().lower()
    if key not in SWITCH_VALUES:
        raise OverrideError(f'{where}: expected true or false, got {value!r}')
    return SWITCH_VALUES[key]


def load_graph(name, overrides=None, arguments=None, config_dir=None, validate=True, cwd=None):
    """
    Build a graph from graphs.yaml, its parameter file, graph arguments and overrides.

    :param name: graph name ('sim', 'robot', 'gazebo')
    :param overrides: dict ``'node.param' -> value`` (highest precedence); keys of nodes that
        are not in the graph are refused
    :param arguments: dict argument name -> value (text or typed; '' keeps the file's value;
        see :class:`GraphArgument` for the kinds: parameters, remap, namespace, node switch)
    :param config_dir: directory with graphs.yaml and the parameter files (default
        :func:`default_config_dir`)
    :param validate: check every value against the settings dataclasses (imports them)
    :param cwd: base of relative output paths for an installed package (default: current directory)
    :return: :class:`Graph`
    :raises GraphConfigError: for an unknown graph or a bad parameter file
    :raises OverrideError: for an override or argument that names or types something wrongly
    """
    config_dir = Path(config_dir) if config_dir else default_config_dir()
    package_root = config_dir.parent
    described = read_yaml(config_dir / GRAPHS_FILE)
    graphs = described.get('graphs') or {}
    executables = described.get('executables') or {}
    if name not in graphs:
        raise GraphConfigError(
            f'unknown graph {name!r}; {config_dir / GRAPHS_FILE} has {sorted(graphs)}')
    description = graphs[name]
    parameters_file = config_dir / description['parameters']
    blocks = _parameter_blocks(parameters_file)
    node_specs = {}
    for entry in description['nodes']:
        executable = entry['executable']
        if executable not in executables:
            raise GraphConfigError(f'graph {name!r}: executable {executable!r} is not one of '
                                   f'{sorted(executables)}')
        node_name = entry.get('name', executable)
        if node_name in node_specs:
            raise GraphConfigError(f'graph {name!r}: node name {node_name!r} appears twice')
        node_specs[node_name] = entry
    graph_arguments = _arguments(description, name)

    values = {node: dict(blocks.get(node, {})) for node in node_specs}
    for node_name, block in values.items():
        block.update(description.get('common_parameters') or {})
    remappings = [tuple(pair) for pair in description.get('remappings') or ()]
    known_arguments = {a.name: a for a in graph_arguments}
    for argument in graph_arguments:
        if argument.node and argument.node not in node_specs:
            raise GraphConfigError(f'graph {name!r}: argument {argument.name!r} switches node '
                                   f'{argument.node!r}, which is not in the graph')
    typed = {}
    namespace = ''
    dropped = set()
    for arg_name, value in (arguments or {}).items():
        if arg_name not in known_arguments:
            raise OverrideError(f'unknown argument {arg_name!r} for graph {name!r}; it takes '
                                f'{sorted(known_arguments)}')
        argument = known_arguments[arg_name]
        if argument.namespace:
            namespace = parse_namespace(value, f'argument {arg_name}')
            continue
        if argument.node:
            if value in ('', None):
                value = argument.default
            if not parse_switch(value, f'argument {arg_name}'):
                dropped.add(argument.node)
            continue
        if argument.remap:
            if value not in ('', None) and str(value) != argument.remap:
                remappings.append((argument.remap, str(value)))
            continue
        if value in ('', None):
            continue
        for key in argument.parameters:
            node_name, _, param = key.partition('.')
            if node_name in node_specs:
                typed[(node_name, param)] = (value, f'argument {arg_name}')
    for key, value in (overrides or {}).items():
        typed[_split_key(key, node_specs)] = (value, f'override {key}')

    nodes = []
    for node_name, entry in node_specs.items():
        if node_name in dropped:
            continue
        executable = entry['executable']
        settings = (executables[executable] or {}).get('settings') or (
            discover_settings(executable) if validate else '')
        block = values[node_name]
        defaults = settings_defaults(settings) if validate else None
        for (target, param), (value, source) in typed.items():
            if target != node_name:
                continue
            if is_qos_override(param):
                block[param] = yaml.safe_load(value) if isinstance(value, str) else value
                continue
            if defaults is not None and param not in defaults:
                raise OverrideError(f'{source}: {node_name!r} has no parameter {param!r}; it has '
                                    f'{sorted(defaults)}')
            default = defaults[param] if defaults is not None else block.get(param, value)
            if isinstance(value, str) and not isinstance(default, str):
                value = parse_text_value(value, default)
            block[param] = coerce_value(value, default, f'{node_name}.{param}')
        if defaults is not None:
            for param, value in list(block.items()):
                if param == 'use_sim_time' or is_qos_override(param):
                    continue
                if param not in defaults:
                    raise GraphConfigError(
                        f'{parameters_file}: {node_name}.{param} is not a parameter of {settings} '
                        f'(it has {sorted(defaults)})')
                block[param] = coerce_value(value, defaults[param], f'{node_name}.{param}')
        block = {param: resolve_path(param, value, package_root, cwd)
                 for param, value in block.items()}
        node_remaps = tuple(remappings) + tuple(tuple(p) for p in entry.get('remappings') or ())
        nodes.append(GraphNode(name=node_name, executable=executable, parameters=block,
                               remappings=node_remaps, settings=settings, namespace=namespace))
    return Graph(name=name, description=description.get('description', ''), nodes=tuple(nodes),
                 arguments=graph_arguments, parameters_file=parameters_file, namespace=namespace)
