"""
Typed parameter values, and the parsers of command-line and launch-argument text.

ROS parameters are strictly typed, so every value set by a parameter file, a graph argument or an
override is checked against the declared default's type.  Text comes as ``key=value``,
namespaces and true/false switches.
"""

import re

from active_finetune.graph.model import GraphConfigError, OverrideError
import yaml

NAMESPACE_PATTERN = re.compile(r'(/[A-Za-z_][A-Za-z0-9_]*)+')
QOS_OVERRIDES = 'qos_overrides'
"""Prefix of the QoS override parameters rclpy declares (passed to the nodes unchecked)."""
SWITCH_VALUES = {'true': True, 'false': False, '1': True, '0': False, 'yes': True, 'no': False,
                 'on': True, 'off': False}


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
