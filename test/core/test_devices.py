"""Camera and SpaceMouse device classes, their fakes and their pure helpers, without hardware."""

import time

from active_finetune.devices.camera import CameraConfig, CameraDisconnected, CameraError
from active_finetune.devices.camera import CameraNotFound, EndOfStream, FakeCamera
from active_finetune.devices.camera import FramePacer, FrameRateMonitor, open_camera
from active_finetune.devices.camera import OpenCVCamera, parse_opencv_source, RealSenseCamera
from active_finetune.devices.spacemouse import ButtonToggle, describe_open_error
from active_finetune.devices.spacemouse import FakeSpaceMouse, shape_axes, SpaceMouse
from active_finetune.devices.spacemouse import SpaceMouseConfig, SpaceMouseDisconnected
from active_finetune.devices.spacemouse import SpaceMouseError, SpaceMouseNotFound
from active_finetune.devices.spacemouse import SpaceMouseState
import cv2
import numpy as np
import pytest


def write_video(path, frames_bgr, fps=30.0):
    """Write BGR frames to an MJPG .avi and return its path."""
    height, width = frames_bgr[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), fps, (width, height))
    assert writer.isOpened(), 'OpenCV cannot write MJPG here'
    for frame in frames_bgr:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def red_then_blue_video(tmp_path):
    red = np.zeros((48, 64, 3), np.uint8)
    red[:, :, 2] = 255
    blue = np.zeros((48, 64, 3), np.uint8)
    blue[:, :, 0] = 255
    return write_video(tmp_path / 'clip.avi', [red, red, blue])


def test_opencv_camera_plays_a_file_as_rgb(red_then_blue_video):
    with OpenCVCamera(str(red_then_blue_video), fps=500.0) as camera:
        assert camera.is_connected
        assert not camera.intrinsics.calibrated
        assert (camera.intrinsics.width, camera.intrinsics.height) == (64, 48)
        frames = [camera.read() for _ in range(3)]
    assert not camera.is_connected
    assert frames[0].rgb.shape == (48, 64, 3) and frames[0].rgb.dtype == np.uint8
    assert frames[0].rgb[24, 32, 0] > 200 and frames[0].rgb[24, 32, 2] < 50, 'red in RGB order'
    assert frames[2].rgb[24, 32, 2] > 200 and frames[2].rgb[24, 32, 0] < 50, 'blue last'
    assert [f.sequence for f in frames] == [1, 2, 3]
    assert abs(frames[0].capture_time_s - time.time()) < 5.0


def test_opencv_camera_end_of_file_and_loop(red_then_blue_video):
    with OpenCVCamera(str(red_then_blue_video), fps=500.0, loop=False) as camera:
        for _ in range(3):
            camera.read()
        with pytest.raises(EndOfStream, match='reached its end'):
            camera.read()
    with OpenCVCamera(str(red_then_blue_video), fps=500.0, loop=True) as camera:
        frames = [camera.read() for _ in range(5)]
    assert frames[3].rgb[24, 32, 0] > 200, 'the fourth frame is the first again'


def test_opencv_camera_resizes_to_the_requested_size(red_then_blue_video):
    with OpenCVCamera(str(red_then_blue_video), width=32, height=24, fps=500.0) as camera:
        assert camera.read().rgb.shape == (24, 32, 3)
        assert camera.intrinsics.width == 32


def test_opencv_camera_paces_files_at_their_rate(tmp_path):
    path = write_video(tmp_path / 'slow.avi', [np.zeros((8, 8, 3), np.uint8)] * 6, fps=50.0)
    with OpenCVCamera(str(path)) as camera:
        start = time.monotonic()
        for _ in range(6):
            camera.read()
        elapsed_s = time.monotonic() - start
    # Pacing sleeps between frames, so it can only make reading slower, never faster: a lower
    # bound is exact on any machine (5 intervals of 20 ms), an upper bound would not be.
    assert elapsed_s >= 0.1 - 1e-3, f'6 frames at 50 Hz took only {elapsed_s:.3f} s'


def test_opencv_camera_missing_sources(tmp_path):
    with pytest.raises(CameraNotFound, match='does not exist'):
        OpenCVCamera(str(tmp_path / 'nope.avi')).connect()
    with pytest.raises(CameraNotFound, match='could not open'):
        OpenCVCamera('/dev/video_does_not_exist').connect()
    with pytest.raises(CameraError, match='not connected'):
        OpenCVCamera(str(tmp_path / 'nope.avi')).read()


def test_parse_opencv_source():
    assert parse_opencv_source('0') == 0
    assert parse_opencv_source(' 2 ') == 2
    assert parse_opencv_source('/dev/video4') == '/dev/video4'
    with pytest.raises(ValueError, match='device index'):
        parse_opencv_source('')


