"""Pretrain a multi-task policy by behaviour cloning on scripted demonstrations of a task mix."""

import argparse
import json
import logging
import time

from active_finetune.commands.common import load_mix, parse_tasks, setup_cli
from active_finetune.policy.checkpoint import save_checkpoint
from active_finetune.policy.model import ENCODERS, load_pretrained_trunk, PolicyConfig, \
    TaskPolicy
from active_finetune.sim.metaworld_env import SimConfig
from active_finetune.sim.rollouts import collect_demos, default_workers
from active_finetune.training.bc import DemoDataset, fit_normalisation, train_bc, TrainConfig

_LOG = logging.getLogger('active_finetune.pretrain')


def pretrain(mix, tasks, observation, image_size, train_config, seed, workers, noise_std=0.0,
             log_dir=None, progress=True, camera='workspace', max_steps=200, encoder='conv'):
    """
    Collect demos for ``mix`` and train a fresh policy on them.

    :param mix: dict task -> number of demos
    :param tasks: every task the policy should know (the mix's tasks and held-out ones)
    :param observation: 'image' or 'state'
    :param image_size: camera image side in pixels
    :param train_config: :class:`TrainConfig`
    :param seed: seed of the demo scenes and the initial weights
    :param workers: processes for demo collection
    :param noise_std: scripted operator action noise
    :param log_dir: TensorBoard directory or None
    :param progress: show progress bars
    :param camera: simulator camera (see :class:`SimConfig`)
    :param max_steps: demo horizon (control steps)
    :param encoder: image encoder (:attr:`PolicyConfig.encoder`); a pretrained one gets its
        ImageNet weights here
    :return: (policy, metrics dict, provenance dict)
    """
    import torch
    torch.manual_seed(seed)
    sim_config = SimConfig(image_size=image_size if observation == 'image' else 0, camera=camera,
                           max_steps=max_steps)
    t0 = time.perf_counter()
    episodes = collect_demos({t: n for t, n in mix.items() if n > 0}, sim_config, base_seed=seed,
                             noise_std=noise_std, workers=workers, progress=progress)
    collect_s = time.perf_counter() - t0
    policy = TaskPolicy(PolicyConfig(tasks=tasks, observation=observation, image_size=image_size,
                                     encoder=encoder))
    if policy.trunk is not None:
        load_pretrained_trunk(policy)
    dataset = DemoDataset(episodes, policy.config,
                          keep_states=train_config.state_aux_weight > 0)
    fit_normalisation(policy, dataset)
    writer = None
    if log_dir:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(log_dir)

    def log_fn(step, metrics):
        if writer is not None:
            for key, value in metrics.items():
                writer.add_scalar(f'pretrain/{key}', value, step)

    t0 = time.perf_counter()
    policy, metrics = train_bc(policy, dataset, train_config, progress=progress, log_fn=log_fn)
    train_s = time.perf_counter() - t0
    if writer is not None:
        writer.close()
    provenance = {
        'kind': 'pretrain', 'mix': mix, 'seed': seed, 'noise_std': noise_std,
        'camera': sim_config.camera if sim_config.render else None,
        'demo_success_rate': sum(e.success for e in episodes) / len(episodes),
        'rows': len(dataset), 'train_config': train_config.__dict__,
        'collect_s': round(collect_s, 1), 'train_s': round(train_s, 1),
    }
    return policy, metrics, provenance


def main(argv=None):
    """Command-line entry point: ``af-pretrain``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--mix', default='skewed',
                        help="mix name in config/pretrain_mixes.yaml or 'task=n,task=n' "
                             '(default skewed)')
    parser.add_argument('--mixes-file', help='YAML file of named mixes')
    parser.add_argument('--tasks', default='mt10',
                        help="tasks the policy knows: 'mt10' or a comma list")
    parser.add_argument('--observation', choices=('image', 'state'), default='image')
    parser.add_argument('--image-size', type=int, default=96)
    parser.add_argument('--camera', default='workspace',
                        help="simulator camera: 'workspace' or a Meta-World camera name")
    parser.add_argument('--steps', type=int, default=4000)
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--lr', type=float, default=3e-4)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--loss', choices=('mse', 'nll'), default='mse',
                        help='behaviour-cloning loss: squared error of the executed mean action '
                             '(as the trainer node fine-tunes) or Gaussian NLL')
    parser.add_argument('--state-aux', type=float, default=0.0,
                        help='weight of the auxiliary loss that predicts the simulator state '
                             'from the image encoder (image policies; 0: off)')
    parser.add_argument('--shift', type=int, default=TrainConfig.image_shift_px,
                        help='random-shift image augmentation, pixels')
    parser.add_argument('--encoder', choices=ENCODERS, default='efficientnet_lite0',
                        help='image encoder: a frozen ImageNet-pretrained EfficientNet-Lite0 '
                             "trunk under a trainable head, or 'conv', a small CNN trained from "
                             'scratch (default: %(default)s)')
    parser.add_argument('--noise-std', type=float, default=0.0)
    parser.add_argument('--workers', type=int, default=default_workers())
    parser.add_argument('--threads', type=int, default=1, help='torch threads for training')
    parser.add_argument('--log-dir', help='TensorBoard log directory')
    parser.add_argument('--out', required=True, help='checkpoint directory to create')
    args = parser.parse_args(argv)
    setup_cli(args.threads)
    mix = load_mix(args.mix, args.mixes_file)
    tasks = parse_tasks(args.tasks)
    missing = sorted(set(mix) - set(tasks))
    if missing:
        parser.error(f'mix tasks {missing} are not in --tasks')
    train_config = TrainConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                               seed=args.seed, forgetting_control='none', loss=args.loss,
                               state_aux_weight=args.state_aux, image_shift_px=args.shift)
    policy, metrics, provenance = pretrain(mix, tasks, args.observation, args.image_size,
                                           train_config, args.seed, args.workers, args.noise_std,
                                           args.log_dir, camera=args.camera,
                                           encoder=args.encoder)
    provenance['command'] = 'af-pretrain ' + ' '.join(
        argv if argv is not None else __import__('sys').argv[1:])
    digest = save_checkpoint(policy, args.out, provenance)
    print(json.dumps({'checkpoint': args.out, 'sha256': digest, 'metrics': metrics,
                      'collect_s': provenance['collect_s'], 'train_s': provenance['train_s']},
                     indent=2))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
