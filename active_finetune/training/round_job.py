"""
One fine-tuning round, and one checkpoint's evaluation, as jobs for separate processes (ROS-free).

The trainer node starts :func:`run_round` in a spawned process so no ROS callback waits for
training; progress and the result come back through a multiprocessing queue as plain dicts.
A new checkpoint's evaluation in simulation (:func:`run_evaluation`, an :class:`EvaluationJob`)
runs in a process of its own, so the next round can start on new demos while it runs instead of
waiting minutes for it.

An episode that cannot be trained on is skipped, with the reason in the result's ``skipped``:
unreadable (truncated, corrupt), of a task the policy does not know, or with implausible
proprioception (:func:`active_finetune.safety.check_proprio_rows`: an end-effector position
outside the workspace box or far from the base checkpoint's training data, e.g. recorded in
millimetres).  ``demos_used`` counts only the episodes that load.
"""

from dataclasses import dataclass, field, replace
import logging
from pathlib import Path
import re
import shutil
import signal
import time

from active_finetune.safety import check_proprio_rows, DEFAULT_MAX_PROPRIO_STD, \
    DEFAULT_WORKSPACE_MAX_M, DEFAULT_WORKSPACE_MIN_M, ProprioLimits

_LOG = logging.getLogger(__name__)

VERSION_DIR = re.compile(r'^v(\d{4,})$')


@dataclass(frozen=True)
class RoundJob:
    """Everything a training round needs, picklable."""

    base_checkpoint: str
    episode_paths: tuple
    checkpoint_dir: str
    version: int
    round_index: int
    train: dict = field(default_factory=dict)
    """Keyword arguments of :class:`TrainConfig`."""
    log_dir: str = ''
    threads: int = 1
    demos_used: int = -1
    """Demos recorded so far, failed ones included (budget accounting); -1 = len(episode_paths).
    The episodes of ``episode_paths`` skipped this round are subtracted in the result."""
    anchor_checkpoint: str = ''
    """The pretrained checkpoint pi_0 that ``l2_init`` pulls towards ('' = base_checkpoint)."""
    cap_alpha_by_pretraining: bool = True
    """
    Cap each task's adaptive-prior weight at its share of the demos, using the pretraining mix
    recorded in the anchor checkpoint's provenance (see :func:`~active_finetune.training.bc.
    evidence_gate`); no effect when the checkpoint records no mix.
    """
    max_proprio_std: float = DEFAULT_MAX_PROPRIO_STD
    """Skip an episode with an end-effector coordinate further than this from the base
    checkpoint's training mean (standard deviations; 0 = no such check)."""
    workspace_min_m: tuple = DEFAULT_WORKSPACE_MIN_M
    """Skip an episode with an end-effector position below this corner x, y, z (m)."""
    workspace_max_m: tuple = DEFAULT_WORKSPACE_MAX_M
    """Skip an episode with an end-effector position above this corner x, y, z (m)."""
    episode_sha256: tuple = ()
    """sha256 of each of ``episode_paths`` (announced or indexed); empty: no cache lookups."""
    episode_cache_dir: str = ''
    """:class:`~active_finetune.data.episode_catalog.EpisodeDiskCache` directory ('' = none)."""
    episode_cache_bytes: int = 0
    """Bound of that cache."""


@dataclass(frozen=True)
class EvaluationJob:
    """A checkpoint to evaluate in simulation, picklable."""

    checkpoint: str
    version: int
    round_index: int
    episodes: int
    max_steps: int = 150
    tasks: tuple = ()
    """Tasks to report (empty: every task of the checkpoint)."""
    anchor_checkpoint: str = ''
    """The pretrained checkpoint ``baseline_evaluation`` was made with."""
    baseline_evaluation: dict = field(default_factory=dict)
    """
    Evaluation of the pretrained checkpoint with these evaluation settings (see
    :func:`baseline_matches`); tasks the adaptive prior serves with the pretrained weights
    (alpha = 0) take its numbers instead of being rolled out again.
    """
    threads: int = 1
    """Torch threads (one: a round may be training on the other cores meanwhile)."""
    workers: int = 1
    """
    Simulator processes (spawned by the evaluation process; more than one only when nothing
    else needs the cores, see ``TrainerSession.evaluation_workers``).
    """