def test_realsense_without_device_or_file_is_not_found(tmp_path):
    pytest.importorskip('pyrealsense2')
    with pytest.raises(CameraNotFound, match='does not exist'):
        RealSenseCamera(bag_path=tmp_path / 'missing.bag').connect()
    camera = RealSenseCamera(serial_number='123456789')
    with pytest.raises(CameraNotFound, match='RealSense'):
        camera.connect()
    assert not camera.is_connected


def write_realsense_recording(path, frame_count=5, width=32, height=24):
    """Record frames of value 20*i from a pyrealsense2 software device (a .db3 in 2.59)."""
    rs = pytest.importorskip('pyrealsense2')
    device = rs.software_device()
    sensor = device.add_sensor('Color')
    intrinsics = rs.intrinsics()
    intrinsics.width, intrinsics.height = width, height
    intrinsics.fx = intrinsics.fy = 40.0
    intrinsics.ppx, intrinsics.ppy = width / 2.0, height / 2.0
    intrinsics.model, intrinsics.coeffs = rs.distortion.none, [0.0] * 5
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid = rs.stream.color, 0, 0
    stream.width, stream.height, stream.fps, stream.bpp = width, height, 30, 3
    stream.fmt, stream.intrinsics = rs.format.rgb8, intrinsics
    profile = sensor.add_video_stream(stream)
    recorder = rs.recorder(str(path), device)
    sensor.open(profile)
    sensor.start(rs.frame_queue(10))
    for i in range(frame_count):
        frame = rs.software_video_frame()
        frame.pixels = np.full((height, width, 3), 20 * i, np.uint8)
        frame.stride, frame.bpp = width * 3, 3
        frame.timestamp, frame.domain = i * 33.3, rs.timestamp_domain.hardware_clock
        frame.frame_number, frame.profile = i + 1, profile.as_video_stream_profile()
        sensor.on_video_frame(frame)
        time.sleep(0.034)
    sensor.stop()
    sensor.close()
    del recorder
    return path


def test_realsense_plays_a_recording_to_its_end(tmp_path):
    path = write_realsense_recording(tmp_path / 'recording.db3')
    camera = RealSenseCamera(bag_path=path, loop=False, width=32, height=24,
                             read_timeout_s=0.3)
    with camera:
        assert camera.intrinsics.fx == pytest.approx(40.0)
        assert camera.intrinsics.distortion_model == 'plumb_bob'
        frames = [camera.read() for _ in range(5)]
        with pytest.raises(EndOfStream, match='reached its end'):
            camera.read()
    assert [int(f.rgb[0, 0, 0]) for f in frames] == [0, 20, 40, 60, 80]
    assert [f.sequence for f in frames] == [1, 2, 3, 4, 5]
    assert frames[0].rgb.shape == (24, 32, 3)


def test_fake_camera_unplug_and_plug():
    camera = FakeCamera(width=16, height=8, fps=1000.0)
    with camera:
        first, second = camera.read(), camera.read()
        assert (first.sequence, second.sequence) == (1, 2)
        assert first.rgb[0, 0, 0] == 1 and second.rgb[0, 0, 0] == 2
        camera.unplug()
        with pytest.raises(CameraDisconnected):
            camera.read()
        camera.disconnect()
        with pytest.raises(CameraNotFound):
            camera.connect()
        camera.plug()
        camera.connect()
        assert camera.read().sequence == 3
    assert camera.connect_count == 2


def test_frame_pacer_keeps_the_rate():
    pacer = FramePacer(100.0)
    start = time.monotonic()
    for _ in range(11):
        pacer.wait()
    assert 0.09 < time.monotonic() - start < 0.5
    with pytest.raises(ValueError, match='rate_hz'):
        FramePacer(0.0)


def test_frame_rate_monitor_counts_sequence_gaps_and_long_intervals():
    monitor = FrameRateMonitor(expected_rate_hz=10.0, window_s=10.0)
    for i, sequence in enumerate([1, 2, 5, 6]):
        monitor.record(i * 0.1, sequence)
    assert monitor.dropped_frames == 2
    assert monitor.rate_hz(0.3) == pytest.approx(10.0)
    monitor.restart()
    monitor.record(5.0, 100)
    assert monitor.dropped_frames == 2, 'a reconnect is not a drop'
    interval = FrameRateMonitor(expected_rate_hz=10.0)
    for t in (0.0, 0.1, 0.2, 0.5):
        interval.record(t)
    assert interval.dropped_frames == 2
    assert interval.rate_hz(100.0) == 0.0, 'nothing in the window'


