"""
A node's parameters are the fields of its settings dataclass.

Find the class from the node's source (without importing it) and read the fields' defaults (the
declared types).
"""

import ast
import dataclasses
import importlib

from active_finetune.graph.locations import SOURCE_ROOT
from active_finetune.graph.model import GraphConfigError, PACKAGE


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
