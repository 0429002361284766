"""
Declare ROS parameters with descriptors from a typed config dataclass or from a list of specs.

A node's parameters are the fields of a ROS-free config dataclass whose
``__post_init__`` validates them (so nodes, the runner and tests share one
validation).  Each field carries its documentation in ``dataclasses.field``
metadata, a plain-dict convention that needs no ROS import::

    @dataclass
    class MuxConfig:
        rate_hz: float = field(default=50.0, metadata={
            'description': 'command publish rate (Hz)', 'range': (1.0, 1000.0),
            'read_only': True})

Keys: ``description`` (required; say the unit), ``read_only`` (topics, paths,
anything the node cannot apply while running), ``range`` (inclusive
``(min, max)`` for int or float fields; either end may be None) and
``digits_as_text`` (str fields that may hold only digits, such as a camera serial
number: ``-p device:=123456789`` reaches the node as an integer, which is taken
as its text instead of failing the start).

:func:`declare_config` declares one parameter per field with a
ParameterDescriptor, reads the values into the dataclass, and refuses a later
change the dataclass rejects, returning its error message as the reason.

ROS parameters are strictly typed: a float parameter needs a float in YAML
(``rate_hz: 30.0``, not ``30``).  A ``digits_as_text`` value typed by rcl as a number
loses leading zeros (``0123`` is even read as octal 83); the node then takes the text
from its own command line (``-p [node:]name:=text`` after ``--ros-args``) when it is
there; in a parameter file, quote such a value (``device: '0123'``).
"""

import dataclasses
import math
import re
import sys

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter

INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1


class ParameterSpecError(ValueError):
    """A parameter spec that cannot be declared (missing description, bad range, odd type)."""


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
    """
    One ROS parameter: its default, what it means, and which values it accepts.

    :param name: parameter name
    :param default: default value; its type is the parameter's type (bool, int,
        float, str, or a non-empty list/tuple of one of them)
    :param description: what the parameter is, with its unit
    :param read_only: True when the value cannot change after start-up
    :param value_range: inclusive (min, max) for int and float parameters; either end may be None
    :param digits_as_text: for a str parameter: accept a number too (declared with dynamic
        typing) and take it as its text (see the module docstring)
    """

    name: str
    default: object
    description: str
    read_only: bool = False
    value_range: tuple | None = None
    digits_as_text: bool = False

    def __post_init__(self):
        if not self.description:
            raise ParameterSpecError(f'parameter {self.name!r} needs a description with its unit')
        if isinstance(self.default, (list, tuple)) and len(self.default) == 0:
            raise ParameterSpecError(
                f'parameter {self.name!r} has an empty list default; its type cannot be inferred')
        try:
            Parameter.Type.from_parameter_value(self.default)
        except TypeError as error:
            raise ParameterSpecError(
                f'parameter {self.name!r} has a default of unsupported type: {self.default!r}'
            ) from error
        if self.digits_as_text and not isinstance(self.default, str):
            raise ParameterSpecError(
                f'parameter {self.name!r}: digits_as_text needs a str default, got '
                f'{self.default!r}')
        if self.value_range is not None:
            if isinstance(self.default, bool) or not isinstance(self.default, (int, float)):
                raise ParameterSpecError(
                    f'parameter {self.name!r}: a range needs an int or float default, '
                    f'got {self.default!r}')
            low, high = self._bounds()
            if low > high:
                raise ParameterSpecError(
                    f'parameter {self.name!r}: range {self.value_range} has min > max')
            if not low <= self.default <= high:
                raise ParameterSpecError(
                    f'parameter {self.name!r}: default {self.default!r} is outside the range '
                    f'{self.value_range}')

    def _bounds(self):
        low, high = self.value_range
        if isinstance(self.default, int):
            return (INT64_MIN if low is None else int(low),
                    INT64_MAX if high is None else int(high))
        return (-math.inf if low is None else float(low),
                math.inf if high is None else float(high))

    def descriptor(self):
        """
        Build the ParameterDescriptor that goes with this spec.

        :return: rcl_interfaces.msg.ParameterDescriptor
        """
        descriptor = ParameterDescriptor(
            name=self.name, description=self.description, read_only=self.read_only,
            dynamic_typing=self.digits_as_text)
        if self.value_range is not None:
            low, high = self._bounds()
            if isinstance(self.default, int):
                descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=0)]
            else:
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=low, to_value=high, step=0.0)]
        return descriptor


def specs_from_dataclass(config_cls, force_read_only=False):
    """
    Make one spec per field of a config dataclass, from its defaults and metadata.

    :param config_cls: dataclass type whose fields all have defaults and a
        ``description`` in their metadata
    :param force_read_only: declare every field read-only
    :return: list of :class:`ParameterSpec`
    :raises ParameterSpecError: for a field without default or description
    """
    specs = []
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            raise ParameterSpecError(f'{config_cls.__name__}.{f.name} has no default')
        if 'description' not in f.metadata:
            raise ParameterSpecError(
                f"{config_cls.__name__}.{f.name} has no 'description' in its field metadata")
        specs.append(ParameterSpec(
            name=f.name, default=default, description=f.metadata['description'],
            read_only=force_read_only or bool(f.metadata.get('read_only', False)),
            value_range=f.metadata.get('range'),
            digits_as_text=bool(f.metadata.get('digits_as_text', False))))
    return specs


