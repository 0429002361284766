"""
Demos recorded through ROS fine-tune as well as the same demos collected in-process (issue 10).

Input: a run directory of the main job (``bash scripts/main_job.sh``, i.e.
``active_finetune.commands.main_job``).  Its ``episodes/episodes.jsonl`` indexes the rosbag2
episodes the recorder wrote (sim bridge -> teleop topics -> command mux -> recorder -> MCAP),
each with the ``request_id`` of the operator request it demonstrates.  The sim bridge resets a
demonstration with ``episode_seed(seed, PURPOSE_DEMO, task, request_id)`` and demonstrates it with
``ScriptedOperator(task, noise_std=operator_noise_std, seed=<that seed>)``
(:mod:`active_finetune.sim.demonstrator`); its parameters are read from
``logs/params/sim_bridge.yaml`` (defaults of :class:`SimBridgeConfig` for the rest).  The seed
is taken from the bridge's "demonstrating <task> for request <id> (seed <s>)" log line where
``logs/sim_bridge.log`` has one, else derived the bridge's way; the first frames of both
versions are compared to confirm the scene.

For every recorded demo the same demo is collected in-process with
:func:`active_finetune.sim.rollouts.collect_demos` (same task, reset seed, operator noise, image
size, camera and horizon as the bridge), and both are compared row by row: frames, success,
mean absolute difference of actions, proprioception and pixels over the aligned rows, the first
row where the actions or the end-effector positions part, and the ROS frame interval.  The
recorded actions are also replayed in-process from the same reset, executed 0, 1 or 2 steps late,
to see with which delay the robot acted on them.  Pairs go into training as the trainer takes
demos: successful, readable and with plausible proprioception, both halves.

Then the shipped checkpoint is fine-tuned on each set with identical settings (``train_bc``,
``TrainConfig(steps, batch_size, loss='mse', seed)``, adaptive prior capped by the checkpoint's
pretraining mix, as ``active_finetune.training.round_job`` does) and both are evaluated on the
demonstrated tasks with the same scenes (``evaluate_policy``, base seed 10000, one worker, one
torch thread).  The two fine-tunings of a seed run side by side in two processes; further seeds
run while ``--time-budget-s`` allows another pair.  The difference (ROS - in-process) per task
and seed gets a t-interval over tasks x seeds; the verdict is "no measurable difference" when
the interval contains 0.

Writes results/ros_vs_inprocess.json.

    MUJOCO_GL=egl .venv/bin/python bench/ros_vs_inprocess.py --run runs/main_new

Seeds run as separate processes are merged with ``--combine A.json B.json --out C.json``.
"""

import argparse
import calendar
import contextlib
from dataclasses import fields
import json
import multiprocessing
import os
from pathlib import Path
import re
import shlex
import sys
import time

import numpy as np

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
DEMO_LINE = re.compile(r'demonstrating (\S+) for request (\d+) \(seed (\d+)\)')


def bridge_config(run_dir):
    """
    Sim bridge parameters of a run: its parameter file over the defaults.

    :param run_dir: main-job run directory
    :return: :class:`SimBridgeConfig`
    """
    import yaml
    from active_finetune.sim.bridge import SimBridgeConfig
    path = Path(run_dir) / 'logs' / 'params' / 'sim_bridge.yaml'
    params = {}
    if path.is_file():
        params = (yaml.safe_load(path.read_text()) or {}).get('sim_bridge', {}).get(
            'ros__parameters', {})
    known = {f.name for f in fields(SimBridgeConfig)}
    return SimBridgeConfig(**{k: v for k, v in params.items() if k in known})


def logged_seeds(run_dir):
    """
    Seeds of the demonstrations as the sim bridge logged them.

    :param run_dir: main-job run directory
    :return: dict request_id -> (task, seed); empty when the log has no such lines
    """
    path = Path(run_dir) / 'logs' / 'sim_bridge.log'
    seeds = {}
    if path.is_file():
        for match in DEMO_LINE.finditer(path.read_text(errors='replace')):
            seeds[int(match.group(2))] = (match.group(1), int(match.group(3)))
    return seeds


