"""The simulation bridge's scripted operator against a recorder that restarts during a demo."""

import threading
import time

from active_finetune.sim.bridge import SimBridge, SimBridgeConfig


class RestartingRecorder:
    """
    Bridge outputs with a fake recorder that is killed right after it starts recording.

    Its latched 'recording' stays the bridge's newest recorder/status (the dead process's last
    word); the press that should stop it reaches nobody; the restarted recorder then says
    'idle'.  From then on it records and saves normally.
    """

    def __init__(self):
        self.bridge = None
        self.lock = threading.Lock()
        self.state = None
        self.alive = True
        self.killed = False
        self.presses = []
        self.saved = []
        self.events = []

    def publish_frame(self, frame):
        pass

    def publish_teleop(self, linear_mps, gripper):
        pass

    def episode_event(self, event):
        with self.lock:
            self.events.append(event)

    def recorder_state(self):
        with self.lock:
            return self.state

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
