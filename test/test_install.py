"""
Installing the package as a lab does, and what rosdep and pip read to get its dependencies.

No ROS 2 install, colcon or rosdep exist on these machines, so the lab path is reproduced here:

- ``package.xml``: every key must resolve in rosdistro for Jazzy.  The keys were checked against
  ros/rosdistro (``rosdep/python.yaml``, ``rosdep/base.yaml``, ``jazzy/distribution.yaml``) at
  commit 8468e88 of 2026-08-22 and are listed in :data:`ROSDEP_KEYS`; every ROS package the
  code imports or launches is declared.
- ``requirements/``: every line pinned; the files a lab installs (base, devices, sim) hold no
  ROS wheel and no numpy/opencv (apt gives those on a ROS machine) and resolve, offline from
  this machine's package caches, with Ubuntu 24.04's numpy 1.26.4; ``requirements.txt`` is
  their union with the no-ROS files, as before the split.
- the build: ``setup.py`` is run with the exact command colcon-core's Python build task runs
  for ``colcon build`` (``egg_info ... build ... install --prefix ...
  --single-version-externally-managed``), by the interpreter of a fresh, empty venv (setuptools
  lent to it on PYTHONPATH, as the system's is to a lab venv).  Then the test looks where
  ``ros2 run`` (``<prefix>/lib/active_finetune/<executable>``, found through the ament index)
  and ``ros2 launch`` (``share/active_finetune/launch``) look, loads every console script from
  the installed copy and runs ``af-runner`` from it, with this venv's site-packages standing
  in for the ROS Python path (PYTHONPATH and LD_LIBRARY_PATH, as ``source
  /opt/ros/jazzy/setup.bash`` sets them).
- the README's robot section names only commands that exist, as ``ros2 run``/``ros2 launch``.
"""

import ast
import importlib.metadata
import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ElementTree

from active_finetune.graph import SOURCE_ROOT
import pytest

PACKAGE = 'active_finetune'
REQUIREMENTS = SOURCE_ROOT / 'requirements'
LAB_FILES = ('base.txt', 'devices.txt', 'sim.txt')
NO_ROS_FILES = ('dev.txt', 'system.txt', 'ros-wheels.txt')

ROSDEP_KEYS = {
    # jazzy/distribution.yaml (released ROS packages)
    'rclpy', 'builtin_interfaces', 'std_msgs', 'sensor_msgs', 'geometry_msgs', 'std_srvs',
    'diagnostic_msgs', 'rcl_interfaces', 'ament_index_python', 'launch', 'launch_ros',
    'ros2launch', 'ros_gz_bridge', 'ros_gz_sim', 'ament_flake8', 'ament_pep257',
    # rosdep/python.yaml, with an apt package for Ubuntu noble
    'python3-numpy', 'python3-opencv', 'python3-yaml', 'python3-scipy', 'python3-matplotlib',
    'python3-rich', 'python3-tqdm', 'python3-pytest',
}
"""rosdep keys checked to resolve for ROS 2 Jazzy on Ubuntu 24.04 (rosdistro 8468e88)."""

NOT_ROSDEP_KEYS = {'ament_python', 'python3-safetensors', 'python3-mcap-pip', 'python3-mcap',
                   'python3-threadpoolctl', 'python3-pyspacemouse-pip', 'python3-tensorboard'}
"""Names that are no rosdep key (``rosdep install`` stops on them); found in earlier versions."""

SYSTEM_MODULES = {'numpy': 'python3-numpy', 'cv2': 'python3-opencv', 'yaml': 'python3-yaml'}
"""Modules a ROS machine takes from apt (rosdep key), pinned in requirements/system.txt only."""

NOT_INSTALLABLE_HERE = {'launch', 'launch_ros'}
"""ROS packages with no wheel on these machines (only the launch files import them)."""

DEPEND_TAGS = ('depend', 'build_depend', 'buildtool_depend', 'build_export_depend',
               'buildtool_export_depend', 'exec_depend', 'test_depend', 'doc_depend')


# ---------------------------------------------------------------- package.xml

def package_xml():
    return ElementTree.parse(SOURCE_ROOT / 'package.xml').getroot()


def dependencies(tags=DEPEND_TAGS):
    return {element.text.strip() for tag in tags for element in package_xml().iter(tag)}


