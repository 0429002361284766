"""
The main job: the full active fine-tuning loop in simulation, through real ROS 2 topics.

Starts the sim graph (simulation bridge with a scripted operator, command mux, policy node, task
selector, demo recorder, trainer) with the project runner, watches the operator/trainer topics,
prints one line per round, and ends with per-task success before and after fine-tuning, a JSON
record and a plot.  Uses the shipped pretrained checkpoint.
"""

import argparse
import json
import os
from pathlib import Path
import random
import threading
import time

from active_finetune.atomic_io import atomic_write_bytes
from active_finetune.commands.common import PACKAGE_ROOT, setup_cli
from active_finetune.commands.evaluate import success_table
from rich.console import Console

DEFAULT_CHECKPOINT = PACKAGE_ROOT / 'checkpoints' / 'pretrained_mt10_skewed'


class LoopMonitor:
    """
    Collect what the loop's topics say (ROS-free bookkeeping; fed by :class:`MonitorNode`).

    :param console: rich Console for the per-round lines
    """

    def __init__(self, console):
        self.console = console
        self.suggestions = {}
        self.checkpoints = {}
        self.evaluations = {}
        self.active_version = None
        self.done = False
        self.errors = []
        self._printed_rounds = set()
        self._episodes = set()
        self._trainer_marks = set()
        self.lock = threading.Lock()

    def on_next_task(self, payload):
        """Record a suggestion."""
        with self.lock:
            if payload.get('task'):
                self.suggestions.setdefault(payload['request_id'], payload)
            self.done = self.done or bool(payload.get('done'))

    def on_checkpoint(self, payload):
        """Record an announced checkpoint."""
        with self.lock:
            self.checkpoints[int(payload['version'])] = payload

    def on_evaluation(self, payload):
        """Record a checkpoint's evaluation and print the round's line."""
        with self.lock:
            version = int(payload['version'])
            self.evaluations[version] = payload
            if version in self._printed_rounds or version == 0:
                return
            self._printed_rounds.add(version)
            ckpt = self.checkpoints.get(version, {})
            used = ckpt.get('demos_used', '?')
            chosen = [s for s in self.suggestions.values()
                      if s.get('policy_version') == version - 1]
            tasks = ', '.join(f'{s["task"]} ({s["scores"].get(s["task"], 0.0):.3f})'
                              for s in chosen)
            reused = set(payload.get('reused_from_pretrained', []))
            per_task = ' '.join(f'{t.split("-v3")[0]}={v:.2f}' for t, v in
                                payload['success'].items() if t not in reused)
            if reused:
                per_task += f' (other {len(reused)} tasks: pretrained weights, unchanged)'
            self.console.print(
                f'[bold]round {version}[/]: demos {tasks or "?"} | demos used {used} | '
                f'checkpoint v{version} | mean success {payload["mean"]:.2f} | {per_task}')

    def on_episode(self, payload):
        """Print a line for every demo the recorder saved."""
        with self.lock:
            key = payload.get('path') or payload.get('sha256')
            if key in self._episodes:
                return
            self._episodes.add(key)
            outcome = 'success' if payload.get('success') else 'failed'
            self.console.print(f'  demo {len(self._episodes)}: {payload.get("task", "?")} '
                               f'recorded ({outcome}, {payload.get("steps", "?")} frames)')

    def on_trainer_status(self, payload):
        """Print the trainer's progress within a round: start, halfway, evaluation."""
        with self.lock:
            state = payload.get('state', '')
            progress = float(payload.get('progress', 0.0) or 0.0)
            mark = (state, payload.get('round'),
                    0.5 if state == 'training' and progress >= 0.5 else 0.0)
            if state not in ('training', 'evaluating') or mark in self._trainer_marks:
                return
            self._trainer_marks.add(mark)
            self.console.print(f'  trainer round {payload.get("round")}: {state} '
                               f'({payload.get("message", "")})')

    def on_policy_status(self, payload):
        """Track the policy node's active checkpoint version."""
        with self.lock:
            if payload.get('version') is not None:
                self.active_version = payload['version']


def _make_monitor_node(monitor):
    from rclpy.node import Node
    from std_msgs.msg import String
    from active_finetune.nodes.qos import COMMAND_QOS, LATCHED_QOS, latched_qos
    from active_finetune.payloads import decode_dict

    class MonitorNode(Node):
        def __init__(self):
            super().__init__('main_job_monitor')
            for topic, handler, qos in (
                    ('operator/next_task', monitor.on_next_task, LATCHED_QOS),
                    ('trainer/checkpoint', monitor.on_checkpoint, LATCHED_QOS),
                    ('trainer/evaluation', monitor.on_evaluation, LATCHED_QOS),
                    ('trainer/status', monitor.on_trainer_status, COMMAND_QOS),
                    ('recorder/episode', monitor.on_episode, latched_qos(10)),
                    ('policy/status', monitor.on_policy_status, LATCHED_QOS)):
                self.create_subscription(
                    String, topic, lambda m, h=handler, t=topic: self._safe(h, t, m), qos)

        def _safe(self, handler, topic, msg):
            try:
                handler(decode_dict(topic, msg.data))
            except (ValueError, KeyError, TypeError) as exc:  # PayloadError is a ValueError
                monitor.errors.append(f'malformed message: {exc!r}')

    return MonitorNode()


