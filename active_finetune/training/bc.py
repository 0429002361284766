"""
Behaviour cloning for task-conditioned Gaussian policies.

With forgetting control for fine-tuning.
"""

import copy
from dataclasses import dataclass
import logging

from active_finetune.policy.inference import resize_image
from active_finetune.policy.model import (
    ENCODER_DIM, gaussian_nll, mix_gaussians, ObservationBatch, with_adaptive_prior)
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

_LOG = logging.getLogger(__name__)

FORGETTING_CONTROLS = ('adaptive_prior', 'l2_init', 'none')


class EmptyDatasetError(ValueError):
    """Raised when training is asked to run on no data."""


@dataclass(frozen=True)
class TrainConfig:
    """Behaviour-cloning hyper-parameters."""

    steps: int = 3000
    batch_size: int = 128
    learning_rate: float = 3e-4
    lr_schedule: str = 'constant'
    """'constant', or 'cosine': the network's learning rate decays to 0 over the steps."""
    weight_decay: float = 0.0
    seed: int = 0
    image_shift_px: int = 4
    """
    Random-shift augmentation of images (pad and crop), pixels; 0 turns it off.  Not applied to
    a policy with a frozen pretrained trunk: the trunk's features of every frame are computed
    once per round (:func:`trunk_features`), which is what makes its rounds fast.
    """
    trunk_shift_copies: int = 0
    """
    Random-shift augmentation for a policy with a frozen pretrained trunk: besides each frame's
    trunk features, those of this many copies shifted by up to ``image_shift_px`` (a new random
    shift per frame and copy) are computed once per round, and every batch row takes one of the
    ``1 + trunk_shift_copies`` versions at random.  Costs that many more trunk passes per round.
    0 = off (the unshifted features only).
    """
    forgetting_control: str = 'adaptive_prior'
    """
    'adaptive_prior' (a frozen pretrained copy mixed in per task), 'l2_init' (L2 to the
    pretrained weights) or 'none'.
    """
    alpha_penalty: float = 0.1
    """
    Conservative penalty on the mixture weight alpha(c) of demonstrated tasks, per task; tasks
    without demos are gated to alpha = 0 exactly (the pretrained policy).
    """
    alpha_logit_travel: float = 8.0
    """
    Largest change of a task's mixture logit in one round: the logits' Adam learning rate is this
    divided by the steps they train, so alpha can go from 0.5 to above 0.99 in any round length.
    """
    alpha_start_fraction: float = 0.5
    """
    Share of a round's steps before the mixture logits start to learn: the fine-tuned network
    first fits the new demos, then alpha(c) weighs it against the pretrained one (learning both
    from the start pushed a newly demonstrated task's alpha down while the network was still
    worse than pi_0 on it).
    """
    l2_init_weight: float = 1e-2
    loss: str = 'nll'
    """
    'nll' (Gaussian negative log-likelihood) or 'mse' (squared error of the mean).  With a few
    demos, NLL lets the network raise its predicted std where it fits badly instead of fitting
    the mean, which is what the robot executes; the trainer node fine-tunes with 'mse'.
    """
    state_aux_weight: float = 0.0
    """
    Weight of an auxiliary loss for image policies trained on simulator demos: a linear head on
    the image encoder's output predicts the normalised privileged state (object, goal and hand
    positions), so the encoder learns to locate what the actions depend on.  The head is
    discarded after training (checkpoints and serving are unchanged); episodes without states
    (a real robot's) cannot use it.  0 = off.
    """
    ema_decay: float = 0.0
    """
    Exponential moving average of the fine-tuned network's weights over the round's steps
    (:class:`torch.optim.swa_utils.AveragedModel`); the returned policy carries the average.
    0 = off (the last step's weights).
    """
    validation_fraction: float = 0.0
    """
    Share of the demo frames held out of training (drawn per seed); the loss on them
    (``val_mse``, squared error of the executed mean action) is reported every 100 steps next to
    the same number for the starting policy (``val_mse_start``).  0 = train on every frame.
    """

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f'steps must be >= 0, got {self.steps}')
        if self.batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {self.batch_size}')
        if not self.learning_rate > 0:
            raise ValueError(f'learning_rate must be > 0, got {self.learning_rate}')
        if self.forgetting_control not in FORGETTING_CONTROLS:
            raise ValueError(f'forgetting_control must be one of {FORGETTING_CONTROLS}, '
                             f'got {self.forgetting_control!r}')
        if self.lr_schedule not in ('constant', 'cosine'):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', "
                             f'got {self.lr_schedule!r}')
        if self.loss not in ('nll', 'mse'):
            raise ValueError(f"loss must be 'nll' or 'mse', got {self.loss!r}")
        if self.alpha_penalty < 0 or self.l2_init_weight < 0:
            raise ValueError(f'alpha_penalty and l2_init_weight must be >= 0, got '
                             f'{self.alpha_penalty}, {self.l2_init_weight}')
        if not self.alpha_logit_travel > 0:
            raise ValueError(f'alpha_logit_travel must be > 0, got {self.alpha_logit_travel}')
        if self.state_aux_weight < 0:
            raise ValueError(f'state_aux_weight must be >= 0, got {self.state_aux_weight}')
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f'validation_fraction must be in [0, 1), '
                             f'got {self.validation_fraction}')
        if self.trunk_shift_copies < 0:
            raise ValueError(f'trunk_shift_copies must be >= 0, got {self.trunk_shift_copies}')
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f'ema_decay must be in [0, 1), got {self.ema_decay}')
        if not 0.0 <= self.alpha_start_fraction < 1.0:
            raise ValueError(f'alpha_start_fraction must be in [0, 1), '
                             f'got {self.alpha_start_fraction}')