def version_path(checkpoint_dir, version):
    """
    Directory of checkpoint ``version``.

    :param checkpoint_dir: directory of all versions
    :param version: int
    :return: Path
    """
    return Path(checkpoint_dir) / f'v{version:04d}'


def newest_version(checkpoint_dir):
    """
    Find the newest complete checkpoint version and remove torn temporary directories.

    :param checkpoint_dir: directory of all versions
    :return: (version, path) or (0, None) when there is none
    """
    from active_finetune.policy.checkpoint import CheckpointError, read_checkpoint_config
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return 0, None
    for tmp in root.glob('.v*.tmp'):
        _LOG.warning('removing interrupted checkpoint write %s', tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    versions = sorted((int(m.group(1)), p) for p in root.iterdir()
                      if (m := VERSION_DIR.match(p.name)) and p.is_dir())
    for version, path in reversed(versions):
        try:
            read_checkpoint_config(path)
            return version, path
        except CheckpointError as exc:
            _LOG.error('skipping unusable checkpoint %s: %s', path, exc)
    return 0, None


def run_round(job, queue):
    """
    Load episodes, fine-tune, write the checkpoint atomically.

    Puts ``{'kind': 'progress', ...}`` dicts and finally one ``{'kind': 'result', ...}`` (path,
    sha256, version, round, demos_used, skipped, step, metrics, train_s) or ``{'kind': 'error',
    'message': ...}`` on ``queue``.  Evaluating the checkpoint is a separate job
    (:func:`run_evaluation`).

    :param job: :class:`RoundJob`
    :param queue: multiprocessing queue
    """
    try:
        queue.put({'kind': 'result', **_run_round(job, queue)})
    except Exception as exc:  # noqa: B902 - the parent must hear about every failure
        _LOG.exception('training round failed')
        queue.put({'kind': 'error', 'message': f'{type(exc).__name__}: {exc}'})


def _run_round(job, queue):
    import torch
    torch.set_num_threads(job.threads)
    from active_finetune.data.mcap_episode import EpisodeFileError, load_episode
    from active_finetune.policy.checkpoint import load_checkpoint, save_checkpoint
    from active_finetune.training.bc import DemoDataset, TrainConfig, train_bc

    policy, base_config = load_checkpoint(job.base_checkpoint)
    image_size = policy.config.image_size
    limits = ProprioLimits.from_policy(policy, job.workspace_min_m, job.workspace_max_m,
                                       job.max_proprio_std)
    cache = None
    if job.episode_cache_dir and len(job.episode_sha256) == len(job.episode_paths):
        from active_finetune.data.episode_catalog import EpisodeDiskCache
        cache = EpisodeDiskCache(job.episode_cache_dir, job.episode_cache_bytes)
    episodes, skipped = [], []
    load_t0 = time.perf_counter()
    for number, path in enumerate(job.episode_paths):
        try:
            if cache is not None and job.episode_sha256[number]:
                episode = cache.load(path, job.episode_sha256[number], (image_size, image_size))
            else:
                episode = load_episode(path, image_size=(image_size, image_size))
            policy.config.task_id(episode.task)
        except (EpisodeFileError, KeyError, ValueError, OSError) as exc:
            error, what = str(exc), 'unreadable'
        else:
            check = check_proprio_rows(episode.proprio, limits)
            if check.ok:
                episodes.append(episode)
                continue
            error, what = f'implausible proprioception: {check.reason}', 'implausible'
        skipped.append({'path': str(path), 'error': error})
        queue.put({'kind': 'progress', 'state': 'training', 'progress': 0.0,
                   'message': f'skipping {what} episode {path}: {error}'})
    cached = '' if cache is None else f' ({cache.hits} from the cache)'
    queue.put({'kind': 'progress', 'state': 'training', 'progress': 0.0,
               'message': f'loaded {len(episodes)} of {len(job.episode_paths)} episodes in '
                          f'{time.perf_counter() - load_t0:.2f} s{cached}'})
    config = replace(TrainConfig(**job.train), seed=job.train.get('seed', 0) + job.round_index)
    writer = None
    if job.log_dir:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(Path(job.log_dir) / f'round{job.round_index:03d}'))

    def log_fn(step, metrics):
        message = f'step {step}/{config.steps} loss {metrics["loss"]:.3f}'
        if metrics.get('val_mse') is not None:
            message += (f' val_mse {metrics["val_mse"]:.4f} (start '
                        f'{metrics["val_mse_start"]:.4f})')
        queue.put({'kind': 'progress', 'state': 'training',
                   'progress': step / max(1, config.steps), 'message': message})
        if writer is not None:
            for key, value in metrics.items():
                writer.add_scalar(f'finetune/{key}', value, step)

    anchor = None
    if config.forgetting_control == 'l2_init' and job.anchor_checkpoint:
        anchor, _ = load_checkpoint(job.anchor_checkpoint)
    pretraining_counts = None
    if job.cap_alpha_by_pretraining and job.anchor_checkpoint:
        from active_finetune.policy.checkpoint import pretraining_counts as recorded_mix
        from active_finetune.policy.checkpoint import read_checkpoint_config
        pretraining_counts = recorded_mix(read_checkpoint_config(job.anchor_checkpoint))
    t0 = time.perf_counter()
    if episodes:
        policy, metrics = train_bc(policy, DemoDataset(episodes, policy.config), config,
                                   log_fn=log_fn, anchor=anchor,
                                   pretraining_counts=pretraining_counts)
    else:
        # Nothing usable this round (every demo failed or was unreadable): the new version keeps
        # the weights, so the loop (selector, policy) moves on instead of waiting forever.
        queue.put({'kind': 'progress', 'state': 'training', 'progress': 1.0,
                   'message': 'no usable demos: the new version keeps the previous weights'})
        metrics = {'demos_trained': 0}
    train_s = time.perf_counter() - t0
    if writer is not None:
        writer.close()
    path = version_path(job.checkpoint_dir, job.version)
    # Only the episodes that load count: a skipped one is as if it had not been recorded.
    demos_used = (job.demos_used if job.demos_used >= 0 else len(job.episode_paths)) \
        - len(skipped)
    provenance = {'kind': 'finetune', 'version': job.version, 'round': job.round_index,
                  'base_sha256': base_config['weights_sha256'], 'demos_used': demos_used,
                  'demos_trained': len(episodes),
                  'episodes': [str(p) for p in job.episode_paths], 'skipped': skipped,
                  'train_config': config.__dict__, 'train_s': round(train_s, 1),
                  'metrics': {k: v for k, v in metrics.items() if k != 'alpha'}}
    digest = save_checkpoint(policy, path, provenance)
    result = {'path': str(path), 'sha256': digest, 'version': job.version,
              'round': job.round_index, 'demos_used': demos_used, 'skipped': skipped,
              'step': config.steps if episodes else 0,
              'metrics': provenance['metrics'], 'train_s': round(train_s, 1)}
    return result


