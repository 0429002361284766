"""Evaluation and demo collection in worker processes: one simulator per worker, same episodes."""

import os

os.environ.setdefault('MUJOCO_GL', 'egl')

from active_finetune.policy.model import PolicyConfig, TaskPolicy  # noqa: E402
from active_finetune.sim import rollouts  # noqa: E402
from active_finetune.sim.metaworld_env import SimConfig  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

TASKS = ('reach-v3', 'push-v3')


def test_shares_cover_every_job_once_one_per_worker_interleaved():
    assert rollouts.split_jobs(7, 2) == [[0, 2, 4, 6], [1, 3, 5]]
    assert rollouts.split_jobs(2, 4) == [[0], [1]]
    assert rollouts.split_jobs(0, 3) == []
    assert rollouts.split_jobs(5, 2, chunk_size=1) == [[0], [1], [2], [3], [4]]
    assert rollouts.split_jobs(5, 2, chunk_size=2) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match='chunk_size'):
        rollouts.split_jobs(5, 2, chunk_size=0)


def test_each_worker_builds_one_simulator_for_its_share(monkeypatch):
    """Run the pool's calls here: count simulators and check the order of the results."""
    built = []

    class CountingEnv:
        def __init__(self, config):
            built.append(config)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    jobs = [rollouts.EpisodeJob(task, seed) for task in TASKS for seed in range(3)]

    def worker(args, on_episode=None):
        sim_config, share = args
        with CountingEnv(sim_config):
            return [(job.task, job.seed) for job in share]

    class InlinePool:
        def __init__(self, processes, initializer, initargs):
            self.processes = processes

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def map_async(self, function, calls, chunksize):
            results = [function(call) for call in calls]

            class Done:
                def ready(self):
                    return True

                def get(self):
                    return results
            return Done()

    class InlineContext:
        Pool = InlinePool

        def Queue(self):  # noqa: N802 - multiprocessing's name
            raise AssertionError('no progress queue without a progress bar')

    monkeypatch.setattr(rollouts.multiprocessing, 'get_context', lambda method: InlineContext())
    out = rollouts._run_jobs(worker, lambda share: ('sim', share), jobs, 2, 'test', False)
    assert out == [(job.task, job.seed) for job in jobs], 'results in the order of the jobs'
    assert len(built) == 2, 'one simulator per worker'
    built.clear()
    out = rollouts._run_jobs(worker, lambda share: ('sim', share), jobs, 2, 'test', False,
                             chunk_size=1)
    assert out == [(job.task, job.seed) for job in jobs]
    assert len(built) == len(jobs), 'chunk_size 1: one simulator per episode (as before)'


def test_evaluation_in_workers_gives_the_episodes_of_one_process():
    torch.manual_seed(0)
    policy = TaskPolicy(PolicyConfig(tasks=TASKS, image_size=32, conv_channels=(4, 4),
                                     hidden_dim=16, feature_dim=8, task_embedding_dim=4))
    sim_config = SimConfig(image_size=32, max_steps=12)
    runs = {}
    for name, workers in (('one process', 1), ('one simulator per worker', 2)):
        rates, episodes = rollouts.evaluate_policy(
            policy, TASKS, 3, sim_config=sim_config, base_seed=5, workers=workers,
            progress=workers > 1, keep_episodes=True)
        runs[name] = (rates, episodes)
    reference_rates, reference = runs['one process']
    assert [e.task for e in reference] == [t for t in TASKS for _ in range(3)]
    for name in ('one simulator per worker',):
        rates, episodes = runs[name]
        assert rates == reference_rates, name
        assert [e.metadata['seed'] for e in episodes] == [e.metadata['seed'] for e in reference]
        for mine, theirs in zip(episodes, reference):
            assert mine.task == theirs.task
            np.testing.assert_array_equal(mine.actions, theirs.actions)
            np.testing.assert_array_equal(mine.proprio, theirs.proprio)
            np.testing.assert_array_equal(mine.images, theirs.images)
    # Different scenes per episode: the comparison above is not between identical rollouts.
    assert not np.array_equal(reference[0].proprio, reference[1].proprio)
