"""
Launch the package against Gazebo Harmonic: tabletop world, ros_gz_bridge, the 'gazebo' graph.

Usage: ``ros2 launch active_finetune gazebo.launch.py [gui:=false] [world:=/path/world.sdf] ...``.
The world (gazebo/worlds/tabletop.sdf) has a table, objects, a fixed RGB camera and a kinematic
two-finger end effector driven by velocity commands; config/gazebo_bridge.yaml maps its Gazebo
topics onto the package's topic contract (camera/image_raw, camera/camera_info, joint_states,
ee_pose, cmd/twist, cmd/gripper, /clock).  The nodes run with use_sim_time.  Besides the
Gazebo-specific arguments (world, gui, bridge_config) it takes the same graph arguments as
sim.launch.py, plus the driver-topic remaps of robot.launch.py; nodes, parameters and remappings
come from config/graphs.yaml and config/robot.yaml through active_finetune.graph.  ``namespace``
applies to the bridge too (its /clock stays global), and the nodes get the package's large
shared-memory Fast DDS profile as with robot.launch.py (``fastdds_profile``).
"""

from active_finetune.nodes.launch_description import generate_graph_launch_description

GRAPH = 'gazebo'


def generate_launch_description():
    """
    Describe the launch of the 'gazebo' graph (active_finetune.nodes.launch_description).

    :return: LaunchDescription
    """
    return generate_graph_launch_description(GRAPH)
