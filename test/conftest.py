"""Shared pytest set-up: headless rendering, one torch thread, the --runslow flag."""

import os

import pytest

os.environ.setdefault('MUJOCO_GL', 'egl')


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', default=False,
                     help='also run tests marked slow')


def pytest_configure(config):
    import torch
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if config.getoption('--runslow'):
        return
    skip = pytest.mark.skip(reason='slow: run with --runslow')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip)
