"""
Camera node through real DDS, and the message <-> numpy conversions it relies on.

The node plays a video file written by cv2.VideoWriter (opencv backend) or a
FakeCamera that the test unplugs and plugs back.
"""

from active_finetune.devices.camera import CameraConfig, CameraIntrinsics, FakeCamera
from active_finetune.nodes.camera_node import CameraNode
from active_finetune.nodes.conversions import camera_info_from_intrinsics, cdr_image_size
from active_finetune.nodes.conversions import cdr_string_data
from active_finetune.nodes.conversions import check_image_size, header_stamp_s
from active_finetune.nodes.conversions import image_to_rgb, ImageTooLargeError, joint_positions
from active_finetune.nodes.conversions import linear_to_twist_stamped, MalformedCdrError
from active_finetune.nodes.conversions import MalformedImageError, MalformedJointStateError
from active_finetune.nodes.conversions import pose_position
from active_finetune.nodes.conversions import rgb_to_image, s_to_stamp, stamp_to_s
from active_finetune.nodes.conversions import twist_stamped_to_linear, UnsupportedEncodingError
from active_finetune.nodes.qos import IMAGE_QOS, STATUS_QOS
from active_finetune.policy.inputs import resize_image
import cv2
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped
import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String

pytestmark = pytest.mark.timeout(60)


def status_values(msg):
    return {kv.key: kv.value for kv in msg.values}


# --- conversions -----------------------------------------------------------------------------

def test_rgb_image_round_trip_keeps_pixels_and_stamp():
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    msg = rgb_to_image(rgb, 12.25, 'cam')
    assert (msg.encoding, msg.width, msg.height, msg.step) == ('rgb8', 5, 4, 15)
    assert msg.header.frame_id == 'cam' and header_stamp_s(msg) == pytest.approx(12.25)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_bgr8_mono8_and_padded_rows_become_rgb():
    rgb = np.random.default_rng(1).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    bgr = Image(height=3, width=4, encoding='bgr8', step=12,
                data=np.ascontiguousarray(rgb[:, :, ::-1]).tobytes())
    np.testing.assert_array_equal(image_to_rgb(bgr), rgb)
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    mono = Image(height=3, width=4, encoding='mono8', step=4, data=gray.tobytes())
    np.testing.assert_array_equal(image_to_rgb(mono), np.repeat(gray[:, :, None], 3, axis=2))
    padded_rows = np.concatenate([rgb.reshape(3, 12), np.full((3, 4), 7, np.uint8)], axis=1)
    padded = Image(height=3, width=4, encoding='rgb8', step=16, data=padded_rows.tobytes())
    np.testing.assert_array_equal(image_to_rgb(padded), rgb)


def test_malformed_images_raise_specific_errors():
    with pytest.raises(UnsupportedEncodingError, match="'yuv422'"):
        image_to_rgb(Image(height=1, width=1, encoding='yuv422', step=2, data=b'\0\0'))
    with pytest.raises(MalformedImageError, match='step 5'):
        image_to_rgb(Image(height=2, width=2, encoding='rgb8', step=5, data=bytes(10)))
    with pytest.raises(MalformedImageError, match='11 bytes'):
        image_to_rgb(Image(height=2, width=2, encoding='rgb8', step=6, data=bytes(11)))
    with pytest.raises(MalformedImageError, match='no pixels'):
        image_to_rgb(Image(height=0, width=2, encoding='rgb8', step=6, data=b''))
    with pytest.raises(MalformedImageError, match=r'\(2, 2\)'):
        rgb_to_image(np.zeros((2, 2), np.uint8), 0.0, 'cam')


def test_stamps_round_trip_and_refuse_negative_time():
    stamp = s_to_stamp(1700000000.123456789)
    assert stamp.sec == 1700000000 and abs(stamp.nanosec - 123456789) < 200
    assert stamp_to_s(s_to_stamp(3.9999999999)) == pytest.approx(4.0)
    assert s_to_stamp(3.9999999999).nanosec < 1_000_000_000
    with pytest.raises(ValueError, match='-1.0'):
        s_to_stamp(-1.0)