def resolve_targets(text, tasks, provenance):
    """
    Turn the ``--targets`` option into the selector's target task list.

    :param text: 'new' (the tasks the checkpoint's pretraining mix has no demos of), 'all', or a
        comma list of task names
    :param tasks: the policy's tasks
    :param provenance: the checkpoint's provenance dict (its 'mix': task -> pretraining demos)
    :return: list of target tasks (every task for 'all')
    :raises ValueError: for unknown task names, or 'new' with no pretraining mix recorded
    """
    if text == 'all':
        return list(tasks)
    if text == 'new':
        mix = provenance.get('mix')
        if not isinstance(mix, dict):
            raise ValueError("--targets new needs the checkpoint's pretraining mix in its "
                             'provenance; give the targets as a comma list or "all"')
        targets = [t for t in tasks if not mix.get(t)]
        return targets or list(tasks)
    targets = [t.strip() for t in text.split(',') if t.strip()]
    unknown = sorted(set(targets) - set(tasks))
    if unknown or not targets:
        raise ValueError(f'--targets: {unknown or text!r} not among the tasks {list(tasks)}')
    return targets


def mean_over(success, tasks):
    """
    Mean success over ``tasks``.

    :param success: dict task -> success rate
    :param tasks: task list
    :return: float
    """
    return sum(success[t] for t in tasks) / len(tasks)