class DemoDataset:
    """
    All (observation, action) rows of a list of episodes, as flat arrays.

    :param episodes: list of :class:`Episode`
    :param config: the policy's :class:`PolicyConfig` (task ids and image size come from it)
    :param keep_states: for an image policy, also keep the episodes' privileged states (all of
        them must have states), for :attr:`TrainConfig.state_aux_weight`
    :raises EmptyDatasetError: if there are no rows
    :raises KeyError: for an episode of a task the policy does not know
    """

    def __init__(self, episodes, config, keep_states=False):
        if not episodes:
            raise EmptyDatasetError('no episodes to train on')
        self.task_ids = np.concatenate([np.full(len(e), config.task_id(e.task)) for e in episodes])
        self.proprio = np.concatenate([e.proprio for e in episodes])
        self.actions = np.concatenate([e.actions for e in episodes])
        self.images = None
        self.states = None
        if config.observation == 'image':
            missing = [e.task for e in episodes if e.images is None]
            if missing:
                raise ValueError(f'image policy, but episodes of {missing[:3]} have no images')
            self.images = np.concatenate([
                np.stack([resize_image(im, config.image_size) for im in e.images])
                for e in episodes])
        if config.observation == 'state' or keep_states:
            missing = [e.task for e in episodes if e.states is None]
            if missing:
                what = 'state policy' if config.observation == 'state' else 'keep_states'
                raise ValueError(f'{what}, but episodes of {missing[:3]} have no states')
            self.states = np.concatenate([e.states for e in episodes])
        self.task_counts = {}
        for e in episodes:
            self.task_counts[e.task] = self.task_counts.get(e.task, 0) + 1

    def __len__(self):
        return len(self.actions)

    def batch(self, idx, device):
        """
        Rows ``idx`` as tensors.

        :param idx: integer index array
        :param device: torch device
        :return: (ObservationBatch, actions tensor)
        """
        batch = ObservationBatch(
            task_ids=torch.from_numpy(self.task_ids[idx]),
            proprio=torch.from_numpy(self.proprio[idx]),
            images=None if self.images is None else torch.from_numpy(self.images[idx]),
            states=None if self.states is None else torch.from_numpy(self.states[idx]))
        return batch.to(device), torch.from_numpy(self.actions[idx]).to(device)


