"""
Can the image encoder locate what the goal-directed tasks depend on?  A linear probe says.

For each task and image size it collects scripted demos (operator noise 0.1, the simulator's
workspace camera), then trains the policy's own image encoder (the architecture of
:class:`TaskPolicy` for each of ``--encoders``: from scratch with random-shift augmentation as in
pretraining, or, for a frozen ImageNet trunk, the trainable part above it) with a linear
head to predict the goal position and the object position from one image, on the frames of the
first ``--train`` demos, and reports the error on the frames of the other demos, per axis in cm,
next to the spread of the true values (the error of always predicting their mean).  The first
frame of each episode is left out.  A policy cannot act more precisely than its encoder locates
the goal: the tasks need the gripper or the object within 5-7 cm of it.

Writes results/probe_goal_localisation.json (``--out``).

    .venv/bin/python bench/probe_goal_localisation.py --tasks push-v3,reach-v3 --sizes 96,128
    .venv/bin/python bench/probe_goal_localisation.py --encoders conv,efficientnet_lite0 \
        --sizes 96 --out results/probe_goal_localisation_encoders.json
"""

import argparse
import json
from pathlib import Path
import shlex
import sys
import time

from active_finetune.commands.common import setup_cli
from active_finetune.policy.model import ENCODER_DIM, ENCODERS, load_pretrained_trunk, \
    PolicyConfig, TaskPolicy
from active_finetune.sim.metaworld_env import SimConfig
from active_finetune.sim.rollouts import collect_demos
from active_finetune.training.bc import random_shift, TrainConfig, trunk_features
import numpy as np
import torch

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
GOAL = slice(36, 39)
"""Goal position in Meta-World's 39-d state."""
OBJECT = slice(4, 7)
"""First object's position in Meta-World's 39-d state."""


def frames(episodes):
    """
    Stack every frame but the first of each episode.

    :param episodes: list of :class:`Episode` with images and states
    :return: (images uint8 (N, H, W, 3), states float32 (N, 39))
    """
    images = np.concatenate([e.images[1:] for e in episodes])
    states = np.concatenate([e.states[1:] for e in episodes]).astype(np.float32)
    return images, states


def probe(train, test, image_size, steps, batch_size, seed, encoder='conv'):
    """
    Train encoder + linear head on ``train`` frames, measure the error on ``test`` frames.

    :param train: (images, states) of the training demos
    :param test: (images, states) of the held-out demos
    :param image_size: pixels
    :param steps: optimiser steps
    :param batch_size: frames per step
    :param seed: torch and sampling seed
    :param encoder: :attr:`PolicyConfig.encoder`; a frozen pretrained trunk is applied once to
        every frame and gets no random-shift augmentation, as in :func:`train_bc`
    :return: dict with per-axis RMSE (cm) of goal and object and their spread (cm)
    """
    torch.manual_seed(seed)
    dims = np.r_[GOAL, OBJECT]
    images, states = train
    targets = states[:, dims]
    mean, std = targets.mean(0), targets.std(0) + 1e-6
    policy = TaskPolicy(PolicyConfig(tasks=('probe',), image_size=image_size, encoder=encoder))
    if policy.trunk is not None:
        load_pretrained_trunk(policy)
    trainable = policy.net.backbone.encoder
    head = torch.nn.Linear(ENCODER_DIM, len(dims))
    optimizer = torch.optim.Adam([*trainable.parameters(), *head.parameters()], lr=3e-4)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    test_images, test_states = test
    if policy.trunk is not None:
        x_train, x_test = (trunk_features(policy, x, 'cpu', chunk=512).float()
                           for x in (images, test_images))
    else:
        x_train, x_test = torch.from_numpy(images), torch.from_numpy(test_images)
    y_train = torch.from_numpy((targets - mean) / std)

    def predict(batch, augment):
        if policy.trunk is None:
            if augment:
                batch = random_shift(batch, TrainConfig.image_shift_px, generator)
            batch = policy.image_features(batch)
        return head(trainable(batch))

    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(x_train), size=batch_size))
        loss = (predict(x_train[idx], True) - y_train[idx]).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        pred = torch.cat([predict(x_test[i:i + 512], False)
                          for i in range(0, len(x_test), 512)]).numpy() * std + mean
    truth = test_states[:, dims]
    rmse = np.sqrt(((pred - truth) ** 2).mean(0)) * 100
    spread = truth.std(0) * 100
    return {'goal_rmse_cm': rmse[:3].round(2).tolist(),
            'goal_spread_cm': spread[:3].round(2).tolist(),
            'object_rmse_cm': rmse[3:].round(2).tolist(),
            'object_spread_cm': spread[3:].round(2).tolist()}


def main(argv=None):
    """Run the probes and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--tasks', default='push-v3,reach-v3')
    parser.add_argument('--sizes', default='96,128')
    parser.add_argument('--encoders', default='conv',
                        help=f'comma-separated image encoders, of {ENCODERS}')
    parser.add_argument('--demos', type=int, default=120)
    parser.add_argument('--train', type=int, default=100)
    parser.add_argument('--steps', type=int, default=2000)
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', default=str(REPOSITORY_ROOT / 'results'
                                             / 'probe_goal_localisation.json'))
    args = parser.parse_args(argv)
    setup_cli(args.threads)
    if not 0 < args.train < args.demos:
        parser.error('--train must be between 0 and --demos')
    rows = []
    for size in map(int, args.sizes.split(',')):
        for task in args.tasks.split(','):
            t0 = time.perf_counter()
            demos = collect_demos({task: args.demos}, SimConfig(image_size=size),
                                  base_seed=args.seed, noise_std=0.1, workers=args.workers,
                                  progress=False)
            collect_s = time.perf_counter() - t0
            for encoder in args.encoders.split(','):
                t0 = time.perf_counter()
                row = {'task': task, 'image_size': size, 'encoder': encoder,
                       'demos': args.demos, 'train': args.train, 'steps': args.steps,
                       **probe(frames(demos[:args.train]), frames(demos[args.train:]), size,
                               args.steps, args.batch_size, args.seed, encoder),
                       'collect_s': round(collect_s, 1),
                       'train_s': round(time.perf_counter() - t0, 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {'command': ' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
              'camera': SimConfig().camera, 'rows': rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
