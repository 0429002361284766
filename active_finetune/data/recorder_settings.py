"""
Settings of the demo recorder: its ROS parameters, checked, and the choice of frame compression.

:class:`RecorderSettings` is the dataclass whose fields are ``demo_recorder``'s parameters
(``active_finetune.nodes.demo_recorder_node`` declares them from it); :func:`frame_format` picks
the compression of one camera frame from its ``image_format``.
"""

from dataclasses import dataclass, field
import math

from active_finetune.data.alignment import DEFAULT_MAX_COMMAND_HOLD_S
from active_finetune.data.mcap_episode import IMAGE_FORMATS

SUCCESS_POLICIES = ('auto', 'sim', 'operator')
"""How the success of an episode is decided at stop (see :class:`RecorderSettings`)."""

RECORDER_IMAGE_FORMATS = ('auto',) + IMAGE_FORMATS
"""Values of ``image_format``: 'auto' (lossless up to :data:`AUTO_PNG_MAX_PIXELS`), or fixed."""

AUTO_PNG_MAX_PIXELS = 256 * 256
"""With image_format 'auto', frames of at most this many pixels are stored as PNG, larger as JPEG.

A JPEG round trip (quality 95) of a 96x96 simulated frame changes its pixels by 2.5 levels on
average and up to 131 (chroma subsampling at colour edges), while the policy sees raw frames at
inference; a 480x480 frame area-resized to 96x96 after the round trip is off by 0.4 on average and
at most 20, and as PNG it would be 4x the bytes.
"""


def frame_format(image_format, shape):
    """
    Choose the compression of one camera frame.

    :param image_format: the recorder's ``image_format`` ('auto', 'png' or 'jpeg')
    :param shape: the frame's (height, width[, channels])
    :return: 'png' or 'jpeg'
    :raises ValueError: for an unknown image_format
    """
    if image_format == 'auto':
        return 'png' if math.prod(shape[:2]) <= AUTO_PNG_MAX_PIXELS else 'jpeg'
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f'image_format must be one of {RECORDER_IMAGE_FORMATS}, '
                         f'got {image_format!r}')
    return image_format


