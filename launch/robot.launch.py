"""
Launch the lab-robot graph: RealSense camera, SpaceMouse, command mux, policy and the AMF loop.

The arm's driver (e.g. MoveIt Servo) runs separately; its topics are remapped in by arguments:
``ros2 launch active_finetune robot.launch.py joint_states_topic:=/joint_states
ee_pose_topic:=/franka/ee_pose cmd_twist_topic:=/servo_node/delta_twist_cmds``.  A lab that runs
its own camera driver (realsense2_camera) adds ``use_camera:=false
camera_topic:=/camera/camera/color/image_raw``; ``namespace:=/arm1`` puts every node in a
namespace.  Nodes, parameters and remappings come from config/graphs.yaml and config/robot.yaml
through active_finetune.graph, exactly as ``af-runner robot --arg name=value`` starts them; the
nodes get the package's large shared-memory Fast DDS profile (config/fastdds_large_shm.xml) as
with af-runner, unless FASTRTPS_DEFAULT_PROFILES_FILE is set or ``fastdds_profile:=''``.
"""

from active_finetune.nodes.launch_description import generate_graph_launch_description

GRAPH = 'robot'


def generate_launch_description():
    """
    Describe the launch of the 'robot' graph (active_finetune.nodes.launch_description).

    :return: LaunchDescription
    """
    return generate_graph_launch_description(GRAPH)