def plot_results(before, after, curve, path, targets=None):
    """
    Write a two-panel PNG: per-task success before/after, and mean success vs demos.

    :param before: dict task -> success of the pretrained policy
    :param after: dict task -> success after the last round
    :param curve: list of (demos used, mean success over all tasks[, mean over the targets])
    :param path: PNG path
    :param targets: target tasks (marked with * on the axis), or None
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    tasks = list(before)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={'width_ratios': [2, 1]})
    x = np.arange(len(tasks))
    ax1.bar(x - 0.2, [before[t] for t in tasks], 0.4, label='pretrained')
    ax1.bar(x + 0.2, [after.get(t, 0.0) for t in tasks], 0.4, label='after active fine-tuning')
    targets = targets or []
    ax1.set_xticks(x, [t.replace('-v3', '') + (' *' if t in targets else '') for t in tasks],
                   rotation=40, ha='right', fontsize=8)
    ax1.set_ylabel('success rate')
    ax1.set_ylim(0, 1.05)
    ax1.legend(fontsize=8)
    ax2.plot([c[0] for c in curve], [c[1] for c in curve], marker='o', label='all tasks')
    if targets and all(len(c) > 2 for c in curve):
        ax2.plot([c[0] for c in curve], [c[2] for c in curve], marker='s',
                 label='targets (*)')
    ax2.legend(fontsize=8)
    ax2.set_xlabel('demonstrations')
    ax2.set_ylabel('mean success')
    ax2.set_ylim(0, 1.05)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    """Command-line entry point: ``af-main-job``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--checkpoint', default=str(DEFAULT_CHECKPOINT))
    parser.add_argument('--strategy', default='amf')
    parser.add_argument('--budget', type=int, default=16)
    parser.add_argument('--demos-per-round', type=int, default=4)
    parser.add_argument('--targets', default='new',
                        help="the tasks AMF selects demos for: 'new' (default; the tasks the "
                             "checkpoint was not pretrained on), 'all', or a comma list")
    parser.add_argument('--finetune-steps', type=int, default=600,
                        help='gradient steps of a round (at least; see --steps-per-demo)')
    parser.add_argument('--steps-per-demo', type=int, default=150,
                        help='a round trains max(finetune-steps, steps-per-demo x demos so far) '
                             'steps (0: always finetune-steps)')
    parser.add_argument('--trainer-threads', type=int, default=min(2, os.cpu_count() or 1),
                        help='torch threads of the trainer (default: 2, or 1 on one core)')
    parser.add_argument('--eval-episodes', type=int, default=5,
                        help='per task, before fine-tuning and after every round (tasks still '
                             'served by the pretrained weights reuse the first evaluation)')
    parser.add_argument('--eval-max-steps', type=int, default=150)
    parser.add_argument('--out', default=None, help='run directory (default runs/main_job_<time>)')
    parser.add_argument('--timeout-s', type=float, default=3600.0)
    args = parser.parse_args(argv)
    setup_cli()
    from active_finetune.runner import GraphRunner
    console = Console()
    out = Path(args.out or PACKAGE_ROOT / 'runs' / time.strftime('main_job_%Y%m%d_%H%M%S'))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 200)))
    overrides = {
        'task_selector.strategy': args.strategy, 'task_selector.budget': args.budget,
        'task_selector.demos_per_round': args.demos_per_round,
        'task_selector.checkpoint_path': args.checkpoint,
        'task_selector.dataset_dir': str(out / 'episodes'),
        'demo_recorder.dataset_dir': str(out / 'episodes'),
        'trainer.dataset_dir': str(out / 'episodes'),
        'trainer.checkpoint_dir': str(out / 'checkpoints'),
        'trainer.initial_checkpoint': args.checkpoint,
        'trainer.demos_per_round': args.demos_per_round, 'trainer.steps': args.finetune_steps,
        'trainer.steps_per_demo': args.steps_per_demo,
        # The loop waits for each round's checkpoint, so training has the machine's cores.
        'trainer.threads': args.trainer_threads,
        'trainer.evaluate_episodes': args.eval_episodes,
        'trainer.evaluate_max_steps': args.eval_max_steps,
        'trainer.log_dir': str(out / 'tensorboard'),
        'policy.checkpoint_path': args.checkpoint,
        'dashboard.dataset_dir': str(out / 'episodes'),
    }
    console.print(f'[bold]active fine-tuning in simulation[/]: strategy {args.strategy}, budget '
                  f'{args.budget} demos, {args.demos_per_round} per round, run directory {out}')
    from active_finetune.policy.checkpoint import load_checkpoint
    from active_finetune.sim.metaworld_env import SimConfig
    from active_finetune.sim.rollouts import evaluate_policy
    from active_finetune.training.round_job import EVALUATION_SEED
    policy, checkpoint_config = load_checkpoint(args.checkpoint)
    try:
        targets = resolve_targets(args.targets, policy.config.tasks,
                                  checkpoint_config.get('provenance') or {})
    except ValueError as error:
        parser.error(str(error))
    overrides['task_selector.target_tasks'] = targets
    console.print(f'target tasks (what the selector asks demos for): '
                  f'{", ".join(t.replace("-v3", "") for t in targets)}')
    t0 = time.perf_counter()
    before = evaluate_policy(policy, policy.config.tasks, args.eval_episodes,
                             SimConfig(image_size=policy.config.image_size,
                                       max_steps=args.eval_max_steps),
                             base_seed=EVALUATION_SEED, workers=2, progress=True)
    baseline_path = out / 'pretrained_evaluation.json'
    atomic_write_bytes(baseline_path, json.dumps({
        'checkpoint_sha256': checkpoint_config['weights_sha256'],
        'episodes': args.eval_episodes, 'max_steps': args.eval_max_steps,
        'base_seed': EVALUATION_SEED, 'success': before}, indent=1).encode())
    overrides['trainer.baseline_evaluation_path'] = str(baseline_path)
    console.print(f'round 0: pretrained policy, mean success '
                  f'{sum(before.values()) / len(before):.2f} '
                  f'({time.perf_counter() - t0:.0f} s)')
    rounds = -(-args.budget // args.demos_per_round)
    monitor = LoopMonitor(console)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    rclpy.init()
    node = _make_monitor_node(monitor)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    status = 1
    try:
        with GraphRunner('sim', overrides=overrides, log_dir=out / 'logs') as graph:
            from active_finetune.dashboard.config import graph_dashboard_url
            url = graph_dashboard_url(graph.graph)
            if url:
                console.print(f'[bold]dashboard[/]: {url} (open it in a browser to watch the '
                              f'loop; a taken port moves it, see {graph.log_path("dashboard")})')
            deadline = time.monotonic() + args.timeout_s
            while time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.5)
                graph.check()
                if monitor.done and len(monitor.evaluations) >= rounds and \
                        all(v in monitor.evaluations for v in range(1, rounds + 1)):
                    status = 0
                    break
            else:
                console.print(f'[red]timed out after {args.timeout_s:.0f} s')
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    last = max(monitor.evaluations) if monitor.evaluations else None
    after = monitor.evaluations[last]['success'] if last else {}
    if after:
        console.print(success_table('per-task success', {'pretrained': before, 'after': after},
                                    subset=targets if len(targets) < len(before) else None))
        curve = [(0, mean_over(before, list(before)), mean_over(before, targets))] + [
            (monitor.checkpoints.get(v, {}).get('demos_used', v * args.demos_per_round),
             monitor.evaluations[v]['mean'], mean_over(monitor.evaluations[v]['success'], targets))
            for v in sorted(monitor.evaluations) if v > 0]
        plot_results(before, after, curve, out / 'main_job.png', targets)
        record = {'args': vars(args), 'targets': targets, 'before': before, 'after': after,
                  'mean_before': mean_over(before, list(before)),
                  'mean_after': mean_over(after, list(before)),
                  'target_mean_before': mean_over(before, targets),
                  'target_mean_after': mean_over(after, targets), 'curve': curve,
                  'suggestions': list(monitor.suggestions.values()),
                  'wall_s': round(time.perf_counter() - t0, 1)}
        atomic_write_bytes(out / 'main_job.json', json.dumps(record, indent=1).encode())
        console.print(f'wrote {out / "main_job.json"} and {out / "main_job.png"} '
                      f'({record["wall_s"]:.0f} s in all)')
    return status


if __name__ == '__main__':
    raise SystemExit(main())
