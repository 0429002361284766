"""
SpaceMouse node: publishes teleop/twist, teleop/joy and teleop/gripper at rate_hz.

With ``source: device`` it reads the SpaceMouse through pyspacemouse in its own
thread; with ``source: spacenav`` it republishes spacenav_node's spacenav/twist
and spacenav/joy in this package's form.  Linear velocity is the shaped
translation axes times ``max_linear_velocity_mps`` (angular is left at zero: the
action space is linear; teleop/joy carries all six shaped axes).  The gripper
toggles between -1 (open) and +1 (closed) on the rising edge of
``gripper_button``.  Whenever input is lost (device unplugged, spacenav silent
for ``input_timeout_s``) and on shutdown, the twist published is zero.
"""

import threading
import time

from active_finetune.devices.spacemouse import ButtonToggle, shape_axes, SpaceMouse
from active_finetune.devices.spacemouse import SpaceMouseConfig, SpaceMouseError
from active_finetune.nodes.conversions import linear_to_twist_stamped, s_to_stamp
from active_finetune.nodes.conversions import twist_angular, twist_linear
from active_finetune.nodes.parameters import declare_config
from active_finetune.nodes.qos import COMMAND_QOS
from active_finetune.nodes.spin import run_node
from geometry_msgs.msg import Twist, TwistStamped
import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Joy
from std_msgs.msg import Float64


def open_spacemouse(config):
    """
    Build (without opening) the SpaceMouse a config describes.

    :param config: :class:`SpaceMouseConfig`
    :return: :class:`active_finetune.devices.spacemouse.SpaceMouse`
    """
    return SpaceMouse(config.device_name)


