"""
Write docs/console_snapshot.txt: the operator console during a real run of the sim graph.

Starts the ``sim`` graph with the project runner and the scripted operator (the loop runs by
itself: suggestion, scripted demo, fine-tuning round, evaluation) and the operator console's node
(:class:`active_finetune.nodes.operator_console_node.OperatorConsoleNode`) in this process.
When the trainer is in the middle of fine-tuning round ``--round`` (trainer/status 'training'
with progress > 0, after an evaluated checkpoint), it renders the console as ``af-console`` shows
it in a 100-column terminal (keys on, times in UTC) and writes

- ``<output>.txt``: the rendered console;
- ``<output>.json``: the console state it was rendered from and the newest payload the console
  received on each topic, exactly as the nodes sent them (test/core/test_console_view.py checks
  that the text is the rendering of that state and that the state is what the console makes of
  those payloads).

Small settings (few demos per round, a few hundred fine-tuning steps, one evaluation episode per
task) keep it to minutes; rounds train on failed demos too, so that a round trains (and reports
progress) even when the scripted operator fails on a loaded machine.

Usage, from the repository root::

    MUJOCO_GL=egl .venv/bin/python scripts/console_snapshot.py --output docs/console_snapshot
"""

import argparse
import json
import os
from pathlib import Path
import random
import sys
import tempfile
import threading
import time

WIDTH = 100
"""Terminal width of the snapshot (characters)."""


def ready(state, round_index):
    """
    Tell whether the console shows what the snapshot should show.

    :param state: :meth:`ConsoleState.snapshot` dict
    :param round_index: fine-tuning round that must be under way
    :return: True once an evaluation arrived and the trainer reports progress in that round
    """
    trainer = state.get('trainer') or {}
    return (state.get('evaluation') is not None and state.get('checkpoint') is not None
            and trainer.get('state') == 'training' and (trainer.get('round') or 0) >= round_index
            and trainer.get('progress', 0.0) > 0.0)


def main(argv=None):
    """
    Run the sim loop with the console, then write the snapshot.

    :param argv: command-line arguments
    :return: exit status
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--output', default='docs/console_snapshot',
                        help='path without suffix: .txt and .json are written')
    parser.add_argument('--round', type=int, default=1, dest='round_index',
                        help='fine-tuning round in progress at the snapshot')
    parser.add_argument('--demos-per-round', type=int, default=1)
    parser.add_argument('--finetune-steps', type=int, default=400)
    parser.add_argument('--eval-episodes', type=int, default=1)
    parser.add_argument('--eval-max-steps', type=int, default=100)
    parser.add_argument('--timeout-s', type=float, default=1800.0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from active_finetune.console_view import render_text
    from active_finetune.nodes.operator_console_node import OperatorConsoleNode
    from active_finetune.runner import GraphRunner
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    os.environ.setdefault('MUJOCO_GL', 'egl')
    os.environ['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(150, 230))
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    tmp = tempfile.TemporaryDirectory(prefix='console_snapshot_')
    dataset = Path(tmp.name) / 'episodes'
    overrides = {
        'task_selector.budget': args.demos_per_round * (args.round_index + 2),
        'task_selector.demos_per_round': args.demos_per_round,
        'task_selector.sim_rollouts_per_task': 0, 'task_selector.dataset_dir': str(dataset),
        'demo_recorder.dataset_dir': str(dataset), 'trainer.dataset_dir': str(dataset),
        'trainer.checkpoint_dir': str(Path(tmp.name) / 'checkpoints'),
        'trainer.demos_per_round': args.demos_per_round, 'trainer.steps': args.finetune_steps,
        'trainer.train_on_failed_demos': True,  # a round trains even when demos failed
        'trainer.evaluate_episodes': args.eval_episodes,
        'trainer.evaluate_max_steps': args.eval_max_steps,
        'trainer.log_dir': str(Path(tmp.name) / 'tensorboard'),
        'dashboard.port': 0, 'dashboard.dataset_dir': str(dataset),
    }
    graph = GraphRunner('sim', overrides=overrides, log_dir=Path(tmp.name) / 'logs')
    context = rclpy.Context()
    rclpy.init(context=context)
    console = OperatorConsoleNode(context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(console)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    started = time.monotonic()
    try:
        graph.start()
        print(f'sim graph running; waiting for round {args.round_index} to train', flush=True)
        while not ready(console.console_state.snapshot(), args.round_index):
            graph.check()
            if time.monotonic() - started > args.timeout_s:
                raise TimeoutError(f'round {args.round_index} not under way within '
                                   f'{args.timeout_s:.0f} s')
            time.sleep(0.2)
        console.console_state.set_input_mode(True, '')  # as af-console shows it in a terminal
        state = console.console_state.snapshot()
        payloads = console.console_state.latest_payloads()
        now_s = time.monotonic()
        print(f'round {args.round_index} under way after {time.monotonic() - started:.0f} s',
              flush=True)
    except Exception:
        print(graph.log_tails(10), file=sys.stderr)
        raise
    finally:
        graph.stop()
        executor.shutdown(timeout_sec=2.0)
        console.destroy_node()
        rclpy.try_shutdown(context=context)
        tmp.cleanup()
    os.environ['TZ'] = 'UTC'
    time.tzset()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    record = {'made_by': 'scripts/console_snapshot.py ' + ' '.join(argv or sys.argv[1:]),
              'width': WIDTH, 'now_s': now_s, 'state': state, 'payloads': payloads}
    output.with_suffix('.json').write_text(json.dumps(record, indent=1, sort_keys=True) + '\n')
    output.with_suffix('.txt').write_text(render_text(state, width=WIDTH, now_s=now_s))
    print(f'wrote {output}.txt and {output}.json')
    return 0


if __name__ == '__main__':
    sys.exit(main())
