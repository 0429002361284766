"""
Collect scripted demonstrations and evaluate policies in simulation, in several processes.

With ``workers`` > 1 every worker process gets one share of the episodes and builds one simulator
for all of them (a simulator takes far longer to build than an episode to reset): share ``i`` is
episodes ``i, i + W, i + 2W, ...`` so every worker gets a mix of the tasks, and the results are put
back in the jobs' order.  An episode depends only on its task, its seed and the policy (every
episode starts with a seeded reset), so any split gives the same episodes as one process.
"""

from dataclasses import dataclass
import logging
import multiprocessing
import os
import queue

from active_finetune.data.episode import Episode
from active_finetune.sim.metaworld_env import MetaWorldEnv, SimConfig
from active_finetune.sim.operators import ScriptedOperator
import numpy as np
from tqdm import tqdm

_LOG = logging.getLogger(__name__)

PURPOSE_DEMO = 1
PURPOSE_EVAL = 2
PURPOSE_TARGET = 3


def episode_seed(base_seed, purpose, task, index):
    """
    Derive a reset seed; demos, evaluations and target rollouts never share scenes.

    :param base_seed: experiment seed
    :param purpose: PURPOSE_DEMO, PURPOSE_EVAL or PURPOSE_TARGET
    :param task: task name
    :param index: episode index within that task and purpose
    :return: int seed
    """
    task_key = int.from_bytes(task.encode()[:16].ljust(16, b'\0'), 'little') % (2**31)
    seq = np.random.SeedSequence([int(base_seed), int(purpose), task_key, int(index)])
    return int(seq.generate_state(1)[0])


@dataclass(frozen=True)
class EpisodeJob:
    """One episode to run: which task, which reset seed, who acts."""

    task: str
    seed: int
    noise_std: float = 0.0


def run_episode(env, task, seed, act, record_states=True):
    """
    Roll out one episode.

    :param env: a :class:`MetaWorldEnv`
    :param task: task name
    :param seed: reset seed
    :param act: callable(observation) -> action
    :param record_states: keep Meta-World states in the episode
    :return: :class:`Episode` (observations before each action, the actions, success)
    """
    obs = env.reset(task, seed)
    proprio, images, states, actions = [], [], [], []
    done = False
    success = False
    while not done:
        action = np.asarray(act(obs), dtype=np.float32)
        proprio.append(obs.proprio)
        states.append(obs.state)
        if obs.image is not None:
            images.append(obs.image)
        actions.append(action)
        obs, success, done = env.step(action)
    return Episode(task=task, proprio=np.stack(proprio), actions=np.stack(actions),
                   images=np.stack(images) if images else None,
                   states=np.stack(states) if record_states else None,
                   success=success, metadata={'seed': seed, 'steps': len(actions)})


_PROGRESS = None
"""In a worker process: the queue that receives one item per finished episode."""


def _worker_init(threads, progress=None):
    global _PROGRESS
    import torch
    torch.set_num_threads(threads)
    _PROGRESS = progress


def _pool_call(call):
    worker, args = call
    return worker(args, on_episode=None if _PROGRESS is None else lambda: _PROGRESS.put(1))


def _demo_worker(args, on_episode=None):
    sim_config, jobs = args
    episodes = []
    with MetaWorldEnv(sim_config) as env:
        for job in jobs:
            operator = ScriptedOperator(job.task, noise_std=job.noise_std, seed=job.seed)
            episodes.append(run_episode(env, job.task, job.seed, lambda o: operator.act(o.state)))
            if on_episode is not None:
                on_episode()
    return episodes


def _eval_worker(args, on_episode=None):
    sim_config, policy_blob, jobs, keep_episodes = args
    from active_finetune.policy.checkpoint import policy_from_bytes
    from active_finetune.policy.inference import PolicyInference
    runner = PolicyInference(policy_from_bytes(*policy_blob, source='evaluation worker'))
    results = []
    with MetaWorldEnv(sim_config) as env:
        for job in jobs:
            episode = run_episode(env, job.task, job.seed, lambda o, t=job.task: runner.act(
                t, o.proprio, image=o.image, state=o.state))
            results.append(episode if keep_episodes else (job.task, episode.success, len(episode)))
            if on_episode is not None:
                on_episode()
    return results


def split_jobs(count, workers, chunk_size=None):
    """
    Split job positions into the shares handed to worker processes.

    :param count: number of jobs
    :param workers: worker processes
    :param chunk_size: None: one share per worker, interleaved (``i, i + W, ...``); an int:
        consecutive shares of that many jobs (1: every episode on a simulator of its own, how
        evaluation ran before)
    :return: list of lists of job positions, every position once
    """
    if count == 0:
        return []
    if chunk_size is None:
        shares = min(max(1, workers), count)
        return [list(range(i, count, shares)) for i in range(shares)]
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be >= 1 or None, got {chunk_size!r}')
    return [list(range(i, min(i + chunk_size, count))) for i in range(0, count, chunk_size)]