def recorded_demos(run_dir, config):
    """
    List the demos of a run's index with their reset seeds.

    :param run_dir: main-job run directory
    :param config: the bridge's :class:`SimBridgeConfig`
    :return: list of dicts (path, task, request_id, seed, seed_source)
    """
    from active_finetune.sim.rollouts import episode_seed, PURPOSE_DEMO
    episodes_dir = Path(run_dir) / 'episodes'
    logged = logged_seeds(run_dir)
    demos = []
    for line in (episodes_dir / 'episodes.jsonl').read_text().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        request_id, task = int(entry['request_id']), entry['task']
        derived = episode_seed(config.seed, PURPOSE_DEMO, task, request_id)
        if request_id in logged and logged[request_id][0] == task:
            seed, source = logged[request_id][1], 'sim_bridge.log'
            if seed != derived:
                raise SystemExit(f'request {request_id}: logged seed {seed} is not the '
                                 f"bridge rule's {derived}")
        else:
            seed, source = derived, 'episode_seed(bridge seed, PURPOSE_DEMO, task, request_id)'
        demos.append({'path': str(episodes_dir / entry['file']), 'task': task,
                      'request_id': request_id, 'seed': seed, 'seed_source': source,
                      'index_steps': entry.get('steps'), 'index_frames': entry.get('frames')})
    return demos


def first_parting(a, b, tolerance):
    """
    First row where two arrays differ by more than a tolerance (any column).

    :param a: (N, D) array
    :param b: (N, D) array
    :param tolerance: absolute tolerance
    :return: row index, or None when they never part
    """
    rows = np.flatnonzero(np.abs(a - b).max(axis=1) > tolerance)
    return int(rows[0]) if len(rows) else None


def compare(ros, inproc):
    """
    Row-by-row comparison of a ROS-recorded episode and its in-process twin.

    :param ros: :class:`Episode` from ``load_episode``
    :param inproc: :class:`Episode` from ``collect_demos``
    :return: dict
    """
    n = min(len(ros), len(inproc))
    action_diff = np.abs(ros.actions[:n].astype(np.float64) - inproc.actions[:n])
    proprio_diff = np.abs(ros.proprio[:n].astype(np.float64) - inproc.proprio[:n])
    pixel_diff = np.abs(ros.images[:n].astype(np.int16) - inproc.images[:n].astype(np.int16))
    log_ns = np.asarray(ros.metadata.get('frame_log_times_ns', []), dtype=np.int64)
    interval_ms = np.diff(log_ns) / 1e6 if len(log_ns) > 1 else np.zeros(0)
    return {
        'rows_ros': len(ros), 'rows_inprocess': len(inproc), 'aligned_rows': n,
        'frames_ros': int(ros.metadata.get('frames', len(ros) + 1)),
        'frames_inprocess': len(inproc) + 1,
        'success_ros': bool(ros.success), 'success_inprocess': bool(inproc.success),
        'action_mean_abs_diff': float(action_diff.mean()),
        'action_mean_abs_diff_per_dim': [round(float(v), 6) for v in action_diff.mean(axis=0)],
        'action_max_abs_diff': float(action_diff.max()),
        'first_row_actions_part_1e-3': first_parting(ros.actions[:n], inproc.actions[:n], 1e-3),
        'proprio_mean_abs_diff': float(proprio_diff.mean()),
        'first_row_ee_position_parts_1e-4_m': first_parting(ros.proprio[:n, :3],
                                                            inproc.proprio[:n, :3], 1e-4),
        'first_frame_pixel_mean_abs_diff': float(pixel_diff[0].mean()),
        'first_frame_ee_position_abs_diff_m': float(proprio_diff[0, :3].max()),
        'pixel_mean_abs_diff': float(pixel_diff.mean()),
        'ros_frame_interval_ms_median':
            float(np.median(interval_ms)) if len(interval_ms) else None,
        'ros_frame_interval_ms_max': float(interval_ms.max()) if len(interval_ms) else None,
        'ros_commands_held': int(ros.metadata.get('commands_held', 0)),
        'ros_frames_without_row': ros.metadata.get('frames_dropped'),
        'ros_alignment_clocks': ros.metadata.get('alignment_clocks'),
        'ros_image_format': ros.metadata.get('image_format'),
    }