def imported_modules(paths):
    """Top-level names of every module imported anywhere (also inside functions) in ``paths``."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split('.')[0])
    return names


def source_files():
    return sorted((SOURCE_ROOT / PACKAGE).rglob('*.py')) + sorted(
        (SOURCE_ROOT / 'launch').glob('*.launch.py'))


def is_ros_module(name, distributions):
    if name in NOT_INSTALLABLE_HERE:
        return True
    # The ROS wheels' distributions are named ros-<package> (ros-jazzy-<package> on the index).
    return any(dist.lower().startswith('ros-') for dist in distributions.get(name, ()))


def test_package_xml_names_only_rosdep_keys_that_resolve_for_jazzy():
    root = package_xml()
    assert root.get('format') == '3'
    assert root.find('export/build_type').text == 'ament_python'
    declared = dependencies()
    assert not root.findall('buildtool_depend'), 'ament_python is a build type, not a key'
    assert declared <= ROSDEP_KEYS, sorted(declared - ROSDEP_KEYS)
    assert not declared & NOT_ROSDEP_KEYS
    gazebo = {e.text for e in root.iter('exec_depend') if e.get('condition')}
    assert gazebo == {'ros_gz_bridge', 'ros_gz_sim'}
    assert all(e.get('condition') == '$AF_GAZEBO == 1' for e in root.iter('exec_depend')
               if e.text in gazebo)


def test_package_xml_declares_every_ros_package_the_code_imports_or_launches():
    distributions = importlib.metadata.packages_distributions()
    modules = imported_modules(source_files())
    ros = {name for name in modules if is_ros_module(name, distributions)}
    assert {'rclpy', 'builtin_interfaces', 'launch', 'launch_ros'} <= ros
    exec_depends = dependencies(('depend', 'exec_depend'))
    assert ros <= exec_depends, sorted(ros - exec_depends)
    launched = set()
    launch_sources = sorted((SOURCE_ROOT / 'launch').glob('*.launch.py')) + [
        SOURCE_ROOT / PACKAGE / 'nodes' / 'launch_description.py']
    for path in launch_sources:
        text = path.read_text()
        launched.update(re.findall(r"package='(\w+)'", text))
        launched.update(re.findall(r"get_package_share_directory\('(\w+)'\)", text))
    launched.discard(PACKAGE)
    assert launched == {'ros_gz_bridge', 'ros_gz_sim'}
    assert launched <= exec_depends
    for module, key in SYSTEM_MODULES.items():
        assert module in modules and key in exec_depends


# ---------------------------------------------------------------- requirements

def requirement_lines(path):
    lines = []
    for line in Path(path).read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def pins(name):
    """Map normalised distribution name -> pinned line of one file of requirements/."""
    result = {}
    for line in requirement_lines(REQUIREMENTS / name):
        match = re.fullmatch(r'([A-Za-z0-9_.-]+)(\[[\w,]+\])?==[\w.+]+', line)
        assert match, f'{name}: {line!r} is not pinned with =='
        result[normalise(match.group(1))] = line
    return result


def normalise(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def test_requirements_txt_is_the_union_of_the_split_files():
    assert sorted(p.name for p in REQUIREMENTS.glob('*.txt')) == sorted(LAB_FILES + NO_ROS_FILES)
    included = requirement_lines(SOURCE_ROOT / 'requirements.txt')
    assert sorted(included) == sorted(f'-r requirements/{name}' for name in
                                      LAB_FILES + NO_ROS_FILES)
    seen = {}
    for name in LAB_FILES + NO_ROS_FILES:
        for dist in pins(name):
            assert dist not in seen, f'{dist} pinned in {seen.get(dist)} and {name}'
            seen[dist] = name
    setup_sh = (SOURCE_ROOT / 'scripts' / 'setup.sh').read_text()
    assert 'cat requirements.txt requirements/*.txt setup.py | sha256sum' in setup_sh


def test_lab_files_hold_no_ros_wheel_and_leave_numpy_and_opencv_to_apt():
    for name in LAB_FILES:
        for dist in pins(name):
            assert not dist.startswith('ros-'), f'{name}: {dist}'
            assert dist not in {'numpy', 'opencv-python', 'opencv-python-headless', 'pyyaml'}
    assert set(pins('ros-wheels.txt')) == {d for name in LAB_FILES + NO_ROS_FILES
                                           for d in pins(name) if d.startswith('ros-')}
    assert set(pins('system.txt')) == {'numpy', 'opencv-python-headless', 'pyyaml'}
    assert 'torch' in pins('base.txt')


def requirement_closure(roots):
    """Distribution names of ``roots`` and, as installed here, everything they require."""
    todo, closure = list(roots), set()
    while todo:
        dist = normalise(todo.pop())
        if dist in closure:
            continue
        closure.add(dist)
        try:
            requires = importlib.metadata.requires(dist) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            if 'extra ==' in requirement:
                continue
            todo.append(re.match(r'[A-Za-z0-9_.-]+', requirement).group(0))
    return closure


def test_every_third_party_module_the_code_imports_is_pinned():
    distributions = importlib.metadata.packages_distributions()
    closure = requirement_closure(
        [d for name in LAB_FILES + ('system.txt',) for d in pins(name)])
    missing = {}
    for module in imported_modules(source_files()):
        if module in sys.stdlib_module_names or module == PACKAGE \
                or is_ros_module(module, distributions):
            continue
        dists = {normalise(d) for d in distributions.get(module, ())}
        if not dists & closure:
            missing[module] = sorted(dists)
    assert not missing, f'imported but not in requirements/ (lab files + system.txt): {missing}'


def test_lab_files_resolve_with_the_ros_machines_numpy(tmp_path):
    """
    Check that Ubuntu 24.04's numpy 1.26.4 (ROS 2 Jazzy's) satisfies what a lab installs.

    pip resolves from where scripts/setup.sh installs (this machine's wheel folder, local
    indexes and pip's cache) and downloads nothing (--dry-run).
    """
    constraints = tmp_path / 'ros_machine.txt'
    constraints.write_text('numpy==1.26.4\n')
    report = tmp_path / 'report.json'
    command = [sys.executable, '-m', 'pip', 'install', '--dry-run', '--ignore-installed', '-q',
               '--disable-pip-version-check', '--report', str(report), '-c', str(constraints)]
    for name in LAB_FILES:
        command += ['-r', str(REQUIREMENTS / name)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode and re.search(r'NewConnectionError|Network is unreachable|'
                                       r'Temporary failure in name resolution', result.stderr):
        pytest.skip(f'pip needs the network for a pin here: {result.stderr[-500:]}')
    assert result.returncode == 0, result.stdout + result.stderr
    resolved = {normalise(item['metadata']['name']): item['metadata']['version']
                for item in json.loads(report.read_text())['install']}
    assert resolved['numpy'] == '1.26.4'
    assert not [d for d in resolved if d.startswith('ros-') or d.startswith('opencv')]
    for name in LAB_FILES:
        for dist, line in pins(name).items():
            assert line.endswith('==' + resolved[dist].split('+')[0]), (line, resolved[dist])


# ---------------------------------------------------------------- the colcon build

def setup_py_console_scripts():
    """Names of setup.py's console scripts (its NODES and COMMANDS dicts), without running it."""
    names = []
    for statement in ast.parse((SOURCE_ROOT / 'setup.py').read_text()).body:
        if isinstance(statement, ast.Assign) and statement.targets[0].id in ('NODES', 'COMMANDS'):
            names += list(ast.literal_eval(statement.value))
    return sorted(names)


def ignore_at_root(directory, names):
    """Leave out of the copy what a clone does not have, or what is not installed."""
    ignored = {n for n in names if n == '__pycache__' or n.endswith('.egg-info')}
    if Path(directory) == SOURCE_ROOT:
        ignored |= {'.git', '.venv', 'runs', 'results', 'data', 'bench', 'build', 'install',
                    'log', '.pytest_cache'} & set(names)
    return ignored


def ros_standin_environment(install, python_lib):
    """Environment of a shell that sourced ROS and the workspace; this venv stands in for ROS."""
    site_packages = Path(sysconfig.get_paths()['purelib'])
    libraries = [str(Path(sys.prefix) / 'lib')] + sorted(
        str(p) for p in site_packages.glob('ros_*.libs'))
    return {'PATH': os.environ.get('PATH', '/usr/bin:/bin'), 'HOME': str(install.parent),
            'PYTHONPATH': os.pathsep.join([str(python_lib), str(site_packages)]),
            'LD_LIBRARY_PATH': os.pathsep.join(libraries),
            'AMENT_PREFIX_PATH': str(install), 'PYTHONDONTWRITEBYTECODE': '1'}


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """Copy the checkout, make an empty venv and build the package into install/ as colcon does."""
    root = tmp_path_factory.mktemp('workspace')
    source = root / 'src' / PACKAGE
    shutil.copytree(SOURCE_ROOT, source, ignore=ignore_at_root, symlinks=True)
    venv = root / 'venv'
    subprocess.run([getattr(sys, '_base_executable', sys.executable), '-m', 'venv',
                    '--without-pip', str(venv)], check=True, timeout=120)
    python = venv / 'bin' / 'python'
    # The lab venv's setuptools comes from the system (--system-site-packages); here it is lent.
    tools = root / 'setuptools'
    tools.mkdir()
    setuptools_dir = Path(importlib.util.find_spec('setuptools').origin).parent
    for name in ('setuptools', 'pkg_resources', '_distutils_hack'):
        if (setuptools_dir.parent / name).exists():
            (tools / name).symlink_to(setuptools_dir.parent / name)
    dist_info = importlib.metadata.distribution('setuptools')._path
    (tools / Path(dist_info).name).symlink_to(dist_info)
    build, install = root / 'build' / PACKAGE, root / 'install' / PACKAGE
    build.mkdir(parents=True)
    # colcon: os.path.join(install_base, get_python_lib(prefix=install_base)), made beforehand.
    where = subprocess.run(
        [str(python), '-c', 'import sys, sysconfig; print(sysconfig.get_path("purelib", '
         'vars={"base": sys.argv[1], "platbase": sys.argv[1]}))', str(install)],
        capture_output=True, text=True, check=True, timeout=60)
    python_lib = Path(where.stdout.strip())
    python_lib.mkdir(parents=True)
    # colcon-core task/python/build.py, `colcon build` without --symlink-install:
    command = [str(python), 'setup.py', 'egg_info', '--egg-base', os.path.relpath(build, source),
               'build', '--build-base', str(build / 'build'), 'install', '--prefix', str(install),
               '--record', str(build / 'install.log'), '--single-version-externally-managed']
    env = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'),
           'PYTHONPATH': os.pathsep.join([str(python_lib), str(tools)])}
    result = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {'root': root, 'source': source, 'install': install, 'python': python,
            'python_lib': python_lib,
            'env': ros_standin_environment(install, python_lib)}


