"""The shared ``main`` body of every node: init, build, spin, clean shutdown on SIGINT/SIGTERM."""

import signal

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions


def run_node(node_factory, args=None, threads=1):
    """
    Build a node and spin it until Ctrl-C or SIGTERM, then destroy it (nodes flush and zero there).

    rclpy's own signal handlers would shut the context down before the node can publish a final
    zero or flush a file, so SIGINT and SIGTERM raise KeyboardInterrupt instead.

    :param node_factory: callable() -> Node
    :param args: ROS command-line arguments
    :param threads: executor threads (1: single-threaded spin)
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    node = None
    try:
        node = node_factory()
        if threads > 1:
            executor = MultiThreadedExecutor(num_threads=threads)
            executor.add_node(node)
            executor.spin()
        else:
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
