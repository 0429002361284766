"""Evaluate a checkpoint in simulation: success rate per task over K seeded episodes."""

import argparse
import json
from pathlib import Path

from active_finetune.atomic_io import atomic_write_bytes
from active_finetune.commands.common import parse_tasks, setup_cli
from active_finetune.policy.checkpoint import load_checkpoint
from active_finetune.sim.metaworld_env import SimConfig
from active_finetune.sim.rollouts import (
    default_workers, evaluate_policy, PURPOSE_DEMO, PURPOSE_EVAL)
from rich.console import Console
from rich.table import Table


def success_table(title, columns, subset=None, subset_name='targets'):
    """
    Build a per-task success table.

    :param title: table title
    :param columns: dict column name -> dict task -> success rate (same tasks in each)
    :param subset: optional task list: a second mean row over these tasks (marked with *)
    :param subset_name: label of that row
    :return: rich Table, with a mean row
    """
    table = Table(title=title)
    table.add_column('task')
    for name in columns:
        table.add_column(name, justify='right')
    tasks = list(next(iter(columns.values())))
    subset = [t for t in subset or () if t in tasks]
    for task in tasks:
        table.add_row(task + (' *' if task in subset else ''),
                      *[f'{col[task]:.2f}' for col in columns.values()])
    table.add_row('[bold]mean',
                  *[f'[bold]{sum(c.values()) / len(c):.2f}' for c in columns.values()])
    if subset:
        table.add_row(f'[bold]mean, {subset_name} (*)',
                      *[f'[bold]{sum(c[t] for t in subset) / len(subset):.2f}'
                        for c in columns.values()])
    return table


def main(argv=None):
    """Command-line entry point: ``af-evaluate``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('checkpoint', help='checkpoint directory')
    parser.add_argument('--tasks', default=None, help="default: the policy's tasks")
    parser.add_argument('--episodes', type=int, default=10, help='episodes per task')
    parser.add_argument('--seed', type=int, default=1000)
    parser.add_argument('--max-steps', type=int, default=200)
    parser.add_argument('--workers', type=int, default=default_workers())
    parser.add_argument('--scenes', choices=('evaluation', 'pretraining'), default='evaluation',
                        help="'evaluation': new scenes drawn from --seed; 'pretraining': the "
                             'scenes of the first demos the checkpoint was pretrained on (its '
                             'recorded seed), to tell not generalising from not fitting')
    parser.add_argument('--out', help='JSON file for the results')
    args = parser.parse_args(argv)
    setup_cli()
    policy, config = load_checkpoint(args.checkpoint)
    purpose, seed = PURPOSE_EVAL, args.seed
    if args.scenes == 'pretraining':
        seed = config.get('provenance', {}).get('seed')
        if seed is None:
            parser.error(f'{args.checkpoint} records no pretraining seed, so its pretraining '
                         'scenes are unknown; use --scenes evaluation')
        purpose = PURPOSE_DEMO
    tasks = parse_tasks(args.tasks) if args.tasks else policy.config.tasks
    image_size = policy.config.image_size if policy.config.observation == 'image' else 0
    sim_config = SimConfig(image_size=image_size, max_steps=args.max_steps)
    rates = evaluate_policy(policy, tasks, args.episodes, sim_config, base_seed=seed,
                            workers=args.workers, purpose=purpose)
    Console().print(success_table(f'{args.checkpoint} ({args.episodes} episodes per task, '
                                  f'{args.scenes} scenes)', {'success': rates}))
    if args.out:
        result = {'checkpoint': str(args.checkpoint), 'weights_sha256': config['weights_sha256'],
                  'episodes_per_task': args.episodes, 'scenes': args.scenes, 'seed': seed,
                  'success': rates,
                  'mean_success': sum(rates.values()) / len(rates)}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out, json.dumps(result, indent=2).encode())
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