def executable_paths(prefix, package):
    """Find a package's executables as ``ros2 run`` does (ros2pkg get_executable_paths)."""
    base = Path(prefix) / 'lib' / package
    return sorted(path for path in base.rglob('*')
                  if path.is_file() and os.access(path, os.X_OK))


def test_colcon_build_installs_every_console_script_where_ros2_run_looks(installed):
    install = installed['install']
    marker = install / 'share' / 'ament_index' / 'resource_index' / 'packages' / PACKAGE
    assert marker.is_file(), 'ament index marker: ros2 run/launch would not find the package'
    from ament_index_python.packages import get_package_prefix
    previous = os.environ.get('AMENT_PREFIX_PATH')
    os.environ['AMENT_PREFIX_PATH'] = str(install)
    try:
        prefix = get_package_prefix(PACKAGE)
    finally:
        if previous is None:
            os.environ.pop('AMENT_PREFIX_PATH')
        else:
            os.environ['AMENT_PREFIX_PATH'] = previous
    assert Path(prefix) == install
    found = executable_paths(prefix, PACKAGE)
    assert [p.name for p in found] == setup_py_console_scripts()
    for path in found:
        assert path.read_text().splitlines()[0] == f'#!{installed["python"]}', path
    assert not (install / 'bin').exists(), 'scripts must go to lib/active_finetune (setup.cfg)'