def _run_jobs(worker, make_args, jobs, workers, desc, progress, chunk_size=None):
    """
    Run ``jobs`` through ``worker`` in this process or in ``workers`` spawned processes.

    :param worker: callable(args, on_episode=None) -> list of results, one per job, in order
    :param make_args: callable(list of jobs) -> the worker's args
    :param jobs: the jobs
    :param workers: processes (<= 1: here, one simulator for all)
    :param desc: progress bar label
    :param progress: show a progress bar (moves per episode)
    :param chunk_size: see :func:`split_jobs` (None: one simulator per worker)
    :return: results in the order of ``jobs``
    """
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress, leave=False)
    if workers <= 1:
        # One simulator for every job in this process.
        out = list(worker(make_args(list(jobs)), on_episode=lambda: bar.update(1))) if jobs \
            else []
        bar.close()
        return out
    shares = split_jobs(len(jobs), workers, chunk_size)
    out = [None] * len(jobs)
    ctx = multiprocessing.get_context('spawn')
    progress_queue = ctx.Queue() if progress else None
    with ctx.Pool(min(workers, len(shares)), initializer=_worker_init,
                  initargs=(1, progress_queue)) as pool:
        pending = pool.map_async(_pool_call, [(worker, make_args([jobs[i] for i in share]))
                                              for share in shares], chunksize=1)
        while not pending.ready():
            pending.wait(0.2)
            try:
                while progress_queue is not None:
                    progress_queue.get_nowait()
                    bar.update(1)
            except queue.Empty:
                pass
        for share, results in zip(shares, pending.get()):
            for position, result in zip(share, results):
                out[position] = result
    bar.close()
    return out


def default_workers():
    """
    Worker processes to use by default.

    :return: the number of CPU cores this process may use
    """
    return len(os.sched_getaffinity(0))


def collect_demos(counts, sim_config=SimConfig(), base_seed=0, noise_std=0.0, workers=1,
                  progress=True, start_index=None):
    """
    Collect scripted demonstrations.

    :param counts: dict task -> number of demos
    :param sim_config: simulator settings
    :param base_seed: seed of the demo scenes and the operator noise
    :param noise_std: Gaussian action noise of the scripted operator
    :param workers: processes to use (spawned)
    :param progress: show a progress bar
    :param start_index: dict task -> index of the first demo (to continue a sequence); default 0
    :return: list of :class:`Episode` in the order of ``counts``
    """
    start_index = start_index or {}
    jobs = [EpisodeJob(task,
                       episode_seed(base_seed, PURPOSE_DEMO, task, start_index.get(task, 0) + i),
                       noise_std)
            for task, n in counts.items() for i in range(n)]
    return _run_jobs(_demo_worker, lambda c: (sim_config, c), jobs, workers, 'demos', progress)


def policy_blob(policy):
    """
    Serialise a policy for worker processes (safetensors bytes + config, as in a checkpoint).

    :param policy: a :class:`TaskPolicy`
    :return: (weights bytes, config dict)
    """
    from safetensors.torch import save
    from active_finetune.policy.checkpoint import FORMAT_VERSION, sha256_bytes
    weights = save({k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()})
    return weights, {'format_version': FORMAT_VERSION, 'policy': policy.config.to_dict(),
                     'weights_sha256': sha256_bytes(weights)}


def evaluate_policy(policy, tasks, episodes_per_task, sim_config=SimConfig(), base_seed=0,
                    workers=1, progress=True, purpose=PURPOSE_EVAL, keep_episodes=False,
                    chunk_size=None):
    """
    Success rate of ``policy`` per task over seeded episodes.

    :param policy: a :class:`TaskPolicy`
    :param tasks: task names
    :param episodes_per_task: K
    :param sim_config: simulator settings (its image size must suit the policy)
    :param base_seed: seed of the evaluation scenes
    :param workers: processes
    :param progress: show a progress bar
    :param purpose: seed stream (PURPOSE_EVAL, or PURPOSE_TARGET for AMF's own rollouts)
    :param keep_episodes: also return the rollouts
    :param chunk_size: episodes per share of a worker (:func:`split_jobs`; None: one share and one
        simulator per worker, the fastest; 1: a simulator per episode, as before, for benchmarks)
    :return: dict task -> success rate, or (that dict, list of Episode) with ``keep_episodes``
    """
    jobs = [EpisodeJob(task, episode_seed(base_seed, purpose, task, i))
            for task in tasks for i in range(episodes_per_task)]
    blob = policy_blob(policy)
    results = _run_jobs(_eval_worker, lambda c: (sim_config, blob, c, keep_episodes), jobs,
                        workers, 'evaluate', progress, chunk_size)
    success = {task: [] for task in tasks}
    for r in results:
        task, ok = (r.task, r.success) if keep_episodes else (r[0], r[1])
        success[task].append(float(ok))
    rates = {task: float(np.mean(v)) for task, v in success.items()}
    return (rates, results) if keep_episodes else rates