def fit_normalisation(policy, dataset):
    """
    Set the policy's observation normalisation from a dataset.

    :param policy: a :class:`TaskPolicy`
    :param dataset: a :class:`DemoDataset`
    """
    state_mean = state_std = None
    if dataset.states is not None:
        state_mean, state_std = dataset.states.mean(0), dataset.states.std(0)
    policy.set_normalisation(dataset.proprio.mean(0), dataset.proprio.std(0), state_mean,
                             state_std)


def random_shift(images, pad, generator):
    """
    DrQ-style augmentation: replicate-pad and crop back at a random offset per image.

    :param images: (B, H, W, 3) uint8 tensor
    :param pad: pixels
    :param generator: torch.Generator
    :return: augmented (B, H, W, 3) uint8 tensor
    """
    if pad <= 0:
        return images
    b, h, w, _ = images.shape
    x = F.pad(images.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode='replicate')
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy.view(b, 1) + torch.arange(h).view(1, h)).to(x.device)
    cols = (dx.view(b, 1) + torch.arange(w).view(1, w)).to(x.device)
    x = x[torch.arange(b).view(b, 1, 1), :, rows.view(b, h, 1), cols.view(b, 1, w)]
    return x.to(torch.uint8)


def trunk_features(policy, images, device, chunk=256, shift=None):
    """
    Compute the frozen pretrained trunk's features of every frame once.

    :param policy: a :class:`TaskPolicy` with a pretrained trunk
    :param images: uint8 array (N, H, W, 3), e.g. a :class:`DemoDataset`'s ``images``
    :param device: torch device
    :param chunk: frames per forward pass
    :param shift: None, or (pad, torch.Generator): features of the frames randomly shifted by up
        to ``pad`` pixels (:func:`random_shift`, a new shift per frame)
    :return: float16 tensor (N, C, h, w) on ``device`` (half the memory of float32)
    """
    out = []
    for start in range(0, len(images), chunk):
        batch = torch.from_numpy(images[start:start + chunk])
        if shift is not None:
            batch = random_shift(batch, *shift)
        out.append(policy.image_features(batch.to(device)).half())
    return torch.cat(out)


def anchor_weights(policy, anchor=None):
    """
    Weights that L2-to-init pulls towards: the pretrained policy pi0.

    :param policy: the policy fine-tuning starts from
    :param anchor: the pretrained :class:`TaskPolicy`, or None
    :return: list of tensors, one per parameter of ``policy.net``
    :raises ValueError: if ``anchor`` has another architecture
    """
    if anchor is not None:
        source = anchor.prior if anchor.config.adaptive_prior else anchor.net
    elif policy.config.adaptive_prior:
        source = policy.prior
    else:
        _LOG.debug('no anchor given: L2 pulls towards the starting weights')
        source = policy.net
    params = [p.detach().clone().to(policy.device) for p in source.parameters()]
    shapes = [tuple(p.shape) for p in policy.net.parameters()]
    if [tuple(p.shape) for p in params] != shapes:
        raise ValueError('the L2 anchor has another architecture than the policy being trained')
    return params