def test_colcon_build_installs_the_data_files_where_ros2_launch_and_the_graph_look(installed):
    share = installed['install'] / 'share' / PACKAGE
    source = installed['source']
    assert (share / 'package.xml').read_bytes() == (source / 'package.xml').read_bytes()
    for pattern in ('launch/*.launch.py', 'config/*.yaml', 'config/*.xml', 'config/*.sdf',
                    'gazebo/worlds/*.sdf', 'checkpoints/pretrained_mt10_skewed/*'):
        expected = sorted(p.relative_to(source) for p in source.glob(pattern))
        assert sorted(p.relative_to(share) for p in share.glob(pattern)) == expected, pattern
    assert {p.name for p in share.glob('launch/*')} == {
        'robot.launch.py', 'sim.launch.py', 'gazebo.launch.py'}
    assert (share / 'config' / 'graphs.yaml').is_file()
    assert (share / 'config' / 'fastdds_large_shm.xml').is_file()
    assert (share / 'checkpoints' / 'pretrained_mt10_skewed' / 'model.safetensors').is_file()
    lib = installed['python_lib']
    for subpackage in ('nodes', 'policy', 'training', 'amf', 'data', 'commands', 'sim',
                       'devices'):
        assert (lib / PACKAGE / subpackage / '__init__.py').is_file(), subpackage
    assert (lib / PACKAGE / 'nodes' / 'launch_description.py').is_file(), 'launch files import it'
    assert not (lib / 'test').exists() and not (lib / 'bench').exists()
    assert list(lib.glob(f'{PACKAGE}-*.egg-info')), 'entry points need the egg-info'


