"""
Command mux node: decides which command reaches the robot, at rate_hz and on every new command.

Subscribes policy/twist, policy/gripper, teleop/twist, teleop/gripper,
recorder/status (JSON with "state") and estop; publishes cmd/twist, cmd/gripper
and mux/status (JSON: source, estop, code, reason; on change).  The rules live
in :class:`active_finetune.safety.CommandMux`: the operator takes over on
SpaceMouse motion (held ``teleop_hold_s``) and while recording, the policy has
control otherwise; stale sources count as absent; estop latches zero until a
False arrives; NaN gives zero; every axis is clamped.  Zero on shutdown.

A new twist or gripper command is forwarded as it arrives (a cycle runs at once), so it reaches
the robot without waiting up to 1 / rate_hz for the next timer cycle; the timer keeps the output
going (and zeroes it) when commands stop.  ``cmd/twist`` is stamped with the time of publishing,
or, with ``forward_source_stamp``, with the header stamp of the command it forwards (the time the
operator or the policy issued it), so a robot can tell which command it executes (the simulation
bridge's scripted operator needs that); a zero the mux makes itself (stale source, estop, no
source) is always stamped with the current time.
"""


from active_finetune.nodes.conversions import linear_to_twist_stamped, stamp_to_s, \
    twist_stamped_to_linear
from active_finetune.nodes.parameters import declare_config
from active_finetune.nodes.qos import COMMAND_QOS, LATCHED_QOS
from active_finetune.nodes.spin import run_node
from active_finetune.payloads import decode_recorder_status, encode, MuxStatus, PayloadError
from active_finetune.safety import CommandMux, CommandMuxConfig, POLICY, TELEOP
from geometry_msgs.msg import TwistStamped
import numpy as np
from rclpy.duration import Duration
from rclpy.node import Node
from std_msgs.msg import Bool, Float64, String

FINAL_ZERO_ACK_TIMEOUT_S = 0.5
"""How long shutdown waits for subscribers to acknowledge the final zero twist (s)."""


class CommandMuxNode(Node):
    """
    Arbitrate between policy and teleop commands, with estop, timeouts and limits.

    :param kwargs: passed to rclpy Node (context, parameter_overrides, ...)
    """

    def __init__(self, **kwargs):
        super().__init__('command_mux', **kwargs)
        self.config = declare_config(self, CommandMuxConfig, on_change=self._on_config)
        self._mux = CommandMux(self.config)
        self._status_key = None
        self._twist_pub = self.create_publisher(TwistStamped, 'cmd/twist', COMMAND_QOS)
        self._gripper_pub = self.create_publisher(Float64, 'cmd/gripper', COMMAND_QOS)
        self._status_pub = self.create_publisher(String, 'mux/status', LATCHED_QOS)
        for source in (POLICY, TELEOP):
            self.create_subscription(
                TwistStamped, f'{source}/twist',
                lambda msg, source=source: self._on_twist(source, msg), COMMAND_QOS)
            self.create_subscription(
                Float64, f'{source}/gripper',
                lambda msg, source=source: self._on_gripper(source, msg), COMMAND_QOS)
        self.create_subscription(String, 'recorder/status', self._on_recorder_status,
                                 LATCHED_QOS)
        # A transient-local subscription gets an estop latched before this node
        # started but cannot match a volatile publisher (`ros2 topic pub`); the
        # volatile one matches any publisher.  Duplicates are harmless.
        self.create_subscription(Bool, 'estop', self._on_estop, LATCHED_QOS)
        self.create_subscription(Bool, 'estop', self._on_estop, COMMAND_QOS)
        self._timer = self.create_timer(1.0 / self.config.rate_hz, self._cycle)

    def _now_s(self):
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_config(self, config):
        self.config = config
        self._mux.set_config(config)

    def _on_twist(self, source, msg):
        self._mux.on_twist(source, twist_stamped_to_linear(msg), self._now_s(),
                           stamp_to_s(msg.header.stamp))
        self._cycle()

    def _on_gripper(self, source, msg):
        self._mux.on_gripper(source, msg.data, self._now_s())
        self._cycle()

    def _on_recorder_status(self, msg):
        try:
            state = decode_recorder_status(msg.data).state
        except PayloadError as error:
            self.get_logger().warning(
                f'ignoring malformed recorder/status ({error})',
                throttle_duration_sec=10.0)
            return
        self._mux.on_recorder_state(state)

    def _on_estop(self, msg):
        if self._mux.on_estop(msg.data):
            if msg.data:
                self.get_logger().error('estop engaged: commands held at zero until released')
            else:
                self.get_logger().warning('estop released')

    def _cycle(self):
        try:
            decision = self._mux.decide(self._now_s())
            self._publish(decision.twist_mps, decision.gripper,
                          decision.stamp_s if self.config.forward_source_stamp else None)
            if decision.status_key() != self._status_key:
                self._status_key = decision.status_key()
                self._announce(decision)
        except Exception as error:  # noqa: B902 - a timer exception would stop spin
            self.get_logger().error(f'mux cycle failed: {error!r}; publishing zero twist')
            self.publish_zero()

    def _announce(self, decision):
        self._status_pub.publish(String(data=encode(MuxStatus(
            source=decision.source, estop=decision.estop, code=decision.code,
            reason=decision.reason))))
        text = f'source={decision.source} estop={decision.estop} {decision.code}' \
            + (f': {decision.reason}' if decision.reason else '')
        if decision.code in ('ok', 'clamped'):
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)

    def _publish(self, linear_mps, gripper, stamp_s=None):
        # The gripper first: a robot that waits for the twist of a command then has both.
        if gripper is not None:
            self._gripper_pub.publish(Float64(data=gripper))
        self._twist_pub.publish(
            linear_to_twist_stamped(linear_mps, stamp_s or self._now_s(), self.config.frame_id))

    def publish_zero(self):
        """Publish a zero twist (the gripper is left as it is)."""
        self._publish(np.zeros(3), None)

    def destroy_node(self):
        """Publish a zero twist, then destroy the node."""
        try:
            self.publish_zero()
            # The process exits right after this: wait until subscribers have the zero.
            self._twist_pub.wait_for_all_acked(Duration(seconds=FINAL_ZERO_ACK_TIMEOUT_S))
        except Exception as error:  # noqa: B902 - shutting down whatever happens
            self.get_logger().error(f'could not publish the final zero twist: {error!r}')
        super().destroy_node()


def main(args=None):
    """
    Run the command mux until Ctrl-C or SIGTERM; its last twist is zero.

    :param args: ROS command-line arguments
    """
    run_node(CommandMuxNode, args)


if __name__ == '__main__':
    main()