def test_camera_info_from_intrinsics():
    info = camera_info_from_intrinsics(
        CameraIntrinsics(width=640, height=480, fx=600.0, fy=601.0, cx=320.5, cy=240.5,
                         distortion=(0.1, -0.2, 0.0, 0.0, 0.05)), 5.0, 'cam')
    assert (info.width, info.height, info.header.frame_id) == (640, 480, 'cam')
    assert list(info.k) == [600.0, 0.0, 320.5, 0.0, 601.0, 240.5, 0.0, 0.0, 1.0]
    assert info.p[0] == 600.0 and info.p[6] == 240.5 and info.p[10] == 1.0
    assert list(info.d) == pytest.approx([0.1, -0.2, 0.0, 0.0, 0.05])
    uncalibrated = camera_info_from_intrinsics(CameraIntrinsics(width=64, height=48), 5.0, 'c')
    assert uncalibrated.k[0] == 0.0, 'K[0] == 0 is how ROS says "uncalibrated"'


def test_joint_state_pose_and_twist_conversions():
    joints = JointState(name=['a', 'b'], position=[0.5, -1.0])
    assert joint_positions(joints) == {'a': 0.5, 'b': -1.0}
    with pytest.raises(MalformedJointStateError, match='2 names but 1 positions'):
        joint_positions(JointState(name=['a', 'b'], position=[0.5]))
    pose = PoseStamped()
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.1, 0.2, 0.3
    np.testing.assert_allclose(pose_position(pose), [0.1, 0.2, 0.3])
    twist = linear_to_twist_stamped([0.1, -0.2, 0.3], 7.5, 'base_link')
    assert twist.header.frame_id == 'base_link' and header_stamp_s(twist) == 7.5
    assert (twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z) == (0, 0, 0)
    np.testing.assert_allclose(twist_stamped_to_linear(twist), [0.1, -0.2, 0.3])
    with pytest.raises(ValueError, match='3 elements'):
        linear_to_twist_stamped([0.1, 0.2], 0.0, 'base_link')


def test_oversize_images_are_refused_by_header_and_data_length():
    image = rgb_to_image(np.zeros((48, 64, 3), np.uint8), 1.0, 'camera')
    check_image_size(image, 64 * 48)
    with pytest.raises(ImageTooLargeError, match=r'64x48 \(3072 pixels\) exceeds '
                                                 r'max_image_pixels 3071'):
        check_image_size(image, 3071)
    lying = Image(width=2, height=2, encoding='rgb8', step=6, data=bytes(10_000))
    with pytest.raises(ImageTooLargeError, match='10000 bytes exceeds 16 bytes'):
        check_image_size(lying, 4)


@pytest.mark.parametrize('frame_id, encoding', [
    ('', 'rgb8'), ('cam', 'mono8'), ('camera_color_optical_frame', 'bgr8')])
def test_the_size_of_a_serialised_image_is_read_without_deserialising_it(frame_id, encoding):
    image = Image(width=7, height=5, encoding=encoding, step=21, data=bytes(105))
    image.header.frame_id = frame_id
    raw = serialize_message(image)
    size = cdr_image_size(raw)
    assert (size.width, size.height, size.encoding, size.data_bytes) == (7, 5, encoding, 105)
    with pytest.raises(MalformedCdrError, match='announces 105 bytes of data but holds 100'):
        cdr_image_size(raw[:-5])
    with pytest.raises(MalformedCdrError, match='ends before'):
        cdr_image_size(raw[:12])


def test_the_text_of_a_serialised_string_is_found_without_a_copy():
    raw = serialize_message(String(data='{"version": 3, "note": "é"}'))
    view = cdr_string_data(raw)
    assert isinstance(view, memoryview) and view.obj is raw
    assert bytes(view).decode() == '{"version": 3, "note": "é"}'
    assert bytes(cdr_string_data(serialize_message(String(data='')))) == b''
    with pytest.raises(MalformedCdrError, match='too short'):
        cdr_string_data(b'\x00\x01')
    with pytest.raises(MalformedCdrError, match='does not fit'):
        cdr_string_data(raw[:-3])
    with pytest.raises(MalformedCdrError, match='encapsulation 0003'):
        cdr_string_data(b'\x00\x03' + raw[2:])


# --- node ------------------------------------------------------------------------------------

@pytest.fixture
def video_path(tmp_path):
    path = tmp_path / 'scene.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 30.0, (64, 48))
    assert writer.isOpened()
    for i in range(30):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:, :, 2] = 200  # red in BGR
        frame[:, :, 1] = 8 * i
        writer.write(frame)
    writer.release()
    return path