LOAD_ENTRY_POINTS = """
import json, sys
from importlib.metadata import distribution
dist = distribution('active_finetune')
scripts = {}
for entry_point in dist.entry_points:
    if entry_point.group == 'console_scripts':
        function = entry_point.load()
        scripts[entry_point.name] = f'{function.__module__}:{function.__name__}'
import active_finetune, rclpy
print(json.dumps({'dist': str(dist._path), 'package': active_finetune.__file__,
                  'rclpy': rclpy.__file__, 'scripts': scripts, 'prefix': sys.prefix}))
"""


def test_every_console_script_loads_from_the_installed_copy(installed):
    result = subprocess.run([str(installed['python']), '-c', LOAD_ENTRY_POINTS],
                            env=installed['env'], cwd=installed['root'], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    lib = str(installed['python_lib'])
    assert loaded['dist'].startswith(lib) and loaded['package'].startswith(lib)
    assert loaded['rclpy'].startswith(sysconfig.get_paths()['purelib']), 'from the stand-in'
    assert Path(loaded['prefix']) == installed['python'].parent.parent
    assert sorted(loaded['scripts']) == setup_py_console_scripts()
    assert all(target.endswith(':main') for target in loaded['scripts'].values())


def test_installed_af_runner_uses_the_installed_config_and_checkpoint(installed):
    """The runner (and the launch files' graph) read share/, and nodes run in the lab's venv."""
    share = installed['install'] / 'share' / PACKAGE
    work = installed['root'] / 'work'
    work.mkdir(exist_ok=True)
    result = subprocess.run(
        [str(installed['install'] / 'lib' / PACKAGE / 'af-runner'), 'robot', '--print',
         '--arg', 'use_camera=false', '--arg', 'camera_topic=/camera/camera/color/image_raw'],
        env=installed['env'], cwd=work, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert f'{installed["python"]} -m active_finetune.nodes.policy_node --ros-args' in out
    assert 'camera_node' not in out
    assert 'camera/image_raw:=/camera/camera/color/image_raw' in out
    checkpoint = share / 'checkpoints' / 'pretrained_mt10_skewed'
    assert f'checkpoint_path: {checkpoint}' in out
    assert f'dataset_dir: {work / "data" / "episodes"}' in out


# ---------------------------------------------------------------- what the README tells a lab

def readme_section(title):
    text = (SOURCE_ROOT / 'README.md').read_text()
    start = text.index(f'\n## {title}')
    end = text.find('\n## ', start + 1)
    return text[start:end if end > 0 else None]


def commands_in(section):
    """Shell command lines of the section's ```bash blocks (continuations joined)."""
    lines = []
    for block in re.findall(r'```bash\n(.*?)```', section, flags=re.S):
        for line in block.replace('\\\n', ' ').splitlines():
            line = line.split('  #', 1)[0].strip()
            if line and not line.startswith('#'):
                lines.append(line)
    return lines


def test_readme_robot_section_names_only_commands_that_exist():
    section = readme_section('On a robot')
    commands = commands_in(section)
    assert commands, 'no bash block in the robot section'
    scripts = setup_py_console_scripts()
    launch_files = {p.name for p in (SOURCE_ROOT / 'launch').glob('*.launch.py')}
    ran = re.findall(r'ros2 run active_finetune ([\w-]+)', section)
    launched = re.findall(r'ros2 launch active_finetune ([\w.]+)', section)
    assert ran and launched
    assert set(ran) <= set(scripts), set(ran) - set(scripts)
    assert set(launched) <= launch_files, set(launched) - launch_files
    for line in commands:
        words = line.split()
        for index, word in enumerate(words):
            if word in scripts:
                assert words[max(0, index - 3):index] == ['ros2', 'run', 'active_finetune'], \
                    f'{word} is not on PATH after colcon build: {line!r}'


def test_readme_robot_section_never_installs_ros_wheels_over_ros():
    commands = commands_in(readme_section('On a robot'))
    installs = [line for line in commands if 'pip install' in line]
    assert installs
    for line in installs:
        assert 'requirements.txt' not in line and 'ros-wheels' not in line, line
        assert 'system.txt' not in line and 'dev.txt' not in line, line
        for requirement in re.findall(r'-r (\S+)', line):
            assert Path(requirement).name in LAB_FILES, line
    assert any('--system-site-packages' in line for line in commands)
    assert any(line.startswith('python -m colcon build') for line in commands)
    assert any('rosdep install' in line for line in commands)