def replay_lag(env, task, seed, ros, lags=(0, 1, 2)):
    """
    Find with which delay the robot executed the recorded commands of a ROS episode.

    Replays the episode's recorded actions in-process from the same reset, each step executing
    the action of ``lag`` rows earlier (before the first: zero velocity and the first gripper
    command), and compares the end-effector positions with the recorded ones.

    :param env: a :class:`MetaWorldEnv` (state only is enough)
    :param task: the task
    :param seed: its reset seed
    :param ros: the ROS :class:`Episode`
    :param lags: delays to try (steps)
    :return: dict lag -> mean absolute end-effector position difference (m) over rows 1..N-1
    """
    out = {}
    for lag in lags:
        env.reset(task, seed)
        positions = []
        for t in range(len(ros) - 1):
            if t >= lag:
                action = ros.actions[t - lag]
            else:
                action = np.array([0.0, 0.0, 0.0, ros.actions[0, 3]], dtype=np.float32)
            observation, _, _ = env.step(action)
            positions.append(observation.proprio[:3])
        if positions:
            out[str(lag)] = float(np.abs(np.stack(positions) - ros.proprio[1:, :3]).mean())
    return out


def _finetune_and_evaluate(job):
    """
    Fine-tune the checkpoint on one demo set and evaluate it (runs in a spawned process).

    :param job: dict (checkpoint, name, seed, episodes, train, tasks, episodes_per_task,
        max_steps, camera, base_seed)
    :return: dict (name, seed, success, train_s, evaluate_s, alpha)
    """
    import torch
    torch.set_num_threads(1)
    from active_finetune.policy.checkpoint import load_checkpoint, pretraining_counts as mix_of
    from active_finetune.sim.metaworld_env import SimConfig
    from active_finetune.sim.rollouts import evaluate_policy
    from active_finetune.training.bc import DemoDataset, train_bc, TrainConfig
    policy, config = load_checkpoint(job['checkpoint'])
    pretraining_counts = mix_of(config)
    t0 = time.perf_counter()
    tuned, metrics = train_bc(policy, DemoDataset(job['episodes'], policy.config),
                              TrainConfig(**job['train'], seed=job['seed']),
                              pretraining_counts=pretraining_counts)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    success = evaluate_policy(
        tuned, job['tasks'], job['episodes_per_task'],
        SimConfig(image_size=policy.config.image_size, camera=job['camera'],
                  max_steps=job['max_steps']),
        base_seed=job['base_seed'], workers=1, progress=False)
    return {'name': job['name'], 'seed': job['seed'], 'success': success,
            'train_s': round(train_s, 1), 'evaluate_s': round(time.perf_counter() - t0, 1),
            'final_loss': metrics.get('loss'),
            'alpha': {t: round(float(a), 4) for t, a in metrics.get('alpha', {}).items()
                      if t in job['tasks']}}


def t_interval(values, confidence=0.95):
    """
    Mean and two-sided t-interval of values.

    :param values: numbers
    :param confidence: coverage
    :return: (mean, low, high); low = high = mean for fewer than two values
    """
    from scipy import stats
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2 or values.std() == 0:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1)
                 * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def summarize(runs, tasks):
    """
    Per-task success of both sets and their difference over tasks x training seeds.

    :param runs: results of :func:`_finetune_and_evaluate` (both names for every seed)
    :param tasks: evaluated tasks
    :return: (seeds, per_task dict, difference dict, verdict)
    """
    by = {(r['name'], r['seed']): r['success'] for r in runs}
    seeds = sorted({r['seed'] for r in runs})
    differences = [by['ros', s][t] - by['inprocess', s][t] for s in seeds for t in tasks]
    mean, low, high = t_interval(differences)
    per_task = {t: {'ros': [by['ros', s][t] for s in seeds],
                    'inprocess': [by['inprocess', s][t] for s in seeds],
                    'ros_mean': float(np.mean([by['ros', s][t] for s in seeds])),
                    'inprocess_mean': float(np.mean([by['inprocess', s][t] for s in seeds]))}
                for t in tasks}
    difference = {
        'n': len(differences), 'mean': mean, 'ci95_t': [low, high],
        'over': 'tasks x training seeds (success rate per task and seed)',
        'mean_success_ros': float(np.mean([by['ros', s][t] for s in seeds for t in tasks])),
        'mean_success_inprocess': float(np.mean([by['inprocess', s][t]
                                                 for s in seeds for t in tasks]))}
    verdict = 'no measurable difference' if low <= 0.0 <= high else 'measurable difference'
    return seeds, per_task, difference, verdict