def test_camera_node_plays_a_video_file_over_dds(ros, wait_for, video_path):
    images = ros.collect(Image, 'camera/image_raw', IMAGE_QOS)
    infos = ros.collect(CameraInfo, 'camera/camera_info', IMAGE_QOS)
    statuses = ros.collect(DiagnosticStatus, 'camera/status', STATUS_QOS)
    node = ros.add_node(CameraNode(context=ros.context, parameter_overrides=[
        Parameter('backend', value='opencv'), Parameter('device', value=str(video_path)),
        Parameter('width', value=64), Parameter('height', value=48),
        Parameter('fps', value=30.0), Parameter('status_period_s', value=0.25),
        Parameter('frame_id', value='test_optical_frame')]))
    assert wait_for(lambda: len(images) >= 45, 10.0), f'only {len(images)} frames arrived'
    image = images.last
    assert (image.width, image.height, image.encoding) == (64, 48, 'rgb8')
    assert image.header.frame_id == 'test_optical_frame'
    rgb = image_to_rgb(image)
    assert rgb[24, 32, 0] > 150 and rgb[24, 32, 2] < 60, 'red stays red: BGR was converted'
    assert wait_for(lambda: len(infos) >= 10, 5.0)
    image_stamps = {header_stamp_s(m) for m in images.messages}
    assert header_stamp_s(infos.last) in image_stamps or \
        header_stamp_s(infos.messages[0]) in image_stamps, 'info and image share stamps'
    assert wait_for(lambda: any(status_values(m)['connected'] == 'true'
                                and float(status_values(m)['rate_hz']) > 1.0
                                for m in statuses.messages), 5.0)
    ok = [m for m in statuses.messages if m.level == DiagnosticStatus.OK]
    assert ok, [m.message for m in statuses.messages]
    assert status_values(ok[-1])['backend'] == 'opencv'
    assert 'dropped_frames' in status_values(ok[-1])
    arrivals = images.arrivals_s
    rate_hz = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert rate_hz < 40.0, f'received at {rate_hz:.1f} Hz: the file is paced at 30 Hz, not faster'
    assert node.count_subscribers('camera/image_raw') >= 1


def test_camera_node_parameters_have_descriptors_and_refuse_bad_values(ros, video_path):
    node = ros.add_node(CameraNode(
        device_factory=lambda config: FakeCamera(fps=30.0), context=ros.context,
        parameter_overrides=[Parameter('backend', value='opencv'),
                             Parameter('device', value=str(video_path))]))
    backend = node.describe_parameter('backend')
    assert backend.read_only and 'opencv' in backend.description
    fps = node.describe_parameter('fps')
    assert '(Hz)' in fps.description and fps.floating_point_range[0].from_value > 0.0
    assert '(s)' in node.describe_parameter('reconnect_period_s').description
    refused = node.set_parameters([Parameter('reconnect_period_s', value=-1.0)])[0]
    assert not refused.successful
    read_only = node.set_parameters([Parameter('backend', value='realsense')])[0]
    assert not read_only.successful and 'read-only' in read_only.reason
    accepted = node.set_parameters([Parameter('reconnect_period_s', value=0.5)])[0]
    assert accepted.successful and node.config.reconnect_period_s == 0.5


def test_a_serial_number_given_as_digits_is_accepted(ros, monkeypatch):
    configs = []

    def factory(config):
        configs.append(config)
        return FakeCamera(fps=30.0)

    # As `ros2 run ... --ros-args -p device:=123456789` gives it: rcl types it as an integer.
    ros.add_node(CameraNode(device_factory=factory, context=ros.context,
                            cli_args=['--ros-args', '-p', 'device:=123456789']))
    assert configs[-1].device == '123456789'
    # rcl reads 038322250285 as the float 38322250285.0: the node takes its command-line text.
    argv = ['camera_node', '--ros-args', '-p', 'camera:device:=038322250285']
    monkeypatch.setattr('sys.argv', argv)
    node = ros.add_node(CameraNode(device_factory=factory, context=ros.context,
                                   cli_args=argv[1:]))
    assert configs[-1].device == '038322250285'
    assert node.describe_parameter('device').dynamic_typing
    with pytest.raises(ValueError, match="'device' takes a string.*bool True"):
        CameraNode(device_factory=factory, context=ros.context,
                   parameter_overrides=[Parameter('device', value=True)])


def test_camera_node_refuses_an_invalid_configuration(ros):
    with pytest.raises(ValueError, match="needs 'device'"):
        CameraNode(context=ros.context, parameter_overrides=[Parameter('backend', value='bag')])


