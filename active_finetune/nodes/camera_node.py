"""
Camera node: publishes camera/image_raw, camera/image_policy, camera/camera_info and camera/status.

``camera/image_raw`` is the full frame (what the recorder keeps); ``camera/image_policy`` is the
same frame area-resized at the source to ``policy_image_size`` square (the policy's input size,
:func:`active_finetune.policy.inputs.resize_image`, the resize the policy would apply itself),
with the same stamp, published first: the policy node subscribes to it and never moves a
full-resolution frame through DDS.  ``policy_image_size`` 0 turns it off.

Capture runs in its own thread (blocking reads never block the executor).  When
the camera is lost the node logs it, publishes an ERROR status at once, and
retries connecting every ``reconnect_period_s`` until the camera is back.
"""

import threading
import time

from active_finetune.devices.camera import CameraConfig, CameraError, FrameRateMonitor
from active_finetune.devices.camera import open_camera
from active_finetune.nodes.conversions import camera_info_from_intrinsics, rgb_to_image
from active_finetune.nodes.parameters import declare_config
from active_finetune.nodes.qos import IMAGE_QOS, STATUS_QOS
from active_finetune.nodes.spin import run_node
from active_finetune.policy.inputs import POLICY_IMAGE_TOPIC, resize_image
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

LOW_RATE_FRACTION = 0.8
"""Below this fraction of the configured fps the status turns WARN."""


class CameraNode(Node):
    """
    Publish frames from a camera backend with the measured image QoS.

    :param device_factory: callable(CameraConfig) -> Camera; default
        :func:`active_finetune.devices.camera.open_camera` (tests pass fakes)
    :param kwargs: passed to rclpy Node (context, parameter_overrides, ...)
    """

    def __init__(self, device_factory=open_camera, **kwargs):
        super().__init__('camera', **kwargs)
        self.config = declare_config(self, CameraConfig, on_change=self._on_config)
        self._camera = device_factory(self.config)
        self._image_pub = self.create_publisher(Image, 'camera/image_raw', IMAGE_QOS)
        self._policy_image_pub = None
        if self.config.policy_image_size > 0:
            self._policy_image_pub = self.create_publisher(Image, POLICY_IMAGE_TOPIC, IMAGE_QOS)
        self._info_pub = self.create_publisher(CameraInfo, 'camera/camera_info', IMAGE_QOS)
        self._status_pub = self.create_publisher(DiagnosticStatus, 'camera/status', STATUS_QOS)
        self._monitor = FrameRateMonitor(self.config.fps)
        self._lock = threading.Lock()
        self._connected = False
        self._last_error = ''
        self._intrinsics = None
        self._stop = threading.Event()
        self._status_timer = self.create_timer(self.config.status_period_s, self._publish_status)
        self._thread = threading.Thread(target=self._capture_loop, name='camera_capture',
                                        daemon=True)
        self._thread.start()

    def _on_config(self, config):
        self.config = config

    def _set_state(self, connected, error=''):
        with self._lock:
            changed = connected != self._connected
            self._connected = connected
            self._last_error = error
        if changed:
            self._publish_status()

    def _capture_loop(self):
        while not self._stop.is_set() and self.context.ok():
            try:
                self._capture_once()
            except Exception as error:  # noqa: B902 - the capture thread must survive
                if self._stop.is_set() or not self.context.ok():
                    break
                self.get_logger().error(f'camera thread: unexpected error {error!r}')
                self._on_lost(error)

    def _capture_once(self):
        if not self._camera.is_connected and not self._connect():
            self._stop.wait(self.config.reconnect_period_s)
            return
        try:
            frame = self._camera.read()
        except CameraError as error:
            self._on_lost(error)
            return
        self._publish_frame(frame)

    def _connect(self):
        try:
            self._camera.connect()
        except CameraError as error:
            self.get_logger().error(
                f'cannot connect to {self._camera.description}: {error}; retrying every '
                f'{self.config.reconnect_period_s} s', throttle_duration_sec=10.0)
            self._set_state(False, str(error))
            return False
        self._intrinsics = self._camera.intrinsics
        with self._lock:
            self._monitor.restart()
        self.get_logger().info(f'connected to {self._camera.description}')
        self._set_state(True)
        return True

    def _on_lost(self, error):
        self.get_logger().error(
            f'{self._camera.description} disconnected: {error}; reconnecting every '
            f'{self.config.reconnect_period_s} s')
        self._camera.disconnect()
        self._set_state(False, str(error))
        self._stop.wait(self.config.reconnect_period_s)

    def _publish_frame(self, frame):
        if self._policy_image_pub is not None:
            # First: the policy acts on it, and its latency counts from the capture stamp.
            self._policy_image_pub.publish(rgb_to_image(
                resize_image(frame.rgb, self.config.policy_image_size), frame.capture_time_s,
                self.config.frame_id))
        image = rgb_to_image(frame.rgb, frame.capture_time_s, self.config.frame_id)
        info = camera_info_from_intrinsics(self._intrinsics, frame.capture_time_s,
                                           self.config.frame_id)
        self._image_pub.publish(image)
        self._info_pub.publish(info)
        with self._lock:
            self._monitor.record(time.monotonic(), frame.sequence)

    def status(self):
        """
        Build the current status.

        :return: diagnostic_msgs/DiagnosticStatus with rate_hz, dropped_frames,
            frames_published, connected, backend, last_error and policy_image_size
        """
        with self._lock:
            rate_hz = self._monitor.rate_hz(time.monotonic())
            dropped, frames = self._monitor.dropped_frames, self._monitor.frames
            connected, last_error = self._connected, self._last_error
        if not connected:
            level = DiagnosticStatus.ERROR
            message = f'disconnected: {last_error}; retrying every ' \
                      f'{self.config.reconnect_period_s} s'
        elif rate_hz < LOW_RATE_FRACTION * self.config.fps:
            level, message = DiagnosticStatus.WARN, \
                f'rate {rate_hz:.1f} Hz below {self.config.fps:.1f} Hz'
        else:
            level, message = DiagnosticStatus.OK, f'streaming at {rate_hz:.1f} Hz'
        values = {'rate_hz': f'{rate_hz:.2f}', 'dropped_frames': str(dropped),
                  'frames_published': str(frames), 'connected': str(connected).lower(),
                  'backend': self.config.backend, 'last_error': last_error,
                  'policy_image_size': str(self.config.policy_image_size)}
        return DiagnosticStatus(
            level=level, name=self.get_fully_qualified_name(), message=message,
            hardware_id=self._camera.description,
            values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def _publish_status(self):
        self._status_pub.publish(self.status())

    def destroy_node(self):
        """Stop the capture thread and release the camera, then destroy the node."""
        self._stop.set()
        self._thread.join(timeout=self.config.read_timeout_s + 2.0)
        self._camera.disconnect()
        super().destroy_node()


def main(args=None):
    """
    Run the camera node until Ctrl-C or SIGTERM.

    :param args: ROS command-line arguments
    """
    run_node(CameraNode, args)


if __name__ == '__main__':
    main()