def run_evaluation(job, queue):
    """
    Evaluate a checkpoint in simulation (the same scenes for every version).

    Puts one ``{'kind': 'progress', 'state': 'evaluating', ...}``, then ``{'kind': 'evaluation',
    'version', 'success': {task: rate}, 'reused': [task]}`` or ``{'kind': 'error', 'version',
    'message'}`` on ``queue``.

    With ``job.workers`` > 1 the episodes run in a pool of spawned processes, which SIGTERM
    (the trainer stopping) tears down with this one.

    :param job: :class:`EvaluationJob`
    :param queue: multiprocessing queue
    """
    if job.workers > 1:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        queue.put({'kind': 'evaluation', 'version': job.version, **_evaluate(job, queue)})
    except Exception as exc:  # noqa: B902 - the parent must hear about every failure
        _LOG.exception('evaluation failed')
        queue.put({'kind': 'error', 'version': job.version,
                   'message': f'{type(exc).__name__}: {exc}'})


def _exit_on_sigterm(signum, frame):
    # SystemExit unwinds through evaluate_policy's pool, which terminates its workers.
    raise SystemExit(128 + signum)


def _evaluate(job, queue):
    import torch
    torch.set_num_threads(job.threads)
    from active_finetune.policy.checkpoint import load_checkpoint
    from active_finetune.sim.metaworld_env import SimConfig
    from active_finetune.sim.rollouts import evaluate_policy
    policy, _ = load_checkpoint(job.checkpoint)
    tasks = job.tasks or policy.config.tasks
    reused = unchanged_tasks(policy, tasks, job) if job.baseline_evaluation else []
    evaluated = [t for t in tasks if t not in reused]
    queue.put({'kind': 'progress', 'state': 'evaluating', 'progress': 0.0,
               'message': f'evaluating version {job.version} in simulation ({len(evaluated)} '
                          f'tasks x {job.episodes} episodes)'})
    image_size = policy.config.image_size if policy.config.observation == 'image' else 0
    success = evaluate_policy(
        policy, evaluated, job.episodes, SimConfig(image_size=image_size,
                                                   max_steps=job.max_steps),
        base_seed=EVALUATION_SEED, workers=job.workers, progress=False) if evaluated else {}
    success.update({t: job.baseline_evaluation['success'][t] for t in reused})
    return {'success': {t: success[t] for t in tasks}, 'reused': reused}


