"""Where the graph's files are, and how relative path parameters resolve (package docstring)."""

from pathlib import Path
import sys

from active_finetune.graph.model import GraphConfigError, PACKAGE

SOURCE_ROOT = Path(__file__).resolve().parents[2]
"""The source checkout (or the installed package's site-packages directory)."""
GRAPHS_FILE = 'graphs.yaml'
PATH_SUFFIXES = ('_path', '_dir', 'checkpoint')
INPUT_PATH_SUFFIXES = ('_path', 'checkpoint')


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
