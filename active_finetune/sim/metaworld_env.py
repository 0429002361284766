"""Multi-task Meta-World environment with camera images and seeded resets."""

from dataclasses import dataclass
import logging
import os

from active_finetune.data.episode import PROPRIO_DIM
import numpy as np

_LOG = logging.getLogger(__name__)

MT10_TASKS = (
    'reach-v3', 'push-v3', 'pick-place-v3', 'door-open-v3', 'drawer-open-v3',
    'drawer-close-v3', 'button-press-topdown-v3', 'peg-insert-side-v3',
    'window-open-v3', 'window-close-v3',
)
STATE_DIM = 39
"""Meta-World's flat state: hand, gripper, objects, previous frame, goal."""

FREE_CAMERAS = {
    'workspace': {'lookat': (0.0, 0.72, 0.1), 'distance': 1.1, 'azimuth': 140.0,
                  'elevation': -42.0},
}
"""
Cameras placed by pose rather than named in the model: MuJoCo free cameras (look-at point in m,
distance in m, azimuth and elevation in degrees).  'workspace' frames the table where the tasks
happen, as a lab places its camera, so objects and goals are several pixels wide even at 96x96;
Meta-World's 'corner3' shows the whole scene and leaves them 1-3 px wide.
"""

SAWYER_ARM_JOINTS = tuple(f'right_j{i}' for i in range(7))
SAWYER_GRIPPER_JOINTS = ('r_close', 'l_close')


class UnknownTaskError(ValueError):
    """Raised for a task name that is not a Meta-World v3 environment."""


def available_tasks():
    """
    List every Meta-World v3 task name.

    :return: sorted task names such as ``'reach-v3'``
    """
    import metaworld
    suffix = '-goal-observable'
    return sorted(n[:-len(suffix)] for n in metaworld.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE)


def validate_tasks(tasks):
    """
    Check that every name is a Meta-World v3 task.

    :param tasks: task names
    :return: the names as a tuple
    :raises UnknownTaskError: naming the first unknown task and the valid ones
    """
    known = set(available_tasks())
    for task in tasks:
        if task not in known:
            raise UnknownTaskError(f'unknown task {task!r}; '
                                   f'Meta-World v3 tasks are: {sorted(known)}')
    if len(set(tasks)) != len(tasks):
        raise UnknownTaskError(f'task list has duplicates: {list(tasks)}')
    return tuple(tasks)


@dataclass(frozen=True)
class SimConfig:
    """Settings of the simulated robot."""

    image_size: int = 96
    """Square camera image side, pixels; 0 means state-only (no rendering)."""
    camera: str = 'workspace'
    """A camera of the Meta-World model (e.g. 'corner3') or a key of :data:`FREE_CAMERAS`."""
    max_steps: int = 200
    """Episode horizon in control steps."""

    def __post_init__(self):
        if self.image_size < 0 or self.image_size > 1024:
            raise ValueError(f'image_size must be in [0, 1024], got {self.image_size}')
        if self.max_steps < 1:
            raise ValueError(f'max_steps must be >= 1, got {self.max_steps}')

    @property
    def render(self):
        """Whether observations include a camera image."""
        return self.image_size > 0


@dataclass
class Observation:
    """What the policy sees at one control step."""

    proprio: np.ndarray
    """End-effector position x, y, z (m) and gripper opening in [0, 1]."""
    state: np.ndarray
    """Meta-World's 39-d state (privileged; state-only policies use it)."""
    image: np.ndarray | None = None
    """RGB uint8 image (H, W, 3), or None in state-only mode."""