def combine(paths, out):
    """
    Merge results files of the same comparison run with different training seeds.

    Each file must come from the same run directory, checkpoint, demos (tasks and seeds),
    training and evaluation settings; their runs are pooled and summarised again.

    :param paths: results files written by this script
    :param out: file to write
    """
    results = [json.loads(Path(p).read_text()) for p in paths]
    same = ('run', 'checkpoint', 'bridge', 'train', 'evaluation')
    first = results[0]
    for path, other in zip(paths[1:], results[1:]):
        for key in same:
            if other[key] != first[key]:
                raise SystemExit(f'{path}: {key} differs from {paths[0]}')
        if [(d['task'], d['seed']) for d in other['demos']] \
                != [(d['task'], d['seed']) for d in first['demos']]:
            raise SystemExit(f'{path}: its demos differ from {paths[0]}')
    runs = {(r['name'], r['seed']): r for result in results for r in result['runs']}
    runs = [runs[key] for key in sorted(runs, key=lambda k: (k[1], k[0] != 'ros'))]
    tasks = first['evaluation']['tasks']
    seeds, per_task, difference, verdict = summarize(runs, tasks)
    merged = dict(first)
    merged.update(
        command=' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        combined_from=[{'command': r['command'], 'training_seeds': r['training_seeds'],
                        'loadavg_start': r['loadavg_start'], 'loadavg_end': r['loadavg_end'],
                        'started_unix_s': r['started_unix_s'], 'wall_s': r['wall_s']}
                       for r in results],
        training_seeds=seeds, runs=runs, per_task=per_task,
        difference_ros_minus_inprocess=difference, verdict=verdict)
    for key in ('loadavg_start', 'loadavg_end', 'started_unix_s', 'wall_s'):
        merged.pop(key, None)
    Path(out).write_text(json.dumps(merged, indent=1) + '\n')
    print(json.dumps({'difference_ros_minus_inprocess': difference, 'verdict': verdict}))


def wait_for(path, until_unix_s, poll_s=20.0):
    """
    Wait for a file to appear.

    :param path: the file
    :param until_unix_s: give up at this time
    :param poll_s: poll period
    :return: whether it exists
    """
    while not Path(path).exists() and time.time() < until_unix_s:
        time.sleep(poll_s)
    return Path(path).exists()