@pytest.mark.parametrize('overrides, field', [
    ({'backend': 'usb'}, 'backend'),
    ({'backend': 'opencv', 'device': ''}, 'device'),
    ({'fps': 0.0}, 'fps'),
    ({'reconnect_period_s': -1.0}, 'reconnect_period_s'),
    ({'width': 0}, 'width'),
])
def test_camera_config_refuses_bad_values(overrides, field):
    with pytest.raises(ValueError, match=field):
        CameraConfig(**overrides)


def test_open_camera_builds_the_configured_backend(tmp_path):
    opencv = open_camera(CameraConfig(backend='opencv', device='0'))
    assert isinstance(opencv, OpenCVCamera) and opencv.source == 0
    calibrated = open_camera(CameraConfig(backend='opencv', device='1', fx=500.0, fy=500.0,
                                          cx=320.0, cy=240.0))
    assert calibrated._given_intrinsics.fx == 500.0
    bag = open_camera(CameraConfig(backend='bag', device=str(tmp_path / 'a.bag')))
    assert isinstance(bag, RealSenseCamera) and bag.bag_path == tmp_path / 'a.bag'
    live = open_camera(CameraConfig(backend='realsense', device='0123'))
    assert live.serial_number == '0123' and live.bag_path is None


def test_shape_axes_deadband_is_continuous():
    out = shape_axes([0.04, -0.04, 0.5, 1.0, -1.0, 0.1], deadband=0.1, scale=1.0, sign=1)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.4 / 0.9, 1.0, -1.0, 0.0], atol=1e-12)


def test_shape_axes_scale_sign_and_clip():
    out = shape_axes([0.5, 0.5, 0.5, 0.5, 0.5, 0.5], deadband=0.0,
                     scale=[1.0, 2.0, 3.0, 0.0, 1.0, 1.0], sign=[1, 1, 1, 1, -1, 1])
    np.testing.assert_allclose(out, [0.5, 1.0, 1.0, 0.0, -0.5, 0.5])


@pytest.mark.parametrize('kwargs, message', [
    ({'deadband': 1.0}, 'deadband'),
    ({'scale': -1.0}, 'scales'),
    ({'sign': 0}, 'signs'),
    ({'raw_axes': [np.nan] * 6}, 'finite'),
])
def test_shape_axes_refuses_bad_inputs(kwargs, message):
    arguments = {'raw_axes': np.zeros(6), 'deadband': 0.1, 'scale': 1.0, 'sign': 1}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        shape_axes(**arguments)


def test_button_toggle_flips_on_rising_edges_only():
    toggle = ButtonToggle(-1.0, 1.0)
    outputs = [toggle.update(p) for p in (0, 1, 1, 1, 0, 0, 1, 0)]
    assert outputs == [-1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0]
    toggle.update(True)
    toggle.release()
    assert toggle.update(True) == -1.0, 'after release a held button counts as a new press'


def test_fake_spacemouse_script_and_unplug():
    pushed = SpaceMouseState(axes=np.array([0.5, 0, 0, 0, 0, 0]), buttons=(0, 1))
    mouse = FakeSpaceMouse([SpaceMouseState.at_rest(), pushed])
    with pytest.raises(SpaceMouseError, match='not open'):
        mouse.read()
    with mouse:
        assert mouse.read().axes[0] == 0.0
        assert mouse.read().buttons == (0, 1)
        assert mouse.read().axes[0] == 0.5, 'the last state repeats'
        mouse.unplug()
        with pytest.raises(SpaceMouseDisconnected):
            mouse.read()
        with pytest.raises(SpaceMouseNotFound):
            mouse.open()
        mouse.plug()
        mouse.open()
        assert mouse.open_count == 2


def test_real_spacemouse_without_device_gives_a_hint():
    pytest.importorskip('pyspacemouse')
    with pytest.raises(SpaceMouseNotFound) as error:
        SpaceMouse().open()
    assert 'udev' in str(error.value) or 'libhidapi' in str(error.value)


def test_open_errors_are_explained():
    no_device = describe_open_error(RuntimeError('No connected or supported devices found.'))
    assert 'no SpaceMouse found' in no_device and '99-spacemouse.rules' in no_device
    no_hid = describe_open_error(RuntimeError('HID API is probably not installed. See ...'))
    assert 'libhidapi-hidraw0' in no_hid
    other = describe_open_error(RuntimeError('Failed to open device'))
    assert 'Failed to open device' in other and 'permission' in other


@pytest.mark.parametrize('overrides, field', [
    ({'source': 'joystick'}, 'source'),
    ({'axis_scale': (1.0,) * 5}, 'axis_scale'),
    ({'axis_sign': (1, 1, 1, 1, 1, 2)}, 'axis_sign'),
    ({'deadband': 1.0}, 'deadband'),
    ({'rate_hz': -10.0}, 'rate_hz'),
])
def test_spacemouse_config_refuses_bad_values(overrides, field):
    with pytest.raises(ValueError, match=field):
        SpaceMouseConfig(**overrides)