EVALUATION_SEED = 10_000
"""Base seed of the evaluation scenes of every checkpoint (the same scenes for every version)."""


def baseline_matches(baseline, job):
    """
    Check that a pretrained-checkpoint evaluation was made the way this job evaluates.

    :param baseline: dict with 'checkpoint_sha256', 'episodes', 'max_steps', 'base_seed',
        'success'
    :param job: :class:`EvaluationJob`
    :return: (bool, reason)
    """
    from active_finetune.policy.checkpoint import read_checkpoint_config
    if not job.anchor_checkpoint:
        return False, 'no pretrained checkpoint named (anchor_checkpoint)'
    want = {'checkpoint_sha256': read_checkpoint_config(job.anchor_checkpoint)['weights_sha256'],
            'episodes': job.episodes, 'max_steps': job.max_steps,
            'base_seed': EVALUATION_SEED}
    for key, value in want.items():
        if baseline.get(key) != value:
            return False, f'baseline {key} is {baseline.get(key)!r}, this evaluation {value!r}'
    return True, ''


def unchanged_tasks(policy, tasks, job):
    """
    Tasks whose actions are the pretrained policy's, bit for bit, so their evaluation is known.

    With the adaptive prior a task without demos has alpha = 0 and is served by the frozen
    pretrained weights; with the same scenes (seeds) and horizon its rollouts repeat the
    baseline's exactly.

    :param policy: the fine-tuned policy
    :param tasks: tasks to evaluate
    :param job: :class:`EvaluationJob` (its ``baseline_evaluation``)
    :return: list of task names (empty if the baseline does not match)
    """
    from active_finetune.policy.model import tasks_served_by_prior
    ok, reason = baseline_matches(job.baseline_evaluation, job)
    if not ok:
        _LOG.warning('evaluating every task: %s', reason)
        return []
    known = job.baseline_evaluation.get('success', {})
    return tasks_served_by_prior(policy, [t for t in tasks if t in known])
