"""
Which levers make the pretrained image policy solve its pretraining tasks: camera, steps, loss.

For each camera it collects the scripted demos of a pretraining mix once (cached under
runs/cache/), trains an image policy from scratch in stages of ``--stage-steps`` (each stage
continues from the previous weights with a fresh optimizer) and evaluates it after every stage on
``--episodes`` seeded episodes of each pretraining task and ``--held-out-episodes`` of each other
task.  Writes results/pretrain_image_levers.json (appending to earlier runs of other settings) and
saves the final policy of each camera under runs/pretrain_levers/<camera>.

    .venv/bin/python bench/pretrain_image_levers.py --cameras workspace,corner3
"""

import argparse
import hashlib
import json
from pathlib import Path
import shlex
import sys
import time

from active_finetune.commands.common import load_mix, parse_tasks, setup_cli
from active_finetune.data.episode import Episode
from active_finetune.policy.checkpoint import save_checkpoint
from active_finetune.policy.model import ENCODERS, load_pretrained_trunk, PolicyConfig, \
    TaskPolicy
from active_finetune.sim.metaworld_env import SimConfig
from active_finetune.sim.rollouts import collect_demos, evaluate_policy
from active_finetune.training.bc import DemoDataset, fit_normalisation, train_bc, TrainConfig
import numpy as np

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def cached_demos(mix, sim_config, seed, noise_std, workers, cache_dir):
    """
    Collect the mix's demos, or load them from an earlier run with the same settings.

    :param mix: dict task -> demos
    :param sim_config: :class:`SimConfig`
    :param seed: demo seed
    :param noise_std: operator noise
    :param workers: processes
    :param cache_dir: directory of cached .npz files
    :return: list of :class:`Episode`
    """
    key = (f'{"_".join(f"{t}{n}" for t, n in sorted(mix.items()))}_{sim_config.camera}_'
           f'{sim_config.image_size}_{sim_config.max_steps}_s{seed}_n{noise_std}_states')
    path = Path(cache_dir) / f'{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz'
    if path.exists():
        data = np.load(path, allow_pickle=False)
        if str(data['key']) == key:
            count = int(data['count'])
            return [Episode(task=str(data[f'task{i}']), proprio=data[f'proprio{i}'],
                            actions=data[f'actions{i}'], images=data[f'images{i}'],
                            states=data[f'states{i}'], success=bool(data[f'success{i}']))
                    for i in range(count)]
    episodes = collect_demos({t: n for t, n in mix.items() if n > 0}, sim_config, base_seed=seed,
                             noise_std=noise_std, workers=workers, progress=False)
    arrays = {'key': key, 'count': len(episodes)}
    for i, e in enumerate(episodes):
        arrays.update({f'task{i}': e.task, f'proprio{i}': e.proprio, f'actions{i}': e.actions,
                       f'images{i}': e.images, f'states{i}': e.states,
                       f'success{i}': e.success})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return episodes


