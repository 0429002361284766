"""Build a :class:`Graph` from graphs.yaml, its parameter file, arguments and overrides."""

from pathlib import Path

from active_finetune.graph.locations import default_config_dir, GRAPHS_FILE, resolve_path
from active_finetune.graph.model import Graph, GraphArgument, GraphConfigError, GraphNode, \
    OverrideError
from active_finetune.graph.settings import discover_settings, settings_defaults
from active_finetune.graph.values import coerce_value, is_qos_override, parse_namespace, \
    parse_switch, parse_text_value
import yaml


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
