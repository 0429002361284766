"""Collect scripted demonstrations and evaluate policies in simulation, in several processes."""

from dataclasses import dataclass
import logging
import multiprocessing
import os

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


def _worker_init(threads):
    import torch
    torch.set_num_threads(threads)


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
    from active_finetune.policy.runner import PolicyRunner
    runner = PolicyRunner(policy_from_bytes(*policy_blob, source='evaluation worker'))
    results = []
    with MetaWorldEnv(sim_config) as env:
        for job in jobs:
            episode = run_episode(env, job.task, job.seed, lambda o, t=job.task: runner.act(
                t, o.proprio, image=o.image, state=o.state))
            results.append(episode if keep_episodes else (job.task, episode.success, len(episode)))
            if on_episode is not None:
                on_episode()
    return results


def _chunks(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]


def _run_jobs(worker, make_args, jobs, workers, desc, progress):
    chunk = 1 if workers > 1 else len(jobs) or 1
    chunks = _chunks(jobs, chunk)
    out = []
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress, leave=False)
    if workers <= 1:
        # One simulator for every job in this process; the bar moves per episode.
        for c in chunks:
            out.extend(worker(make_args(c), on_episode=lambda: bar.update(1)))
    else:
        ctx = multiprocessing.get_context('spawn')
        with ctx.Pool(workers, initializer=_worker_init, initargs=(1,)) as pool:
            for result in pool.imap(worker, [make_args(c) for c in chunks]):
                out.extend(result)
                bar.update(len(result))
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
                    workers=1, progress=True, purpose=PURPOSE_EVAL, keep_episodes=False):
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
    :return: dict task -> success rate, or (that dict, list of Episode) with ``keep_episodes``
    """
    jobs = [EpisodeJob(task, episode_seed(base_seed, purpose, task, i))
            for task in tasks for i in range(episodes_per_task)]
    blob = policy_blob(policy)
    results = _run_jobs(_eval_worker, lambda c: (sim_config, blob, c, keep_episodes), jobs,
                        workers, 'evaluate', progress)
    success = {task: [] for task in tasks}
    for r in results:
        task, ok = (r.task, r.success) if keep_episodes else (r[0], r[1])
        success[task].append(float(ok))
    rates = {task: float(np.mean(v)) for task, v in success.items()}
    return (rates, results) if keep_episodes else rates
