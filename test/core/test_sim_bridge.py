"""The scripted operator: a recorder that restarts mid-demo, commands slower than a step."""

import threading
import time

from active_finetune.sim.bridge import SimBridge, SimBridgeConfig
import numpy as np


class FakeOutputs:
    """Bridge outputs that keep the episode events and answer with a fake recorder's state."""

    def __init__(self):
        self.bridge = None
        self.lock = threading.Lock()
        self.state = None
        self.events = []

    def episode_event(self, event):
        with self.lock:
            self.events.append(event)

    def recorder_state(self):
        with self.lock:
            return self.state


class RestartingRecorder(FakeOutputs):
    """
    Bridge outputs with a fake recorder that is killed right after it starts recording.

    Its latched 'recording' stays the bridge's newest recorder/status (the dead process's last
    word); the press that should stop it reaches nobody; the restarted recorder then says
    'idle'.  From then on it records and saves normally.
    """

    def __init__(self):
        super().__init__()
        self.alive = True
        self.killed = False
        self.presses = []
        self.saved = []

    def publish_frame(self, frame):
        pass

    def publish_teleop(self, linear_mps, gripper):
        pass

    def press_record_button(self):
        with self.lock:
            demo_task = self.bridge.task
            self.presses.append((self.alive, None if self.state is None else self.state[0]))
            if not self.alive:
                # The restarted recorder comes up (too late to hear this press) and says idle.
                self.alive, self.state = True, ('idle', '')
                return
            if self.state is not None and self.state[0] == 'recording':
                self.saved.append(self.state[1])
                self.state = ('saved', self.state[1])
                return
            self.state = ('recording', demo_task)
            if not self.killed:
                self.killed, self.alive = True, False


def test_a_demo_lost_to_a_recorder_restart_is_demonstrated_again():
    outputs = RestartingRecorder()
    # Real-time stepping (no command mux here: the arm stays put and every demo runs to its
    # horizon, which is all the recorder bookkeeping needs).
    bridge = SimBridge(SimBridgeConfig(task='reach-v3', image_size=32, rate_hz=500.0,
                                       max_steps=60, scripted_operator=True,
                                       recorder_timeout_s=0.5), outputs)
    outputs.bridge = bridge
    bridge.start()
    try:
        assert bridge.demos.offer({'request_id': 7, 'task': 'reach-v3', 'done': False}) == 'queued'
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and not outputs.saved:
            time.sleep(0.05)
    finally:
        bridge.stop()
    assert bridge.error is None
    assert outputs.saved == ['reach-v3'], outputs.presses
    # start (heard, then the recorder dies), stop (lost), start again, stop (saved).
    assert outputs.presses[:4] == [(True, None), (False, 'recording'), (True, 'idle'),
                                   (True, 'recording')]
    demo_episodes = [e for e in outputs.events if e.kind == 'end' and e.request_id == 7]
    assert len(demo_episodes) == 2, 'request 7 was demonstrated twice'


class SlowCommandStream(FakeOutputs):
    """
    Bridge outputs whose teleop commands reach the robot ``delay_s`` later (a loaded machine).

    The delay is longer than a step, so a robot that stepped with whatever command is newest
    would execute each of the operator's commands one step late.  Halfway through the delay a
    zero twist stamped with the current time comes first (what the command mux sends while the
    operator's stream is stale), so neither "any new command" nor "a command stamped later than
    the operator's" is the operator's command.  The recorder confirms every press at once; frames
    of the demonstration are kept.
    """

    def __init__(self, delay_s):
        super().__init__()
        self.delay_s = delay_s
        self.frames = []

    def publish_frame(self, frame):
        if self.bridge is not None and self.bridge.demo_request_id is not None:
            self.frames.append(frame)

    def publish_teleop(self, linear_mps, gripper):
        stamp_s = time.time()
        commands = self.bridge.commands

        def arrive():
            commands.set_gripper(gripper)
            commands.set_twist(linear_mps, stamp_s)

        def mux_zero():
            commands.set_twist(np.zeros(3), time.time())
        threading.Timer(self.delay_s / 2, mux_zero).start()
        threading.Timer(self.delay_s, arrive).start()
        return stamp_s

    def press_record_button(self):
        with self.lock:
            recording = self.state is not None and self.state[0] == 'recording'
            self.state = ('saved' if recording else 'recording', self.bridge.task)


def test_a_demonstration_executes_each_command_for_its_frame_however_late_it_comes_back():
    from active_finetune.sim.metaworld_env import MetaWorldEnv, SimConfig
    from active_finetune.sim.operators import ScriptedOperator
    from active_finetune.sim.rollouts import episode_seed, PURPOSE_DEMO, run_episode
    config = SimBridgeConfig(task='reach-v3', image_size=32, rate_hz=50.0, max_steps=60,
                             scripted_operator=True, operator_noise_std=0.1,
                             record_start_delay_s=0.0)
    outputs = SlowCommandStream(delay_s=0.035)  # longer than a 20 ms step
    bridge = SimBridge(config, outputs)
    outputs.bridge = bridge
    bridge.start()
    try:
        assert bridge.demos.offer({'request_id': 4, 'task': 'reach-v3', 'done': False}) == 'queued'
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and not any(
                e.kind == 'end' and e.request_id == 4 for e in outputs.events):
            time.sleep(0.05)
    finally:
        bridge.stop()
    assert bridge.error is None
    end = next(e for e in outputs.events if e.kind == 'end' and e.request_id == 4)
    assert end.late_commands == 0, f'{end.late_commands} of {end.steps} steps ran late'
    # The same demonstration in-process: the expert's action executed at every step.
    seed = episode_seed(config.seed, PURPOSE_DEMO, 'reach-v3', 4)
    operator = ScriptedOperator('reach-v3', noise_std=config.operator_noise_std, seed=seed)
    with MetaWorldEnv(SimConfig(image_size=0, max_steps=config.max_steps)) as env:
        inproc = run_episode(env, 'reach-v3', seed, lambda obs: operator.act(obs.state))
    stepped = {frame.step: frame.ee_position_m for frame in outputs.frames if frame.step > 0}
    steps = min(len(inproc.actions) - 1, max(stepped))
    assert steps >= 10, (len(inproc.actions), sorted(stepped)[-3:])
    ros_path = np.stack([stepped[t] for t in range(1, steps + 1)])
    np.testing.assert_allclose(ros_path, inproc.proprio[1:steps + 1, :3], atol=1e-9)