def main(argv=None):
    """Run the comparison and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--run', default=str(REPOSITORY_ROOT / 'runs' / 'main_new'),
                        help='main-job run directory (episodes/, logs/)')
    parser.add_argument('--fallback-run', default=str(REPOSITORY_ROOT / 'runs' / 'main_mse'),
                        help='run to use when --run has no main_job.json by --wait-until')
    parser.add_argument('--wait-until', default='',
                        help='wait for <run>/main_job.json until this UTC time (HH:MM today); '
                             "'' = do not wait")
    parser.add_argument('--checkpoint', default=str(REPOSITORY_ROOT / 'checkpoints'
                                                    / 'pretrained_mt10_skewed'))
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--seeds', default='0,1,2', help='training seeds, in order')
    parser.add_argument('--episodes', type=int, default=10, help='evaluation episodes per task')
    parser.add_argument('--max-steps', type=int, default=150, help='evaluation horizon')
    parser.add_argument('--base-seed', type=int, default=10_000, help='evaluation scenes')
    parser.add_argument('--time-budget-s', type=float, default=4200.0,
                        help='start another training seed only if the last pair of '
                             'fine-tunings would fit in this much time since the start')
    parser.add_argument('--out', default=str(REPOSITORY_ROOT / 'results'
                                             / 'ros_vs_inprocess.json'))
    parser.add_argument('--demos-only', action='store_true',
                        help='only compare the demos (no fine-tuning or evaluation)')
    parser.add_argument('--combine', nargs='+', default=None, metavar='RESULTS',
                        help='only merge results files of other seeds into --out')
    args = parser.parse_args(argv)
    if args.combine:
        combine(args.combine, args.out)
        return 0
    os.environ.setdefault('MUJOCO_GL', 'egl')
    import torch
    torch.set_num_threads(1)
    from active_finetune.data.mcap_episode import load_episode
    from active_finetune.policy.checkpoint import load_checkpoint, read_checkpoint_config
    from active_finetune.safety import check_proprio_rows, ProprioLimits
    from active_finetune.sim.metaworld_env import MetaWorldEnv, SimConfig
    from active_finetune.sim.rollouts import collect_demos

    t_start = time.perf_counter()
    started_unix_s = time.time()
    load_start = os.getloadavg()
    run_dir = Path(args.run)
    waited_s = 0.0
    if args.wait_until:
        hour, minute = map(int, args.wait_until.split(':'))
        now = time.gmtime()
        until = calendar.timegm((now.tm_year, now.tm_mon, now.tm_mday, hour, minute, 0))
        t0 = time.perf_counter()
        if not wait_for(run_dir / 'main_job.json', until):
            print(f'{run_dir}/main_job.json did not appear by {args.wait_until} UTC; '
                  f'using {args.fallback_run}', flush=True)
            run_dir = Path(args.fallback_run)
        waited_s = time.perf_counter() - t0
    # Runs made before the main job's rename wrote demo_loop.json.
    if not any((run_dir / name).exists() for name in ('main_job.json', 'demo_loop.json')):
        raise SystemExit(f'{run_dir} is not a finished main-job run (no main_job.json)')

    checkpoint_config = read_checkpoint_config(args.checkpoint)
    image_size = int(checkpoint_config['policy']['image_size'])
    camera = checkpoint_config.get('provenance', {}).get('camera') or 'workspace'
    bridge = bridge_config(run_dir)
    demos = recorded_demos(run_dir, bridge)
    # The bridge's episode: its image size and camera, ended by success (held) or max_steps.
    demo_sim = SimConfig(image_size=bridge.image_size, camera=bridge.camera,
                         max_steps=bridge.max_steps)
    # The trainer's filters (active_finetune.training.trainer_session, round_job): failed demos,
    # unreadable episodes and implausible proprioception are skipped; a pair is used only when
    # both halves pass.
    limits = ProprioLimits.from_policy(load_checkpoint(args.checkpoint)[0])
    replay_env = MetaWorldEnv(SimConfig(image_size=0, max_steps=bridge.max_steps + 100))
    t0 = time.perf_counter()
    ros_set, inproc_set, per_demo = [], [], []
    for demo in demos:
        try:
            ros = load_episode(demo['path'], image_size=(image_size, image_size))
        except (ValueError, OSError) as exc:
            per_demo.append({**demo, 'used': False, 'skipped': f'ROS episode unreadable: {exc}'})
            print(json.dumps(per_demo[-1]), flush=True)
            continue
        inproc, = collect_demos({demo['task']: 1}, demo_sim, base_seed=bridge.seed,
                                noise_std=bridge.operator_noise_std,
                                start_index={demo['task']: demo['request_id']}, progress=False)
        if inproc.metadata['seed'] != demo['seed']:
            raise SystemExit(f'in-process seed {inproc.metadata["seed"]} != {demo["seed"]}')
        if inproc.images.shape[1:3] != (image_size, image_size):
            from active_finetune.policy.inputs import resize_image
            inproc.images = np.stack([resize_image(im, image_size) for im in inproc.images])
        checks = {name: check_proprio_rows(episode.proprio, limits)
                  for name, episode in (('ros', ros), ('inprocess', inproc))}
        skipped = {name: check.reason for name, check in checks.items() if not check.ok}
        # The trainer trains on successful demos only (train_on_failed_demos is off).
        pair = (('ros', ros), ('inprocess', inproc))
        skipped.update({name: 'failed demo' for name, episode in pair if not episode.success})
        if not skipped:
            ros_set.append(ros)
            inproc_set.append(inproc)
        row = {**{k: demo[k] for k in ('task', 'request_id', 'seed', 'seed_source')},
               'path': os.path.relpath(demo['path'], REPOSITORY_ROOT), 'used': not skipped,
               'skipped': skipped or None, **compare(ros, inproc),
               'ros_replay_ee_mean_abs_diff_m_by_command_lag_steps':
                   replay_lag(replay_env, demo['task'], demo['seed'], ros)}
        per_demo.append(row)
        print(json.dumps(row), flush=True)
    replay_env.close()
    demos_s = time.perf_counter() - t0
    if not ros_set:
        raise SystemExit('no usable demo pair')

    compared = [d for d in per_demo if 'rows_ros' in d]
    tasks = list(dict.fromkeys(e.task for e in ros_set))
    train = {'steps': args.steps, 'batch_size': args.batch_size, 'loss': 'mse',
             'forgetting_control': 'adaptive_prior'}
    common = {'checkpoint': args.checkpoint, 'train': train, 'tasks': tasks,
              'episodes_per_task': args.episodes, 'max_steps': args.max_steps,
              'camera': camera, 'base_seed': args.base_seed}
    runs, pair_s = [], []
    ctx = multiprocessing.get_context('spawn')
    with contextlib.nullcontext() if args.demos_only else ctx.Pool(2) as pool:
        for seed in [] if args.demos_only else map(int, args.seeds.split(',')):
            elapsed = time.perf_counter() - t_start
            if pair_s and elapsed + pair_s[-1] > args.time_budget_s:
                print(f'stopping before seed {seed}: {elapsed:.0f} s elapsed, the last pair '
                      f'took {pair_s[-1]:.0f} s, budget {args.time_budget_s:.0f} s', flush=True)
                break
            t0 = time.perf_counter()
            jobs = [{**common, 'name': name, 'seed': seed, 'episodes': episodes}
                    for name, episodes in (('ros', ros_set), ('inprocess', inproc_set))]
            pair = pool.map(_finetune_and_evaluate, jobs)
            pair_s.append(time.perf_counter() - t0)
            runs.extend(pair)
            print(json.dumps(pair), flush=True)

    seeds, per_task, difference, verdict = summarize(runs, tasks) if runs else (
        [], None, None, 'not measured: no fine-tuning ran (--demos-only)')
    baseline_path = run_dir / 'pretrained_evaluation.json'
    baseline = json.loads(baseline_path.read_text()) if baseline_path.is_file() else None
    result = {
        'command': ' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        'run': os.path.relpath(run_dir, REPOSITORY_ROOT),
        'checkpoint': os.path.relpath(args.checkpoint, REPOSITORY_ROOT),
        'bridge': {'seed': bridge.seed, 'operator_noise_std': bridge.operator_noise_std,
                   'image_size': bridge.image_size, 'camera': bridge.camera,
                   'max_steps': bridge.max_steps,
                   'success_hold_steps': bridge.success_hold_steps, 'rate_hz': bridge.rate_hz},
        'policy_image_size': image_size, 'evaluation_camera': camera,
        'train': train, 'training_seeds': seeds,
        'pretraining_counts_from': 'checkpoint provenance mix',
        'evaluation': {'tasks': tasks, 'episodes_per_task': args.episodes,
                       'max_steps': args.max_steps, 'base_seed': args.base_seed, 'workers': 1,
                       'torch_threads': 1},
        'demos': per_demo,
        'demo_summary': {
            'demos': len(per_demo), 'compared': len(compared), 'pairs_used': len(ros_set),
            'rows_ros': int(sum(d['rows_ros'] for d in compared)),
            'rows_inprocess': int(sum(d['rows_inprocess'] for d in compared)),
            'success_ros': int(sum(d['success_ros'] for d in compared)),
            'success_inprocess': int(sum(d['success_inprocess'] for d in compared)),
            'action_mean_abs_diff_mean_over_demos': float(np.mean(
                [d['action_mean_abs_diff'] for d in compared])),
            'action_max_abs_diff': float(max(d['action_max_abs_diff'] for d in compared)),
            'first_frame_pixel_mean_abs_diff_max': float(max(
                d['first_frame_pixel_mean_abs_diff'] for d in compared)),
            'replay_ee_mean_abs_diff_m_by_command_lag_steps_mean_over_demos': {
                lag: float(np.mean([d['ros_replay_ee_mean_abs_diff_m_by_command_lag_steps'][lag]
                                    for d in compared]))
                for lag in compared[0]['ros_replay_ee_mean_abs_diff_m_by_command_lag_steps']}},
        'runs': runs,
        'per_task': per_task,
        'pretrained_success_in_run (its own evaluation, first scenes of the same base seed)':
            None if baseline is None else {
                'episodes': baseline.get('episodes'),
                'success': {t: baseline.get('success', {}).get(t) for t in tasks}},
        'difference_ros_minus_inprocess': difference,
        'verdict': verdict,
        'loadavg_start': [round(v, 2) for v in load_start],
        'loadavg_end': [round(v, 2) for v in os.getloadavg()],
        'cpu_count': os.cpu_count(),
        'started_unix_s': round(started_unix_s, 1),
        'wall_s': {'waiting_for_run': round(waited_s, 1), 'demos': round(demos_s, 1),
                   'fine_tune_and_evaluate_pairs': [round(s, 1) for s in pair_s],
                   'total': round(time.perf_counter() - t_start, 1)},
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + '\n')
    print(json.dumps({k: result[k] for k in ('difference_ros_minus_inprocess', 'verdict',
                                             'wall_s')}), flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