_PARAM_ARG = re.compile(r'^(?:(?P<node>[^:=]+):)?(?P<name>[^:=]+):=(?P<text>.*)$', re.DOTALL)


def command_line_text(name, node_names, argv=None):
    """
    Find the text given to a parameter with ``-p``/``--param`` after ``--ros-args``.

    :param name: parameter name
    :param node_names: node names a ``node:name:=text`` form may use
    :param argv: command line (default sys.argv)
    :return: the text of the last such assignment, or None
    """
    argv = sys.argv if argv is None else argv
    found, in_ros_args = None, False
    for index, arg in enumerate(argv):
        if arg == '--ros-args':
            in_ros_args = True
        elif arg == '--':
            in_ros_args = False
        elif in_ros_args and arg in ('-p', '--param') and index + 1 < len(argv):
            match = _PARAM_ARG.match(argv[index + 1])
            if match and match['name'] == name and match['node'] in (None, *node_names):
                found = match['text']
    return found


def _python_value(spec, value, node=None):
    if isinstance(spec.default, tuple):
        return tuple(value)
    if isinstance(spec.default, list):
        return list(value)
    if spec.digits_as_text and not isinstance(value, str):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'parameter {spec.name!r} takes a string (or digits), got '
                             f'{type(value).__name__} {value!r}')
        text = None if node is None else command_line_text(
            spec.name, (node.get_name(), node.get_fully_qualified_name().lstrip('/')))
        if text is not None and text.strip():
            return text.strip()
        return str(value) if isinstance(value, int) or not value.is_integer() \
            else str(int(value))
    return value


def declare_parameters(node, specs):
    """
    Declare parameters with their descriptors and return their values.

    Values given as overrides (YAML, launch, constructor) replace the defaults;
    rclpy refuses overrides of the wrong type or outside the range.

    :param node: rclpy Node
    :param specs: sequence of :class:`ParameterSpec`
    :return: dict name -> value (tuples for tuple defaults)
    """
    declared = node.declare_parameters(
        '', [(spec.name, spec.default, spec.descriptor()) for spec in specs])
    return {spec.name: _python_value(spec, parameter.value, node)
            for spec, parameter in zip(specs, declared)}


def read_parameters(node, specs):
    """
    Read the current values of declared parameters.

    :param node: rclpy Node
    :param specs: sequence of :class:`ParameterSpec`
    :return: dict name -> value
    """
    return {spec.name: _python_value(spec, node.get_parameter(spec.name).value, node)
            for spec in specs}


def refuse_invalid_changes(node, specs, validate):
    """
    Register an on-set-parameters callback that refuses changes ``validate`` rejects.

    ``validate`` receives the complete set of values as they would be after the
    change (current values updated with the proposed ones) and raises ValueError
    with a message naming the bad value; that message is the refusal reason.

    :param node: rclpy Node
    :param specs: the specs of the parameters to watch
    :param validate: callable(dict name -> value), raising ValueError to refuse
    :return: the callback handle (for ``node.remove_on_set_parameters_callback``)
    """
    by_name = {spec.name: spec for spec in specs}

    def on_set_parameters(parameters):
        proposed = {p.name: p for p in parameters if p.name in by_name}
        if not proposed:
            return SetParametersResult(successful=True)
        try:
            candidate = read_parameters(node, specs)
            for name, parameter in proposed.items():
                candidate[name] = _python_value(by_name[name], parameter.value)
            validate(candidate)
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    return node.add_on_set_parameters_callback(on_set_parameters)


def declare_config(node, config_cls, on_change=None):
    """
    Declare one parameter per dataclass field and read them into an instance.

    Without ``on_change`` the node reads its parameters once, so every field is
    declared read-only.  With it, fields not marked read-only may change at run
    time: a change the dataclass rejects is refused with its message, and an
    accepted one builds a new config and passes it to ``on_change`` (called on
    the thread that set the parameters; swap a reference there, nothing slow).

    :param node: rclpy Node
    :param config_cls: config dataclass (see the module docstring)
    :param on_change: callable(new_config) or None
    :return: config_cls instance
    :raises ValueError: when the declared values fail the dataclass's validation
    """
    specs = specs_from_dataclass(config_cls, force_read_only=on_change is None)
    config = config_cls(**declare_parameters(node, specs))
    refuse_invalid_changes(node, specs, lambda values: config_cls(**values))
    if on_change is not None:
        names = {spec.name for spec in specs}

        def on_parameters_set(parameters):
            if any(p.name in names for p in parameters):
                on_change(config_cls(**read_parameters(node, specs)))

        node.add_post_set_parameters_callback(on_parameters_set)
    return config
