"""ament_python package: `colcon build` on ROS 2 Jazzy; `pip install -e .` without ROS."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'active_finetune'

NODES = {
    'camera_node': 'camera_node',
    'spacemouse_node': 'spacemouse_node',
    'sim_bridge_node': 'sim_bridge_node',
    'command_mux_node': 'command_mux_node',
    'policy_node': 'policy_node',
    'task_selector_node': 'task_selector_node',
    'demo_recorder_node': 'demo_recorder_node',
    'trainer_node': 'trainer_node',
    'dashboard_node': 'dashboard_node',
}
COMMANDS = {
    'af-pretrain': 'active_finetune.commands.pretrain:main',
    'af-evaluate': 'active_finetune.commands.evaluate:main',
    'af-experiment': 'active_finetune.commands.experiment:main',
    'af-main-job': 'active_finetune.commands.main_job:main',
    'af-runner': 'active_finetune.runner:main',
    'af-console': 'active_finetune.nodes.operator_console_node:main',
    'af-export': 'active_finetune.commands.export:main',
}

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'bench']),
    # The dashboard's page (HTML, CSS, JavaScript), served by dashboard_node from the package:
    # nothing is fetched from the internet at run time.
    package_data={f'{PACKAGE}.dashboard': ['static/*.html', 'static/*.css', 'static/*.js']},
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config',
         glob('config/*.yaml') + glob('config/*.sdf') + glob('config/*.xml')),
        (f'share/{PACKAGE}/gazebo/worlds', glob('gazebo/worlds/*.sdf')),
        (f'share/{PACKAGE}/checkpoints/pretrained_mt10_skewed',
         glob('checkpoints/pretrained_mt10_skewed/*')),
    ],
    # Dependencies are pinned in requirements/*.txt (pip; README "On a robot" says which file
    # where) and declared in package.xml for rosdep; install_requires stays empty so `colcon
    # build` never pulls wheels over the ROS install.
    install_requires=['setuptools'],
    # `pip install -e .[export]` without requirements/: what af-export writes its datasets with
    # (robomimic HDF5; diffusion_policy's zarr 2 replay buffer and its Blosc codec), as pinned in
    # requirements/base.txt.
    extras_require={'export': ['h5py==3.16.0', 'zarr==2.18.7', 'numcodecs==0.15.2']},
    zip_safe=True,
    maintainer='active_finetune developers',
    maintainer_email='active-finetune@example.org',
    description='Active multi-task fine-tuning (AMF) of camera-based robot policies on ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': (
            [f'{name} = {PACKAGE}.nodes.{module}:main' for name, module in NODES.items()]
            + [f'{name} = {target}' for name, target in COMMANDS.items()]
        ),
    },
)