def main(argv=None):
    """Run the study and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--cameras', default='workspace')
    parser.add_argument('--mix', default='skewed_40')
    parser.add_argument('--image-size', type=int, default=96)
    parser.add_argument('--stages', type=int, default=2)
    parser.add_argument('--stage-steps', type=int, default=3000)
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--episodes', type=int, default=10)
    parser.add_argument('--held-out-episodes', type=int, default=3)
    parser.add_argument('--max-steps', type=int, default=150)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--loss', choices=('nll', 'mse'), default='nll',
                        help='behaviour-cloning loss: Gaussian NLL or squared error of the mean')
    parser.add_argument('--demos-per-task', type=int, default=0,
                        help='demos of every task of the mix (0: the counts of the mix)')
    parser.add_argument('--state-aux', type=float, default=0.0,
                        help='weight of the auxiliary state-prediction loss (0: off)')
    parser.add_argument('--shift', type=int, default=TrainConfig.image_shift_px,
                        help='random-shift augmentation, pixels')
    parser.add_argument('--lr-schedule', choices=('constant', 'cosine'), default='constant',
                        help='learning rate over each stage (TrainConfig.lr_schedule)')
    parser.add_argument('--encoder', choices=ENCODERS, default='conv',
                        help='image encoder (PolicyConfig.encoder)')
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', default=str(REPOSITORY_ROOT / 'results'
                                             / 'pretrain_image_levers.json'))
    args = parser.parse_args(argv)
    setup_cli(args.threads)
    tasks = parse_tasks('mt10')
    mix = load_mix(args.mix)
    if args.demos_per_task > 0:
        mix = {t: args.demos_per_task for t, n in mix.items() if n > 0}
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.exists() else {'runs': []}
    for camera in args.cameras.split(','):
        # Demos run to 200 steps as in af-pretrain; evaluation uses the loop's horizon.
        demo_config = SimConfig(image_size=args.image_size, camera=camera, max_steps=200)
        eval_config = SimConfig(image_size=args.image_size, camera=camera,
                                max_steps=args.max_steps)
        t0 = time.perf_counter()
        demos = cached_demos(mix, demo_config, args.seed, 0.1, args.workers,
                             REPOSITORY_ROOT / 'runs' / 'cache')
        collect_s = time.perf_counter() - t0
        policy = TaskPolicy(PolicyConfig(tasks=tasks, observation='image',
                                         image_size=args.image_size, encoder=args.encoder))
        if policy.trunk is not None:
            load_pretrained_trunk(policy)
        data = DemoDataset(demos, policy.config, keep_states=args.state_aux > 0)
        fit_normalisation(policy, data)
        run = {'camera': camera, 'mix': args.mix, 'demos_per_task': mix,
               'encoder': args.encoder, 'lr_schedule': args.lr_schedule,
               'state_aux': args.state_aux, 'shift_px': args.shift,
               'image_size': args.image_size,
               'batch_size': args.batch_size, 'loss': args.loss, 'demos': len(demos),
               'rows': len(data),
               'collect_s': round(collect_s, 1), 'stages': []}
        steps = 0
        for stage in range(args.stages):
            t0 = time.perf_counter()
            policy, metrics = train_bc(policy, data, TrainConfig(
                steps=args.stage_steps, batch_size=args.batch_size, seed=args.seed + stage,
                forgetting_control='none', loss=args.loss, state_aux_weight=args.state_aux,
                image_shift_px=args.shift, lr_schedule=args.lr_schedule))
            steps += args.stage_steps
            train_s = time.perf_counter() - t0
            pre = [t for t in tasks if mix.get(t, 0) > 0]
            rates = evaluate_policy(policy, pre, args.episodes, eval_config, base_seed=1000,
                                    workers=args.workers, progress=False)
            rates.update(evaluate_policy(policy, [t for t in tasks if t not in pre],
                                         args.held_out_episodes, eval_config, base_seed=1000,
                                         workers=args.workers, progress=False))
            run['stages'].append({'steps': steps, 'train_s': round(train_s, 1),
                                  'loss': metrics.get('bc_loss'), 'success': rates,
                                  'pretraining_min': min(rates[t] for t in pre)})
            print(json.dumps({'camera': camera, **run['stages'][-1]}), flush=True)
        save_checkpoint(policy, REPOSITORY_ROOT / 'runs' / 'pretrain_levers' /
                        f'{camera}_{int(time.time())}',
                        {'kind': 'pretrain', 'mix': mix, 'encoder': args.encoder,
                         'state_aux': args.state_aux,
                         'seed': args.seed, 'noise_std': 0.1,
                         'camera': camera, 'steps': steps, 'rows': len(data),
                         'loss': args.loss,
                         'command': ' '.join(shlex.quote(a) for a in sys.argv)})
        run['command'] = ' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])
        record['runs'].append(run)
        out.write_text(json.dumps(record, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
