"""
A demo recorded as the ROS graph records it trains on the same rows as one collected in-process.

The simulation bridge (its ROS-free core, scripted operator) runs the demonstration; its outputs
play the nodes between it and the recorder core: sensors of a frame published with one stamp in
the sim bridge node's order (image first, so the recorder receives it before the state of the
same step), the teleop command fed back as the command mux would, the record button pressed.
"""

import itertools
import threading

from active_finetune.data.mcap_episode import load_episode
from active_finetune.data.recorder import EpisodeRecorder, RecorderSettings
from active_finetune.sim.bridge import SimBridge, SimBridgeConfig
from active_finetune.sim.metaworld_env import MetaWorldEnv, SimConfig
from active_finetune.sim.operators import ScriptedOperator
from active_finetune.sim.rollouts import episode_seed, PURPOSE_DEMO, run_episode
import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)

TASK = 'reach-v3'
REQUEST_ID = 3
STEPS = 25  # the scripted reach does not succeed this early, so both runs last STEPS steps
IMAGE_SIZE = 96  # the policy's input size


class RecorderGraph:
    """
    Bridge outputs wired to an :class:`EpisodeRecorder` the way the nodes connect them.

    A message's stamp is the bridge's clock; its log time (arrival at the recorder) is a later
    tick of a second clock, in the order the nodes publish.
    """

    def __init__(self, recorder):
        self.recorder = recorder
        self.bridge = None
        self._ticks = itertools.count(1)
        self._lock = threading.Lock()

    def now_s(self):
        """Bridge clock: 1 ms per reading."""
        with self._lock:
            return 1_700_000_000.0 + next(self._ticks) * 1e-3

    def _arrival_ns(self, stamp_s):
        return int(round(stamp_s * 1e9)) + 100_000 * next(self._ticks)

    def publish_frame(self, frame):
        stamp_ns = int(round(frame.stamp_s * 1e9))
        recorder = self.recorder
        recorder.add_image(frame.image, stamp_ns, 'camera',
                           log_time_ns=self._arrival_ns(frame.stamp_s))
        recorder.add_joint_state(list(frame.joint_positions),
                                 list(frame.joint_positions.values()), stamp_ns=stamp_ns,
                                 log_time_ns=self._arrival_ns(frame.stamp_s))
        recorder.add_ee_pose(frame.ee_position_m, stamp_ns=stamp_ns,
                             log_time_ns=self._arrival_ns(frame.stamp_s))

    def publish_teleop(self, linear_mps, gripper):
        stamp_s = self.now_s()
        self.recorder.add_twist(linear_mps, stamp_ns=int(round(stamp_s * 1e9)),
                                log_time_ns=self._arrival_ns(stamp_s))
        self.recorder.add_gripper(gripper, log_time_ns=self._arrival_ns(stamp_s))
        self.bridge.commands.set_gripper(gripper)  # through the mux to cmd/*
        self.bridge.commands.set_twist(linear_mps)

    def press_record_button(self):
        if self.recorder.active is None:
            self.recorder.start(self.bridge.task, request_id=self.bridge.demo_request_id)
        else:
            self.recorder.stop()

    def recorder_state(self):
        return None

    def episode_event(self, event):
        pass


def record_through_the_bridge(tmp_path):
    results = []
    finished = threading.Event()

    def on_finished(result):
        results.append(result)
        finished.set()

    recorder = EpisodeRecorder(RecorderSettings(
        dataset_dir=str(tmp_path / 'episodes'), min_free_disk_mb=0.0,
        max_linear_velocity_mps=0.25, gripper_open_position=0.1), on_finished=on_finished)
    graph = RecorderGraph(recorder)
    bridge = SimBridge(SimBridgeConfig(
        task=TASK, image_size=IMAGE_SIZE, rate_hz=0.0, max_steps=STEPS,
        success_hold_steps=1000, scripted_operator=True, record_start_delay_s=0.0,
        recorder_timeout_s=0.0, max_linear_velocity_mps=0.25, gripper_open_position=0.1),
        graph, now_s=graph.now_s)
    graph.bridge = bridge
    bridge.start()
    try:
        assert bridge.demos.offer({'request_id': REQUEST_ID, 'task': TASK, 'done': False}) \
            == 'queued'
        finished.wait(120.0)
    finally:
        bridge.stop()
    assert bridge.error is None
    assert recorder.wait_idle(30.0)
    assert results and results[0]['state'] == 'saved', results
    return results[0]


def test_a_demo_recorded_through_the_recorder_gives_the_in_process_rows(tmp_path):
    saved = record_through_the_bridge(tmp_path)
    recorded = load_episode(saved['path'], image_size=(IMAGE_SIZE, IMAGE_SIZE))
    seed = episode_seed(0, PURPOSE_DEMO, TASK, REQUEST_ID)
    with MetaWorldEnv(SimConfig(image_size=IMAGE_SIZE, max_steps=STEPS)) as env:
        operator = ScriptedOperator(TASK, seed=seed)
        in_process = run_episode(env, TASK, seed, lambda o: operator.act(o.state))
    assert len(in_process) == STEPS and not in_process.success
    # One frame per step plus the final observation; every frame but that last one is a row.
    assert int(recorded.metadata['frames']) == STEPS + 1
    assert len(recorded) == saved['steps'] == STEPS
    assert recorded.metadata['frames_dropped'] == {'no_state': 0, 'no_command': 0,
                                                   'last_frame': 1}
    assert recorded.metadata['commands_held'] == 0
    np.testing.assert_allclose(recorded.proprio, in_process.proprio, rtol=0, atol=1e-6)
    np.testing.assert_allclose(recorded.actions, in_process.actions, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(recorded.images, in_process.images)  # lossless at 96x96
    assert np.abs(np.diff(in_process.actions[:, :3], axis=0)).max() > 1e-3, \
        'the actions change from step to step, so a one-step shift would show'