class _StateAuxiliary:
    """
    Auxiliary state prediction from the image encoder (:attr:`TrainConfig.state_aux_weight`).

    A forward hook keeps the encoder's output of the training forward pass, so the images are
    encoded once; a linear head maps it to the dataset's normalised state dimensions that vary.

    :param model: the image :class:`TaskPolicy` being trained
    :param dataset: a :class:`DemoDataset` built with ``keep_states=True``
    :raises ValueError: for a state policy or a dataset without states
    """

    def __init__(self, model, dataset):
        if model.config.observation != 'image' or dataset.states is None:
            raise ValueError('state_aux_weight needs an image policy and a dataset with states '
                             '(DemoDataset(..., keep_states=True) of simulator episodes)')
        std = dataset.states.std(0)
        self.dims = torch.as_tensor(np.flatnonzero(std > 1e-3), device=model.device)
        self.mean = torch.as_tensor(dataset.states.mean(0), device=model.device)[self.dims]
        self.std = torch.as_tensor(std, device=model.device)[self.dims]
        encoder = model.net.backbone.encoder
        self.head = torch.nn.Linear(ENCODER_DIM, len(self.dims)).to(model.device)
        self._encoded = None
        self._hook = encoder.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output):
        self._encoded = output

    def loss(self, batch):
        """
        Squared error of the predicted normalised state, after the batch's forward pass.

        :param batch: the :class:`ObservationBatch` just passed through the model
        :return: scalar tensor
        """
        target = (batch.states[:, self.dims].float() - self.mean) / self.std
        return (self.head(self._encoded) - target).pow(2).mean()

    def close(self):
        """Remove the hook; the model is left as it was built."""
        self._hook.remove()
        self._encoded = None


def _bc_loss(config, mean, log_std, target):
    if config.loss == 'nll':
        return gaussian_nll(mean, log_std, target).mean()
    return (mean - target).pow(2).sum(-1).mean()


def split_rows(n_rows, fraction, rng):
    """
    Split row indices into training and held-out validation rows.

    :param n_rows: rows in the dataset
    :param fraction: share held out (0: none); at least one row is kept for training
    :param rng: numpy Generator
    :return: (training indices, validation indices), sorted int arrays
    """
    n_val = min(int(round(fraction * n_rows)), n_rows - 1) if fraction > 0 else 0
    if n_val <= 0:
        # Draws nothing from rng: training without validation is unchanged for a seed.
        return np.arange(n_rows), np.arange(0)
    order = rng.permutation(n_rows)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _rows(dataset, idx, device, features=None, version=None):
    """
    Rows ``idx`` of ``dataset`` as a batch, with the trunk's cached features instead of images.

    :param dataset: :class:`DemoDataset`
    :param idx: row indices
    :param device: torch device
    :param features: :func:`trunk_features` of the dataset (N, ...), or with ``version`` those
        of its shifted copies too (1 + copies, N, ...); None to keep the images
    :param version: per row, which of the stacked feature versions to take (0: unshifted)
    :return: (ObservationBatch, actions tensor)
    """
    batch, target = dataset.batch(idx, device)
    if features is not None:
        rows = torch.as_tensor(idx, device=device)
        batch.image_features = features[rows] if version is None \
            else features[torch.as_tensor(version, device=device), rows]
        batch.images = None
    return batch, target


@torch.no_grad()
def mean_action_mse(model, dataset, rows, batch_size=256, features=None):
    """
    Squared error of the executed (mean) action on some rows of a dataset.

    :param model: a :class:`TaskPolicy` (in eval mode for a deterministic answer)
    :param dataset: :class:`DemoDataset`
    :param rows: row indices
    :param batch_size: rows per forward pass
    :param features: :func:`trunk_features` of the dataset (a frozen-trunk policy), or None
    :return: mean over rows of the summed squared error, or None for no rows
    """
    if len(rows) == 0:
        return None
    total = 0.0
    for start in range(0, len(rows), batch_size):
        batch, target = _rows(dataset, rows[start:start + batch_size], model.device, features)
        mean, _, _ = model(batch)
        total += float((mean - target).pow(2).sum(-1).sum())
    return total / len(rows)


def evidence_gate(task_counts, pretraining_counts, tasks):
    """
    Largest mixture weight each task may give the fine-tuned network: its share of the demos.

    ``n_ft / (n_ft + n_pre)`` with n_ft the task's fine-tuning demos and n_pre the demos the
    pretrained policy learnt it from: one new demo of a task pretrained on 40 may move its output
    by at most 1/41, so a handful of demos cannot overwrite what pretraining knew (the network
    fits one demo perfectly, so alpha learnt on that demo alone would go to 1); a task without
    pretraining demos gets 1, a task without fine-tuning demos 0.

    :param task_counts: dict task -> fine-tuning demos
    :param pretraining_counts: dict task -> pretraining demos (missing = 0)
    :param tasks: the policy's tasks, in order
    :return: list of floats in [0, 1], one per task
    """
    gate = []
    for task in tasks:
        n_ft = float(task_counts.get(task, 0))
        n_pre = max(0.0, float(pretraining_counts.get(task, 0)))
        gate.append(n_ft / (n_ft + n_pre) if n_ft > 0 else 0.0)
    return gate


