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

Modules: :mod:`.model` (Graph, GraphNode, GraphArgument, the robot topics, the errors),
:mod:`.loader` (:func:`load_graph`, graph_names, read_yaml), :mod:`.values` (typed values and the
text parsers), :mod:`.settings` (a node's settings dataclass and its defaults), :mod:`.locations`
(config directory, path resolution).  Everything public is importable from this package.
"""

from active_finetune.graph.loader import graph_names, load_graph, read_yaml
from active_finetune.graph.locations import default_config_dir, GRAPHS_FILE, \
    INPUT_PATH_SUFFIXES, is_source_checkout, PATH_SUFFIXES, resolve_path, SOURCE_ROOT
from active_finetune.graph.model import Graph, GraphArgument, GraphConfigError, GraphNode, \
    OverrideError, PACKAGE, ROBOT_TOPICS, RobotTopic
from active_finetune.graph.settings import discover_settings, settings_defaults
from active_finetune.graph.values import coerce_value, is_qos_override, NAMESPACE_PATTERN, \
    parse_assignment, parse_namespace, parse_switch, parse_text_value, QOS_OVERRIDES, \
    SWITCH_VALUES

__all__ = [
    'coerce_value', 'default_config_dir', 'discover_settings', 'Graph', 'graph_names',
    'GraphArgument', 'GraphConfigError', 'GraphNode', 'GRAPHS_FILE', 'INPUT_PATH_SUFFIXES',
    'is_qos_override', 'is_source_checkout', 'load_graph', 'NAMESPACE_PATTERN', 'OverrideError',
    'PACKAGE', 'parse_assignment', 'parse_namespace', 'parse_switch', 'parse_text_value',
    'PATH_SUFFIXES', 'QOS_OVERRIDES', 'read_yaml', 'resolve_path', 'ROBOT_TOPICS', 'RobotTopic',
    'settings_defaults', 'SOURCE_ROOT', 'SWITCH_VALUES',
]
