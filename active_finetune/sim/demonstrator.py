"""
The scripted operator: it demonstrates ``operator/next_task`` requests on the simulated robot.

:class:`DemoRequests` turns the requests into demonstrations to run, once per request id.
:class:`Demonstrator` is the operator's state machine, driven between steps by the
:class:`~active_finetune.sim.robot.SimRobot` it is attached to: for each new request it resets the
robot to the requested task (seeded from the request id), presses record button 0, and every step
publishes the Meta-World scripted expert's action
(:class:`~active_finetune.sim.operators.ScriptedOperator`) as a teleop command; the robot then
steps with the command that comes back (``cmd/*`` through the command mux, so the sim acts only on
what the robot would receive).  When the episode ends it presses button 0 again.  A request that
arrives during a demonstration waits for its end; one that arrives while the policy drives
starts at once.  Like a person at the console it watches ``recorder/status``: it presses again
when a press was not confirmed, and demonstrates a request again whose recording was lost.
"""

import logging
import threading
import time

from active_finetune.sim.metaworld_env import validate_tasks
from active_finetune.sim.operators import ScriptedOperator
from active_finetune.sim.rollouts import PURPOSE_DEMO
import numpy as np

_LOG = logging.getLogger(__name__)


class DemoRequests:
    """
    Turn ``operator/next_task`` payloads into demonstrations to run, once per request id.

    Thread-safe: :meth:`offer` from a subscription, :meth:`take` from the stepping thread.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._seen = set()
        self._pending = None

    def offer(self, payload):
        """
        Consider a suggestion; a new request id with a task and ``done`` false becomes pending.

        :param payload: the decoded JSON dict
        :return: what was done with it: 'queued', 'duplicate', 'done' or 'no_task'
        :raises ValueError: for a payload without an int request_id, or an unknown task
        """
        if not isinstance(payload, dict):
            raise ValueError(f'operator/next_task must be a JSON object, got {payload!r}')
        request_id = payload.get('request_id')
        if isinstance(request_id, bool) or not isinstance(request_id, int):
            raise ValueError(f'operator/next_task needs an int request_id, got {request_id!r}')
        task = payload.get('task') or ''
        if payload.get('done'):
            return 'done'
        if not task:
            return 'no_task'
        with self._lock:
            if request_id in self._seen:
                return 'duplicate'
            validate_tasks([task])
            self._seen.add(request_id)
            self._pending = (request_id, task)
            return 'queued'

    def retry(self, request_id, task):
        """
        Queue a request again whose recording was lost (the recorder died during it).

        A newer request that arrived meanwhile wins.

        :param request_id: the lost request's id
        :param task: its task
        """
        with self._lock:
            if self._pending is None:
                self._pending = (request_id, task)

    def take(self):
        """
        Take the pending demonstration, if any.

        :return: (request_id, task) or None
        """
        with self._lock:
            pending, self._pending = self._pending, None
            return pending

    @property
    def has_pending(self):
        """:return: whether a demonstration waits to be run."""
        with self._lock:
            return self._pending is not None


class _Demo:
    """A demonstration in progress: its request and the scripted expert acting it."""

    def __init__(self, request_id, task, operator):
        self.request_id = request_id
        self.task = task
        self.operator = operator


class Demonstrator:
    """
    The scripted operator's state machine, run on the robot's stepping thread.

    ``outputs`` needs these methods: ``publish_teleop(linear_mps, gripper)``,
    ``press_record_button()`` and ``recorder_state()`` (the newest recorder/status as (state,
    task), or None before any arrived).

    :param config: :class:`~active_finetune.sim.bridge.SimBridgeConfig` (the operator reads
        ``scripted_operator``, ``operator_noise_std``, ``record_start_delay_s``,
        ``recorder_timeout_s`` and ``max_linear_velocity_mps``)
    :param outputs: the publisher side (the node)
    :param robot: the :class:`~active_finetune.sim.robot.SimRobot` it demonstrates on
    """

    def __init__(self, config, outputs, robot):
        self.config = config
        self.requests = DemoRequests()
        self._outputs = outputs
        self._robot = robot
        self._demo = None

    @property
    def active(self):
        """:return: whether a demonstration is in progress."""
        return self._demo is not None

    @property
    def request_id(self):
        """:return: the request id being demonstrated, or None."""
        demo = self._demo
        return None if demo is None else demo.request_id

    def start_next(self):
        """
        Start the pending demonstration, if scripted_operator is on and none is running.

        :return: whether a request was taken (even if the recorder then did not start)
        """
        if self._demo is None and self.config.scripted_operator:
            pending = self.requests.take()
            if pending is not None:
                self._start(*pending)
                return True
        return False

    def act(self, state):
        """
        Publish the scripted expert's action for ``state`` as a teleop command.

        :param state: (39,) Meta-World state
        :return: the teleop twist's header stamp (its issue time), or None when the outputs do
            not say
        """
        action = self._demo.operator.act(state)
        return self._outputs.publish_teleop(
            action[:3].astype(np.float64) * self.config.max_linear_velocity_mps,
            float(action[3]))

    def _start(self, request_id, task):
        robot = self._robot
        robot.reset(task, PURPOSE_DEMO, request_id)
        self._demo = _Demo(request_id, task, ScriptedOperator(
            task, noise_std=self.config.operator_noise_std, seed=robot.seed))
        _LOG.info('demonstrating %s for request %d (seed %d)', task, request_id, robot.seed)
        if not self._press_until(lambda state: state[0] == 'recording' and state[1] == task,
                                 f'start recording {task}'):
            _LOG.error('the recorder did not start recording %s for request %d; skipping it',
                       task, request_id)
            self._demo = None
            return
        if self.config.record_start_delay_s > 0:
            robot.stopping.wait(self.config.record_start_delay_s)
        # A fresh frame right before the first action, for the recorder and the policy node.
        robot.republish()

    def _press_until(self, confirmed, what, tries=3):
        """
        Press the record button and wait for recorder/status to show ``confirmed``.

        A person at the console presses again when nothing happened; so does this operator.

        :param confirmed: predicate on (state, task)
        :param what: for the log
        :param tries: presses before giving up
        :return: True when confirmed (always True with recorder_timeout_s 0)
        """
        timeout_s = self.config.recorder_timeout_s
        stopping = self._robot.stopping
        for attempt in range(tries):
            self._outputs.press_record_button()
            if timeout_s <= 0:
                return True
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not stopping.is_set():
                state = self._outputs.recorder_state()
                if state is not None and confirmed(state):
                    return True
                stopping.wait(0.05)
            _LOG.warning('press %d to %s not confirmed by recorder/status within %.1f s',
                         attempt + 1, what, timeout_s)
        return False

    def end(self, success):
        """
        End the running demonstration: zero command, stop press, a retry if it was lost.

        :param success: whether its episode succeeded (False when the robot stopped)
        """
        demo, self._demo = self._demo, None
        self._outputs.publish_teleop(np.zeros(3), 0.0)
        state = self._outputs.recorder_state()
        if self.config.recorder_timeout_s <= 0 or state is None or state[0] == 'recording':
            self._press_until(lambda st: st[0] != 'recording', f'stop recording {demo.task}')
            state = self._outputs.recorder_state()
            # Only a recorder that has finished no episode since it started shows 'idle': it
            # restarted during the demo (the 'recording' seen was the old process's last word
            # and the stop press reached nobody), so nothing of this demo was saved.
            lost = state is not None and state[0] == 'idle'
        else:
            lost = True  # the recorder stopped or restarted before the demo ended
        if self.config.recorder_timeout_s > 0 and lost and not self._robot.stopping.is_set():
            # Like a person who sees the recorder restarted mid-demo: the demo is redone.
            _LOG.warning('recording of request %d (%s) was lost (recorder now %r); '
                         'demonstrating it again', demo.request_id, demo.task, state[0])
            self.requests.retry(demo.request_id, demo.task)
        _LOG.info('demonstration of %s for request %d ended after %d steps (success %s)',
                  demo.task, demo.request_id, self._robot.steps, success)