def test_camera_node_recovers_after_a_disconnect(ros, wait_for):
    camera = FakeCamera(width=32, height=24, fps=30.0)
    images = ros.collect(Image, 'camera/image_raw', IMAGE_QOS)
    statuses = ros.collect(DiagnosticStatus, 'camera/status', STATUS_QOS)
    ros.add_node(CameraNode(
        device_factory=lambda config: camera, context=ros.context,
        parameter_overrides=[Parameter('reconnect_period_s', value=0.1),
                             Parameter('status_period_s', value=0.2),
                             Parameter('fps', value=30.0)]))
    assert wait_for(lambda: len(images) >= 10, 10.0)
    camera.unplug()
    assert wait_for(lambda: any(m.level == DiagnosticStatus.ERROR for m in statuses.messages),
                    5.0)
    error = [m for m in statuses.messages if m.level == DiagnosticStatus.ERROR][0]
    assert 'disconnected' in error.message and 'unplugged' in error.message
    assert status_values(error)['connected'] == 'false'
    count_while_unplugged = len(images)
    assert not wait_for(lambda: len(images) > count_while_unplugged + 1, 0.5), \
        'no frames while unplugged'
    statuses.clear()
    camera.plug()
    assert wait_for(lambda: len(images) >= count_while_unplugged + 10, 10.0), 'frames resume'
    assert wait_for(lambda: any(m.level == DiagnosticStatus.OK for m in statuses.messages), 5.0)
    assert camera.connect_count >= 2
    red = [int(image_to_rgb(m)[0, 0, 0]) for m in images.messages[-5:]]
    assert red == sorted(red), 'frames keep their order after the reconnect'


def test_the_policy_stream_is_each_frame_resized_at_the_source_with_its_stamp(ros, wait_for):
    images = ros.collect(Image, 'camera/image_raw', IMAGE_QOS)
    small = ros.collect(Image, 'camera/image_policy', IMAGE_QOS)
    statuses = ros.collect(DiagnosticStatus, 'camera/status', STATUS_QOS)
    ros.add_node(CameraNode(
        device_factory=lambda config: FakeCamera(width=64, height=48, fps=30.0),
        context=ros.context, parameter_overrides=[
            Parameter('policy_image_size', value=16), Parameter('status_period_s', value=0.2),
            Parameter('frame_id', value='test_optical_frame')]))
    assert wait_for(lambda: len(images) >= 40 and len(small) >= 40, 10.0)
    assert {(m.width, m.height, m.encoding) for m in small.messages} == {(16, 16, 'rgb8')}
    assert {(m.width, m.height) for m in images.messages} == {(64, 48)}
    assert small.last.header.frame_id == 'test_optical_frame'
    full_by_stamp = {header_stamp_s(m): m for m in images.messages}
    small_stamps = [header_stamp_s(m) for m in small.messages]
    # One policy frame per full frame, with the full frame's stamp (the last may be in flight).
    common = set(small_stamps) & set(full_by_stamp)
    assert len(common) >= min(len(small_stamps), len(full_by_stamp)) - 1
    assert len(set(small_stamps)) == len(small_stamps)
    for msg in small.messages[-5:]:
        full = full_by_stamp.get(header_stamp_s(msg))
        if full is not None:
            np.testing.assert_array_equal(image_to_rgb(msg), resize_image(image_to_rgb(full), 16))
    arrivals = small.arrivals_s
    rate_hz = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert 15.0 < rate_hz < 40.0, f'policy stream at {rate_hz:.1f} Hz; the camera runs at 30 Hz'
    assert wait_for(lambda: status_values(statuses.last)['policy_image_size'] == '16', 5.0)


def test_policy_image_size_zero_turns_the_policy_stream_off(ros, wait_for):
    images = ros.collect(Image, 'camera/image_raw', IMAGE_QOS)
    node = ros.add_node(CameraNode(
        device_factory=lambda config: FakeCamera(width=32, height=24, fps=30.0),
        context=ros.context, parameter_overrides=[Parameter('policy_image_size', value=0)]))
    assert wait_for(lambda: len(images) >= 5, 10.0)
    assert node.count_publishers('camera/image_policy') == 0
    assert node.count_publishers('camera/image_raw') == 1
    with pytest.raises(ValueError, match='policy_image_size'):
        CameraConfig(policy_image_size=-1)
