"""Argument parsing pieces shared by the command-line entry points."""

import logging
import os
from pathlib import Path
import sys

from active_finetune.sim.metaworld_env import MT10_TASKS, validate_tasks
import yaml

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def find_config(name):
    """
    Locate a file of the package's config/ directory (source tree or ROS share directory).

    :param name: file name, e.g. 'pretrain_mixes.yaml'
    :return: Path
    :raises FileNotFoundError: if neither location has it
    """
    candidates = [PACKAGE_ROOT / 'config' / name,
                  Path(sys.prefix) / 'share' / 'active_finetune' / 'config' / name]
    for path in candidates:
        if path.exists():
            return path
    try:
        from ament_index_python.packages import get_package_share_directory
        path = Path(get_package_share_directory('active_finetune')) / 'config' / name
        if path.exists():
            return path
        candidates.append(path)
    except (ImportError, LookupError, OSError, ValueError):
        pass
    raise FileNotFoundError(f'config file {name!r} not found in {[str(c) for c in candidates]}')


def load_mix(spec, mixes_file=None):
    """
    Resolve a pretraining mix.

    :param spec: a mix name from the mixes YAML, or 'task=n,task=n'
    :param mixes_file: YAML with named mixes (default config/pretrain_mixes.yaml)
    :return: dict task -> number of demos
    :raises ValueError: for an unknown mix or malformed spec
    """
    if '=' in spec:
        mix = {}
        for part in spec.split(','):
            task, _, n = part.partition('=')
            try:
                mix[task.strip()] = int(n)
            except ValueError:
                raise ValueError(f'bad mix entry {part!r}; expected task=count') from None
    else:
        path = Path(mixes_file) if mixes_file else find_config('pretrain_mixes.yaml')
        mixes = yaml.safe_load(path.read_text())
        if spec not in mixes:
            raise ValueError(f'unknown mix {spec!r}; {path} defines {sorted(mixes)}')
        mix = {str(k): int(v) for k, v in mixes[spec].items()}
    validate_tasks(list(mix))
    for task, n in mix.items():
        if n < 0:
            raise ValueError(f'negative demo count for {task}: {n}')
    return mix


def parse_tasks(text):
    """
    Parse a task list argument.

    :param text: 'mt10' or comma-separated Meta-World task names
    :return: tuple of task names
    """
    if text.lower() == 'mt10':
        return MT10_TASKS
    return validate_tasks([t.strip() for t in text.split(',') if t.strip()])


def setup_cli(threads=1):
    """
    Configure logging and torch threads for a command-line process.

    :param threads: torch intra-op threads
    """
    logging.basicConfig(level=os.environ.get('LOGLEVEL', 'INFO'),
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    os.environ.setdefault('MUJOCO_GL', 'egl')
    import torch
    torch.set_num_threads(threads)
