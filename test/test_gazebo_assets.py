"""
The Gazebo assets: tabletop world (SDF) and the ros_gz_bridge mapping onto the topic contract.

Gazebo Harmonic is not installable on the test machines (no package on PyPI), so the world is
checked as XML for what the bridge and the nodes rely on; with the ``sdformat14`` Python
bindings present it is also loaded by libsdformat (skipped otherwise).
"""

import xml.etree.ElementTree as ElementTree

from active_finetune.graph import ROBOT_TOPICS, SOURCE_ROOT
import pytest
import yaml

WORLD = SOURCE_ROOT / 'gazebo' / 'worlds' / 'tabletop.sdf'
BRIDGE = SOURCE_ROOT / 'config' / 'gazebo_bridge.yaml'
GZ_TYPES = {'sensor_msgs/msg/Image': 'gz.msgs.Image',
            'sensor_msgs/msg/CameraInfo': 'gz.msgs.CameraInfo',
            'sensor_msgs/msg/JointState': 'gz.msgs.Model',
            'geometry_msgs/msg/PoseStamped': 'gz.msgs.Pose',
            'geometry_msgs/msg/TwistStamped': 'gz.msgs.Twist',
            'std_msgs/msg/Float64': 'gz.msgs.Double'}


@pytest.fixture(scope='module')
def world():
    return ElementTree.parse(WORLD).getroot()


@pytest.fixture(scope='module')
def bridge():
    return {entry['ros_topic_name']: entry for entry in yaml.safe_load(BRIDGE.read_text())}


def plugin_topics(world):
    """Gazebo topics the world publishes or subscribes, by where they come from."""
    topics = {}
    name = world.find('world').get('name')
    for sensor in world.iter('sensor'):
        topics[sensor.findtext('topic')] = 'camera'
        topics[sensor.find('camera').findtext('camera_info_topic')] = 'camera_info'
    for model in world.iter('model'):
        for plugin in model.findall('plugin'):
            kind = plugin.get('filename')
            if kind == 'gz-sim-joint-state-publisher-system':
                topics[f'/world/{name}/model/{model.get("name")}/joint_state'] = kind
            elif kind == 'gz-sim-pose-publisher-system':
                topics[f'/model/{model.get("name")}/pose'] = kind
            elif plugin.findtext('topic'):
                topics[plugin.findtext('topic')] = kind
    return topics


def test_world_is_sdf_with_a_table_objects_and_a_fixed_rgb_camera(world):
    assert world.tag == 'sdf' and world.get('version') == '1.10'
    models = {m.get('name'): m for m in world.find('world').findall('model')}
    assert {'table', 'camera', 'gripper'} <= set(models)
    objects = [m for name, m in models.items() if m.find('link/inertial') is not None
               and name != 'gripper']
    assert len(objects) >= 2
    assert models['camera'].findtext('static') == 'true'
    (sensor,) = list(models['camera'].iter('sensor'))
    assert sensor.get('type') == 'camera'
    assert sensor.findtext('camera/image/format') == 'R8G8B8'
    plugins = {p.get('filename') for p in world.find('world').findall('plugin')}
    assert 'gz-sim-sensors-system' in plugins and 'gz-sim-physics-system' in plugins


def test_end_effector_is_kinematic_and_driven_by_commands(world):
    gripper = next(m for m in world.iter('model') if m.get('name') == 'gripper')
    assert all(link.findtext('gravity') == 'false' for link in gripper.findall('link'))
    joints = {j.get('name'): j for j in gripper.findall('joint')}
    assert set(joints) == {'left_finger_joint', 'right_finger_joint'}
    plugins = {p.get('filename'): p for p in gripper.findall('plugin')}
    assert {'gz-sim-velocity-control-system', 'gz-sim-joint-position-controller-system',
            'gz-sim-joint-state-publisher-system', 'gz-sim-pose-publisher-system'} <= set(plugins)
    controlled = [e.text for e in plugins['gz-sim-joint-position-controller-system'].findall(
        'joint_name')]
    assert sorted(controlled) == sorted(joints)


def test_bridge_covers_every_robot_topic_with_matching_types_and_directions(world, bridge):
    gz_topics = plugin_topics(world)
    for topic in ROBOT_TOPICS:
        assert topic.name in bridge, f'{topic.name} is not bridged'
        entry = bridge[topic.name]
        assert entry['ros_type_name'] == topic.ros_type
        assert entry['gz_type_name'] == GZ_TYPES[topic.ros_type]
        assert entry['direction'] == ('GZ_TO_ROS' if topic.direction == 'in' else 'ROS_TO_GZ')
        assert entry['gz_topic_name'] in gz_topics, f'world has no {entry["gz_topic_name"]}'
    assert bridge['clock']['ros_type_name'] == 'rosgraph_msgs/msg/Clock'


def test_bridge_topics_are_relative_as_the_contract_requires(bridge):
    assert all(not name.startswith('/') for name in bridge)


def test_world_loads_in_libsdformat_when_its_bindings_exist():
    sdformat = pytest.importorskip('sdformat14')
    root = sdformat.Root()
    root.load(str(WORLD))
    assert root.world_count() == 1