class MetaWorldEnv:
    """
    One Meta-World task at a time, switchable, with seeded resets and an optional camera.

    Use as a context manager (or call :meth:`close`) so the renderer is released explicitly.
    """

    def __init__(self, config=SimConfig()):
        """
        Build the environment; tasks are loaded lazily on first reset.

        :param config: simulator settings
        """
        if config.render:
            os.environ.setdefault('MUJOCO_GL', 'egl')
        self.config = config
        self._envs = {}
        self._renderers = {}
        self.task = None
        self._env = None
        self.steps = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Release renderers and environments."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        self._env = None

    def _get_env(self, task):
        if task not in self._envs:
            import metaworld
            key = f'{task}-goal-observable'
            if key not in metaworld.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE:
                validate_tasks([task])
            env = metaworld.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[key](seed=0)
            env.max_path_length = max(env.max_path_length, self.config.max_steps + 1)
            self._envs[task] = env
        return self._envs[task]

    def _get_renderer(self, task):
        if task not in self._renderers:
            import mujoco
            env = self._envs[task]
            size = self.config.image_size
            renderer = mujoco.Renderer(env.model, size, size)
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                         mujoco.mjtRndFlag.mjRND_SKYBOX):
                renderer.scene.flags[flag] = 0
            self._renderers[task] = renderer
        return self._renderers[task]

    def reset(self, task, seed):
        """
        Start an episode of ``task`` with object and goal positions drawn from ``seed``.

        :param task: Meta-World v3 task name
        :param seed: integer seed; the same seed gives the same initial scene
        :return: the first :class:`Observation`
        """
        env = self._get_env(task)
        # Seeded sampling inside Meta-World: its resets re-sample until the scene is valid, so a
        # frozen vector could loop forever.
        env.seed(int(seed) % (2**32))
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        self._state, _ = env.reset()
        # Meta-World moves the goal site after its last kinematics pass of the reset, so without
        # this the first image shows the goal where an earlier scene had it (one frame per
        # episode, in demos and evaluations alike).
        import mujoco
        mujoco.mj_kinematics(env.model, env.data)
        self._env = env
        self.task = task
        self.steps = 0
        self.success = False
        return self._observe()

    def step(self, action):
        """
        Apply a normalised action for one control step.

        :param action: (4,) end-effector velocity x, y, z and gripper, clipped to [-1, 1]
        :return: (observation, success, done)
        :raises RuntimeError: if called before :meth:`reset`
        """
        if self._env is None:
            raise RuntimeError('step() called before reset()')
        action = np.clip(np.nan_to_num(np.asarray(action, dtype=np.float64)), -1.0, 1.0)
        self._state, _, _, _, info = self._env.step(action)
        self.steps += 1
        self.success = self.success or bool(info['success'])
        done = self.success or self.steps >= self.config.max_steps
        return self._observe(), self.success, done

    def _observe(self):
        state = self._state.astype(np.float32)
        proprio = np.empty(PROPRIO_DIM, dtype=np.float32)
        proprio[:3] = state[:3]
        proprio[3] = state[3]
        image = None
        if self.config.render:
            renderer = self._get_renderer(self.task)
            renderer.update_scene(self._env.data, camera=self._camera())
            image = renderer.render()[::-1, ::-1].copy()
        return Observation(proprio=proprio, state=state, image=image)

    def _camera(self):
        pose = FREE_CAMERAS.get(self.config.camera)
        if pose is None:
            return self.config.camera
        import mujoco
        camera = mujoco.MjvCamera()
        camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        camera.lookat[:] = pose['lookat']
        camera.distance = pose['distance']
        camera.azimuth = pose['azimuth']
        camera.elevation = pose['elevation']
        return camera

    def camera_fovy_deg(self):
        """
        Return the vertical field of view of the rendered camera.

        :return: degrees
        :raises RuntimeError: if called before :meth:`reset`
        """
        if self._env is None:
            raise RuntimeError('camera_fovy_deg() called before reset()')
        if self.config.camera in FREE_CAMERAS:
            return float(self._env.model.vis.global_.fovy)
        return float(self._env.model.cam(self.config.camera).fovy[0])

    def joint_positions(self):
        """
        Read the robot's joint positions.

        :return: dict joint name -> position (rad for the arm, m for the gripper fingers)
        """
        data = self._env.data
        return {name: float(data.joint(name).qpos[0])
                for name in SAWYER_ARM_JOINTS + SAWYER_GRIPPER_JOINTS}

    def current_state(self):
        """
        Return the privileged simulator state of the running episode.

        :return: (39,) float32
        """
        return self._state.astype(np.float32)
