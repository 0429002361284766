"""Parameters of the trainer node, validated once (ROS-free, shared by node, runner and tests)."""

from dataclasses import dataclass, field
from pathlib import Path

from active_finetune.safety import DEFAULT_MAX_PROPRIO_STD, DEFAULT_WORKSPACE_MAX_M, \
    DEFAULT_WORKSPACE_MIN_M, ProprioLimits
from active_finetune.training.bc import FORGETTING_CONTROLS


@dataclass(frozen=True)
class TrainerSettings:
    """
    What the trainer node trains on, how, and where it writes.

    Field metadata carries each ROS parameter's description (see ``nodes/parameters.py``).
    """

    dataset_dir: str = field(default='data/episodes', metadata={
        'description': 'directory of recorded episodes (shared with the demo recorder)',
        'read_only': True})
    checkpoint_dir: str = field(default='data/checkpoints', metadata={
        'description': 'directory where fine-tuned checkpoint versions v0001, v0002, ... '
                       'are written',
        'read_only': True})
    initial_checkpoint: str = field(default='checkpoints/pretrained_mt10_skewed', metadata={
        'description': 'pretrained checkpoint directory used as version 0', 'read_only': True})
    demos_per_round: int = field(default=2, metadata={
        'description': 'B: fine-tune after every B new demonstrations (count)',
        'range': (1, 1000)})
    steps: int = field(default=300, metadata={
        'description': 'gradient steps per round (paper scale: about 3000)',
        'range': (1, 1000000)})
    steps_per_demo: int = field(default=0, metadata={
        'description': 'a round trains max(steps, steps_per_demo x demos it trains on) gradient '
                       'steps, so a round warm-started from the previous version gets more '
                       'steps as the dataset grows (0: always `steps`)',
        'range': (0, 100000)})
    batch_size: int = field(default=64, metadata={
        'description': 'behaviour-cloning batch size (samples)', 'range': (1, 4096)})
    learning_rate: float = field(default=3e-4, metadata={
        'description': 'Adam learning rate (1/step)', 'range': (1e-7, 1.0)})
    loss: str = field(default='mse', metadata={
        'description': "behaviour-cloning loss: 'mse' (squared error of the executed mean action) "
                       "or 'nll' (Gaussian negative log-likelihood)"})
    trunk_shift_copies: int = field(default=2, metadata={
        'description': 'random-shift augmentation of a policy with a frozen pretrained trunk: '
                       "the trunk's features of this many copies of every frame, each shifted "
                       'by up to 4 pixels, are computed once per round next to the unshifted '
                       'ones, and each training sample takes one of them at random (0: off; '
                       'no effect on a policy without a trunk, which shifts its images itself)',
        'range': (0, 16)})
    validation_fraction: float = field(default=0.1, metadata={
        'description': 'share of the demo frames held out of training to report a validation '
                       'loss (val_mse, next to val_mse_start of the starting policy)',
        'range': (0.0, 0.5)})
    forgetting_control: str = field(default='adaptive_prior', metadata={
        'description': f'forgetting control: one of {", ".join(FORGETTING_CONTROLS)}'})
    seed: int = field(default=0, metadata={
        'description': 'training seed (deterministic on the CPU)'})
    train_on_failed_demos: bool = field(default=False, metadata={
        'description': 'also train on episodes the operator marked as failed'})
    evaluate_episodes: int = field(default=0, metadata={
        'description': 'simulation episodes per task to evaluate each new checkpoint (0: off)',
        'range': (0, 1000)})
    evaluate_max_steps: int = field(default=150, metadata={
        'description': 'horizon of an evaluation episode (control steps)', 'range': (1, 10000)})
    cap_alpha_by_pretraining: bool = field(default=True, metadata={
        'description': "adaptive prior: cap each task's mixture weight at its share of the demos, "
                       'n_new / (n_new + n_pretraining), with the pretraining mix recorded in '
                       'initial_checkpoint (so a few demos of a well-pretrained task cannot '
                       'overwrite it); no effect when the checkpoint records no mix'})
    baseline_evaluation_path: str = field(default='', metadata={
        'description': 'JSON evaluation of initial_checkpoint with the same evaluate_episodes '
                       'and evaluate_max_steps (written by af-main-job); tasks still served by '
                       'the pretrained weights (adaptive prior, no demos) reuse its numbers '
                       "instead of being rolled out again ('' = evaluate every task)",
        'read_only': True})
    send_weights: bool = field(default=True, metadata={
        'description': 'serve the weights on trainer/checkpoint_data to subscribers that lack '
                       'the announced file (trainer/checkpoint_request), so no shared disk is '
                       'needed'})
    log_dir: str = field(default='auto', metadata={
        'description': "TensorBoard log directory; 'auto': <checkpoint_dir>/tensorboard, "
                       "'' (empty): no TensorBoard logs",
        'read_only': True})
    poll_period_s: float = field(default=1.0, metadata={
        'description': 'period of the check for a round to start or a round progressing (s); '
                       'episodes come from recorder/episode, the dataset directory is listed '
                       'only at start-up and on ~/rescan_episodes', 'range': (0.05, 60.0)})
    episode_cache_dir: str = field(default='auto', metadata={
        'description': "decoded episodes by sha256, shared by the rounds; 'auto': "
                       "<checkpoint_dir>/episode_cache, '' (empty): decode every round",
        'read_only': True})
    episode_cache_mb: float = field(default=2048.0, metadata={
        'description': 'bound of the decoded-episode cache; least recently used out first (MB)',
        'range': (0.0, 1e7), 'read_only': True})
    threads: int = field(default=1, metadata={
        'description': 'torch threads of the training process', 'range': (1, 256)})
    last_evaluation_workers: int = field(default=2, metadata={
        'description': 'simulator processes of an evaluation that starts after the task '
                       'selector announced its budget spent while no round trains (the '
                       "session's last evaluation: no demo or round needs the cores); every "
                       'other evaluation runs in one process beside them', 'range': (1, 64)})
    max_proprio_std: float = field(default=DEFAULT_MAX_PROPRIO_STD, metadata={
        'description': 'skip an episode with an end-effector coordinate further than this from '
                       "the base checkpoint's training mean (standard deviations of its "
                       'training data; 0 = no check)', 'range': (0.0, 1e6)})
    workspace_min_m: tuple = field(default=DEFAULT_WORKSPACE_MIN_M, metadata={
        'description': 'skip an episode with an end-effector position below this corner x, y, z '
                       'of the workspace box, robot base frame (m)'})
    workspace_max_m: tuple = field(default=DEFAULT_WORKSPACE_MAX_M, metadata={
        'description': 'skip an episode with an end-effector position above this corner x, y, z '
                       'of the workspace box, robot base frame (m)'})

    def __post_init__(self):
        if self.forgetting_control not in FORGETTING_CONTROLS:
            raise ValueError(f'forgetting_control must be one of {FORGETTING_CONTROLS}, '
                             f'got {self.forgetting_control!r}')
        if self.demos_per_round < 1 or self.steps < 1 or self.batch_size < 1:
            raise ValueError(f'demos_per_round, steps and batch_size must be >= 1, got '
                             f'{self.demos_per_round}, {self.steps}, {self.batch_size}')
        if self.loss not in ('mse', 'nll'):
            raise ValueError(f"loss must be 'mse' or 'nll', got {self.loss!r}")
        if not self.dataset_dir or not self.checkpoint_dir:
            raise ValueError('dataset_dir and checkpoint_dir must be set')
        for name in ('workspace_min_m', 'workspace_max_m'):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        ProprioLimits(self.workspace_min_m, self.workspace_max_m,
                      max_std=float(self.max_proprio_std))

    def tensorboard_dir(self):
        """
        Where the trainer writes TensorBoard logs.

        :return: directory path string, or '' for none
        """
        if self.log_dir == 'auto':
            return str(Path(self.checkpoint_dir) / 'tensorboard')
        return self.log_dir

    def episode_cache_path(self):
        """
        Where the rounds cache decoded episodes.

        :return: directory path string, or '' for no cache
        """
        if self.episode_cache_dir == 'auto':
            return str(Path(self.checkpoint_dir) / 'episode_cache')
        return self.episode_cache_dir

    def round_steps(self, demos):
        """
        Gradient steps of a round that trains on ``demos`` demonstrations.

        :param demos: number of demos in the round's dataset
        :return: int, max(steps, steps_per_demo * demos)
        """
        return max(self.steps, self.steps_per_demo * max(0, int(demos)))

    def train_kwargs(self, demos=0):
        """
        Keyword arguments of :class:`TrainConfig` for a round.

        :param demos: number of demos the round trains on (sets the steps, :meth:`round_steps`)
        :return: dict
        """
        return {'steps': self.round_steps(demos), 'batch_size': self.batch_size,
                'learning_rate': self.learning_rate, 'loss': self.loss,
                'trunk_shift_copies': self.trunk_shift_copies,
                'validation_fraction': self.validation_fraction,
                'forgetting_control': self.forgetting_control, 'seed': self.seed}