@dataclass
class RecorderSettings:
    """
    Parameters of the demo recorder (``active_finetune.nodes.demo_recorder_node``).

    :param dataset_dir: directory of episode files and their index
    :param max_linear_velocity_mps: teleop speed that is action 1.0 (stored in each file)
    :param gripper_joint_name: joint of joint_states giving the gripper opening
    :param gripper_open_position: that joint's position when fully open
    :param min_free_disk_mb: start is refused below this much free space
    :param queue_size: samples buffered between the subscriptions and the writer thread
    :param image_format: 'auto' (PNG up to 256x256 pixels, JPEG above), 'png' or 'jpeg'
    :param jpeg_quality: 1..100
    :param max_command_hold_s: longest a teleop twist is held over frames without a new one
    :param record_button: teleop/joy button whose press toggles start/stop (-1: none)
    :param success_on_stop: 'auto', 'sim' or 'operator' (see field descriptions)
    :param unmarked_success: success of an episode nobody marked (policies auto/operator)
    :param default_task: task when operator/next_task has suggested none ('' = refuse)
    :param max_duration_s: an episode is stopped and saved after this long
    :param min_steps: an episode with fewer aligned steps is not saved (quarantined)
    :param chunk_compression: MCAP chunk compression 'zstd', 'lz4' or 'none'
    :param status_period_s: status publishing period while recording
    :param flush_period_s: the writer flushes the file at least this often
    :param recovery_retry_period_s: how often a failed leftover recovery is retried
    """

    dataset_dir: str = field(default='data/episodes', metadata={
        'description': 'directory of episode files and episodes.jsonl (shared with selector and '
                       'trainer)', 'read_only': True})
    max_linear_velocity_mps: float = field(default=0.25, metadata={
        'description': "teleop speed recorded as action 1.0; must equal the policy node's "
                       'max_linear_velocity_mps (m/s)', 'range': (1e-6, 5.0), 'read_only': True})
    gripper_joint_name: str = field(default='gripper_finger_distance', metadata={
        'description': 'joint in joint_states whose position is the gripper opening (m or rad)',
        'read_only': True})
    gripper_open_position: float = field(default=0.1, metadata={
        'description': 'position of gripper_joint_name when fully open (m or rad)',
        'range': (1e-6, 10.0), 'read_only': True})
    min_free_disk_mb: float = field(default=500.0, metadata={
        'description': 'recorder/start is refused when dataset_dir has less free space (MB)',
        'range': (0.0, 1e12), 'read_only': True})
    queue_size: int = field(default=512, metadata={
        'description': 'samples buffered for the writer thread; more are dropped and counted '
                       '(count)', 'range': (1, 1_000_000), 'read_only': True})
    image_format: str = field(default='raw', metadata={
        'description': "camera frames in the file: 'raw' (sensor_msgs/Image rgb8 on the camera "
                       'topic: lossless, a played bag feeds the policy), or CompressedImage on '
                       "<topic>/compressed: 'auto' (PNG up to 256x256 px, JPEG above), 'png' or "
                       "'jpeg'", 'read_only': True})
    jpeg_quality: int = field(default=95, metadata={
        'description': 'JPEG quality of stored frames (1-100)', 'range': (1, 100),
        'read_only': True})
    max_command_hold_s: float = field(default=DEFAULT_MAX_COMMAND_HOLD_S, metadata={
        'description': 'a frame after which no teleop twist was issued before the next frame '
                       'takes the previous twist if it is at most this old, else it has no row '
                       "(set it to command_mux's command_timeout_s) (s)", 'range': (0.0, 10.0),
        'read_only': True})
    record_button: int = field(default=0, metadata={
        'description': 'teleop/joy button index whose press toggles start/stop (-1: none)',
        'range': (-1, 63), 'read_only': True})
    success_on_stop: str = field(default='auto', metadata={
        'description': "episode success at stop: 'operator' (recorder/mark_success, else "
                       "unmarked_success), 'sim' (latest sim/success during the episode, else "
                       "false), 'auto' (the mark, else sim/success, else unmarked_success)",
        'read_only': True})
    unmarked_success: bool = field(default=True, metadata={
        'description': 'success of an episode nobody marked (policies auto and operator)',
        'read_only': True})
    default_task: str = field(default='', metadata={
        'description': "task when operator/next_task has suggested none ('' = refuse to start)",
        'read_only': True})
    max_duration_s: float = field(default=300.0, metadata={
        'description': 'an episode is stopped and saved after this long (s)',
        'range': (0.1, 86400.0), 'read_only': True})
    min_steps: int = field(default=1, metadata={
        'description': 'episodes with fewer aligned steps (frames with state and command) are '
                       'not saved but quarantined (count)', 'range': (1, 1_000_000),
        'read_only': True})
    chunk_compression: str = field(default='zstd', metadata={
        'description': "MCAP chunk compression: 'zstd', 'lz4' or 'none'", 'read_only': True})
    status_period_s: float = field(default=0.5, metadata={
        'description': 'recorder/status period while recording (s)', 'range': (0.05, 60.0),
        'read_only': True})
    flush_period_s: float = field(default=0.5, metadata={
        'description': 'the writer flushes the partial file at least this often (s)',
        'range': (0.01, 60.0), 'read_only': True})
    recovery_retry_period_s: float = field(default=10.0, metadata={
        'description': 'while a leftover partial file could not be recovered (e.g. a full '
                       'disk), recovery is retried this often; recording is refused meanwhile '
                       '(s)', 'range': (0.05, 3600.0), 'read_only': True})

    def __post_init__(self):
        if not self.dataset_dir:
            raise ValueError('dataset_dir must not be empty')
        for name in ('max_linear_velocity_mps', 'gripper_open_position', 'max_duration_s',
                     'status_period_s', 'flush_period_s', 'recovery_retry_period_s'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f'{name} must be a positive finite number, got {value!r}')
        if not (math.isfinite(self.min_free_disk_mb) and self.min_free_disk_mb >= 0):
            raise ValueError(f'min_free_disk_mb must be >= 0, got {self.min_free_disk_mb!r}')
        if self.queue_size < 1:
            raise ValueError(f'queue_size must be >= 1, got {self.queue_size!r}')
        if self.image_format not in RECORDER_IMAGE_FORMATS:
            raise ValueError(f'image_format must be one of {RECORDER_IMAGE_FORMATS}, '
                             f'got {self.image_format!r}')
        if not (isinstance(self.max_command_hold_s, (int, float))
                and math.isfinite(self.max_command_hold_s) and self.max_command_hold_s >= 0):
            raise ValueError(f'max_command_hold_s must be a finite number >= 0, '
                             f'got {self.max_command_hold_s!r}')
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f'jpeg_quality must be in 1..100, got {self.jpeg_quality!r}')
        if self.success_on_stop not in SUCCESS_POLICIES:
            raise ValueError(f'success_on_stop must be one of {SUCCESS_POLICIES}, '
                             f'got {self.success_on_stop!r}')
        if self.chunk_compression not in ('zstd', 'lz4', 'none'):
            raise ValueError(f"chunk_compression must be 'zstd', 'lz4' or 'none', "
                             f'got {self.chunk_compression!r}')
        if not self.gripper_joint_name:
            raise ValueError('gripper_joint_name must not be empty')
        if self.min_steps < 1:
            raise ValueError(f'min_steps must be >= 1, got {self.min_steps!r}')