def train_bc(policy, dataset, config=TrainConfig(), progress=False, log_fn=None, anchor=None,
             pretraining_counts=None):
    """
    Behaviour cloning on ``dataset``, starting from ``policy``'s weights.

    Forgetting control:

    - ``adaptive_prior``: the returned policy mixes a frozen copy of the pretrained weights with
      the fine-tuned ones, ``alpha(c) * pi_ft + (1 - alpha(c)) * pi_0``.  Tasks without demos (in
      this dataset or any earlier round) are gated to alpha = 0, so they act exactly like pi_0.
      The fine-tuned network is trained on the demos by itself; alpha(c) of a demonstrated task
      is trained on the mixture's BC loss with the network's output held fixed, plus
      ``alpha_penalty``, from ``alpha_start_fraction`` of the round on.
    - ``l2_init``: an L2 penalty towards pi_0: ``anchor`` when given (the loop passes the
      pretrained policy), else the prior of an adaptive-prior policy, else the starting weights.

    Deterministic on the CPU for a seed.

    :param policy: starting :class:`TaskPolicy` (not modified)
    :param dataset: :class:`DemoDataset`
    :param config: :class:`TrainConfig`
    :param progress: show a progress bar
    :param log_fn: optional callable(step, metrics dict) called every 100 steps and after the last
        (with ``val_mse`` and ``val_mse_start`` when ``config.validation_fraction`` > 0)
    :param anchor: the pretrained :class:`TaskPolicy` pi_0 for ``l2_init`` (None: see above)
    :param pretraining_counts: dict task -> demos pi_0 was pretrained on; with the adaptive prior
        it caps each task's alpha at its share of the demos (:func:`evidence_gate`).  None: no
        cap (alpha of a demonstrated task may reach 1)
    :return: (trained policy in eval mode, final metrics dict)
    :raises EmptyDatasetError: if the dataset is empty
    """
    if len(dataset) == 0:
        raise EmptyDatasetError('dataset has no rows')
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if config.forgetting_control == 'adaptive_prior':
        model = with_adaptive_prior(policy)
    else:
        model = copy.deepcopy(policy)
    model.train()
    device = model.device
    seen = torch.zeros(len(model.config.tasks), dtype=torch.bool, device=device)
    seen[torch.as_tensor(np.unique(dataset.task_ids))] = True
    init_params = None
    if config.forgetting_control == 'l2_init':
        init_params = anchor_weights(policy, anchor)
    groups = [{'params': [p for p in model.net.parameters() if p.requires_grad]}]
    if config.forgetting_control == 'adaptive_prior':
        with torch.no_grad():
            if pretraining_counts is None:
                model.alpha_gate[seen] = 1.0
            else:
                model.alpha_gate.copy_(torch.as_tensor(evidence_gate(
                    dataset.task_counts, pretraining_counts, model.config.tasks)))
    train_rows, val_rows = split_rows(len(dataset), config.validation_fraction, rng)
    features = None
    versions = None
    if model.trunk is not None and config.steps > 0:
        features = trunk_features(model, dataset.images, device)
        if config.trunk_shift_copies > 0 and config.image_shift_px > 0:
            # Contiguous: the trunk's output is channels-last, and the layout decides the
            # order of the sums downstream (the numbers of a seed).
            versions = torch.stack([features] + [
                trunk_features(model, dataset.images, device,
                               shift=(config.image_shift_px, generator))
                for _ in range(config.trunk_shift_copies)]).contiguous()
    val_start = None
    if len(val_rows):
        model.eval()
        val_start = mean_action_mse(model, dataset, val_rows, features=features)
        model.train()
    state_aux = _StateAuxiliary(model, dataset) if config.state_aux_weight > 0 else None
    if state_aux is not None:
        groups.append({'params': list(state_aux.head.parameters())})
    alpha_start = int(config.alpha_start_fraction * config.steps)
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    scheduler = None
    if config.lr_schedule == 'cosine':
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, config.steps))
    alpha_optimizer = None
    if config.forgetting_control == 'adaptive_prior':
        alpha_optimizer = torch.optim.Adam(
            [model.alpha_logit], lr=config.alpha_logit_travel / max(1, config.steps - alpha_start))
    average = None
    if config.ema_decay > 0 and config.steps > 0:
        average = torch.optim.swa_utils.AveragedModel(
            model.net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay),
            use_buffers=True)
    metrics = {}
    bar = tqdm(range(config.steps), desc='train', disable=not progress, leave=False)
    for step in bar:
        idx = train_rows[rng.integers(0, len(train_rows),
                                      size=min(config.batch_size, len(train_rows)))]
        if versions is None:
            batch, target = _rows(dataset, idx, device, features)
        else:
            batch, target = _rows(dataset, idx, device, versions,
                                  rng.integers(0, len(versions), size=len(idx)))
        if batch.images is not None:
            batch.images = random_shift(batch.images, config.image_shift_px, generator)
        if config.forgetting_control == 'adaptive_prior':
            # The fine-tuned network learns the demos on its own; alpha(c) learns, with the
            # network's output held fixed, how far to trust it over the pretrained one.
            parts = model.mixture_parts(batch)
            bc_loss = _bc_loss(config, parts['mean'], parts['log_std'], target)
            mean, log_std = mix_gaussians(parts['alpha'], parts['mean'].detach(),
                                          parts['log_std'].detach(), parts['prior_mean'],
                                          parts['prior_log_std'])
            gated = model.alpha_gate > 0
            loss = bc_loss + _bc_loss(config, mean, log_std, target) \
                + config.alpha_penalty * torch.sigmoid(model.alpha_logit[gated]).sum() \
                / len(model.config.tasks)
        else:
            mean, log_std, _ = model(batch)
            bc_loss = _bc_loss(config, mean, log_std, target)
            loss = bc_loss
        if state_aux is not None:
            aux_loss = state_aux.loss(batch)
            loss = loss + config.state_aux_weight * aux_loss
        if init_params is not None:
            l2 = sum((p - p0).pow(2).sum() for p, p0 in zip(model.net.parameters(), init_params))
            loss = loss + config.l2_init_weight * l2
        optimizer.zero_grad(set_to_none=True)
        if alpha_optimizer is not None:
            alpha_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if alpha_optimizer is not None and step >= alpha_start:
            alpha_optimizer.step()
        if average is not None:
            average.update_parameters(model.net)
        if step % 100 == 0 or step == config.steps - 1:
            metrics = {'loss': float(loss.detach()), 'bc_loss': float(bc_loss.detach()),
                       'mse': float((mean.detach() - target).pow(2).sum(-1).mean()),
                       'lr': optimizer.param_groups[0]['lr']}
            if state_aux is not None:
                metrics['state_aux_loss'] = float(aux_loss.detach())
            if val_start is not None:
                model.eval()
                metrics.update(val_mse=mean_action_mse(model, dataset, val_rows,
                                                       features=features),
                               val_mse_start=val_start, val_rows=int(len(val_rows)))
                model.train()
            bar.set_postfix(loss=f'{metrics["loss"]:.3f}')
            if log_fn is not None:
                log_fn(step, metrics)
    if state_aux is not None:
        state_aux.close()
    if average is not None:
        model.net.load_state_dict(average.module.state_dict())
    if config.forgetting_control == 'adaptive_prior':
        metrics['alpha'] = model.task_alphas()
    return model.eval(), metrics
