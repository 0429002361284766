"""
Launch the simulation graph: the whole AMF loop in MuJoCo/Meta-World with the scripted operator.

Usage: ``ros2 launch active_finetune sim.launch.py [budget:=8] [dataset_dir:=/data/episodes] ...``
(``ros2 launch active_finetune sim.launch.py --show-args`` lists the arguments).  Nodes,
parameters and remappings come from config/graphs.yaml and config/sim.yaml through
active_finetune.graph, exactly as ``af-runner sim`` starts them; the nodes get the package's
large shared-memory Fast DDS profile (config/fastdds_large_shm.xml) as with af-runner, unless
FASTRTPS_DEFAULT_PROFILES_FILE is set or ``fastdds_profile:=''``.
"""

from active_finetune.nodes.launch_description import generate_graph_launch_description

GRAPH = 'sim'


def generate_launch_description():
    """
    Describe the launch of the 'sim' graph (active_finetune.nodes.launch_description).

    :return: LaunchDescription
    """
    return generate_graph_launch_description(GRAPH)