class SpaceMouseNode(Node):
    """
    Turn SpaceMouse input into teleop commands.

    :param device_factory: callable(SpaceMouseConfig) -> SpaceMouseDevice, used
        with ``source: device`` (tests pass a fake)
    :param kwargs: passed to rclpy Node (context, parameter_overrides, ...)
    """

    def __init__(self, device_factory=open_spacemouse, **kwargs):
        super().__init__('spacemouse', **kwargs)
        self.config = declare_config(self, SpaceMouseConfig, on_change=self._on_config)
        self._twist_pub = self.create_publisher(TwistStamped, 'teleop/twist', COMMAND_QOS)
        self._joy_pub = self.create_publisher(Joy, 'teleop/joy', COMMAND_QOS)
        self._gripper_pub = self.create_publisher(Float64, 'teleop/gripper', COMMAND_QOS)
        self._gripper = ButtonToggle(released_value=-1.0, pressed_value=1.0)
        self._lock = threading.Lock()
        self._axes = None
        self._buttons = ()
        self._input_time_s = None
        self._input_lost_logged = False
        self._stop = threading.Event()
        self._thread = None
        self._device = None
        if self.config.source == 'device':
            self._device = device_factory(self.config)
            self._thread = threading.Thread(target=self._device_loop, name='spacemouse_reader',
                                            daemon=True)
            self._thread.start()
        else:
            self.create_subscription(Twist, 'spacenav/twist', self._on_spacenav_twist,
                                     qos_profile_sensor_data)
            self.create_subscription(Joy, 'spacenav/joy', self._on_spacenav_joy,
                                     qos_profile_sensor_data)
        self._timer = self.create_timer(1.0 / self.config.rate_hz, self._on_timer)

    def _on_config(self, config):
        self.config = config

    def _store_input(self, axes, buttons=None):
        with self._lock:
            self._axes = np.clip(np.asarray(axes, dtype=np.float64), -1.0, 1.0)
            if buttons is not None:
                self._buttons = tuple(int(b) for b in buttons)
            self._input_time_s = time.monotonic()

    def _forget_input(self):
        with self._lock:
            self._axes, self._buttons, self._input_time_s = None, (), None

    def _device_loop(self):
        device = self._device
        is_open = False
        while not self._stop.is_set() and self.context.ok():
            if not is_open:
                try:
                    device.open()
                    is_open = True
                    self.get_logger().info(f'opened {device.description}')
                except SpaceMouseError as error:
                    self.get_logger().error(
                        f'{error}; retrying every {self.config.reconnect_period_s} s',
                        throttle_duration_sec=30.0)
                    self._stop.wait(self.config.reconnect_period_s)
                    continue
            try:
                state = device.read()
                self._store_input(state.axes, state.buttons)
            except SpaceMouseError as error:
                self.get_logger().error(
                    f'{device.description} lost: {error}; publishing zero twist and retrying '
                    f'every {self.config.reconnect_period_s} s')
                self._forget_input()
                device.close()
                is_open = False
                self._stop.wait(self.config.reconnect_period_s)
                continue
            self._stop.wait(1.0 / self.config.rate_hz)
        device.close()

    def _on_spacenav_twist(self, msg):
        axes = np.concatenate([twist_linear(msg), twist_angular(msg)])
        if not np.isfinite(axes).all():
            self.get_logger().warning(f'ignoring non-finite spacenav/twist {axes.tolist()}',
                                      throttle_duration_sec=5.0)
            return
        self._store_input(axes)

    def _on_spacenav_joy(self, msg):
        axes = np.zeros(6)
        given = np.asarray(msg.axes[:6], dtype=np.float64)
        axes[:len(given)] = given
        if not np.isfinite(axes).all():
            self.get_logger().warning(f'ignoring non-finite spacenav/joy axes {axes.tolist()}',
                                      throttle_duration_sec=5.0)
            return
        self._store_input(axes, msg.buttons)

    def _current_input(self):
        """Return (axes, buttons) of fresh input, or (None, ()) when it is lost."""
        with self._lock:
            axes, buttons, input_time_s = self._axes, self._buttons, self._input_time_s
        if input_time_s is None or time.monotonic() - input_time_s > self.config.input_timeout_s:
            return None, ()
        return axes, buttons

    def _on_timer(self):
        try:
            axes, buttons = self._current_input()
            if axes is None:
                if not self._input_lost_logged:
                    self.get_logger().warning(
                        f'no SpaceMouse input ({self.config.source}); publishing zero twist')
                    self._input_lost_logged = True
                self._gripper.release()
                self.publish_zero()
                return
            if self._input_lost_logged:
                self.get_logger().info(f'SpaceMouse input back ({self.config.source})')
                self._input_lost_logged = False
            config = self.config
            shaped = shape_axes(axes, config.deadband, config.axis_scale, config.axis_sign)
            pressed = len(buttons) > config.gripper_button and buttons[config.gripper_button]
            self._gripper.update(pressed)
            self._publish(shaped[:3] * config.max_linear_velocity_mps, shaped, buttons)
        except Exception as error:  # noqa: B902 - a timer exception would stop spin
            self.get_logger().error(f'teleop cycle failed: {error!r}; publishing zero twist')
            self.publish_zero()

    def _publish(self, linear_mps, axes, buttons):
        now_s = self.get_clock().now().nanoseconds * 1e-9
        self._twist_pub.publish(linear_to_twist_stamped(linear_mps, now_s, self.config.frame_id))
        joy = Joy()
        joy.header.stamp = s_to_stamp(now_s)
        joy.header.frame_id = self.config.frame_id
        joy.axes = [float(a) for a in axes]
        joy.buttons = [int(b) for b in buttons]
        self._joy_pub.publish(joy)
        self._gripper_pub.publish(Float64(data=float(self._gripper.value)))

    def publish_zero(self):
        """Publish a zero twist, zero joy axes with no button pressed, and the held gripper."""
        self._publish(np.zeros(3), np.zeros(6), ())

    def destroy_node(self):
        """Stop reading, publish a zero twist, release the device, then destroy the node."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        try:
            self.publish_zero()
        except Exception as error:  # noqa: B902 - shutting down whatever happens
            self.get_logger().error(f'could not publish the final zero twist: {error!r}')
        super().destroy_node()


def main(args=None):
    """
    Run the SpaceMouse node until Ctrl-C or SIGTERM; its last twist is zero.

    :param args: ROS command-line arguments
    """
    run_node(SpaceMouseNode, args)


if __name__ == '__main__':
    main()
