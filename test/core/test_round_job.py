"""A trainer round writes the checkpoint; its slow evaluation in simulation is a job of its own."""

import multiprocessing
import os
from pathlib import Path
import queue
import signal
import time

from active_finetune.data.episode_index import list_saved_episodes
from active_finetune.data.recorder import EpisodeRecorder, RecorderSettings
from active_finetune.policy.checkpoint import load_checkpoint, save_checkpoint
from active_finetune.policy.model import PolicyConfig, TaskPolicy
from active_finetune.training.round_job import EvaluationJob, RoundJob, run_evaluation, \
    run_round
import numpy as np
import pytest

TASKS = ('reach-v3', 'push-v3')


def drain(q):
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


def make_episode(recorder, task, seed, steps=10, position_scale=1.0):
    """Record a short episode; ``position_scale`` 1000 writes the pose in millimetres."""
    rng = np.random.default_rng(seed)
    recorder.start(task)
    for step in range(steps):
        stamp = 1_700_000_000_000_000_000 + seed * 10**10 + step * 50_000_000
        recorder.add_joint_state(['gripper_finger_distance'], [0.05], stamp_ns=stamp,
                                 log_time_ns=stamp)
        recorder.add_ee_pose(tuple(position_scale * rng.uniform(-0.2, 0.2, 3)), stamp_ns=stamp,
                             log_time_ns=stamp)
        recorder.add_twist(tuple(rng.uniform(-0.5, 0.5, 3)), stamp_ns=stamp, log_time_ns=stamp)
        recorder.add_gripper(-1.0, log_time_ns=stamp)
        recorder.add_image(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), stamp, 'camera',
                           log_time_ns=stamp + 1)
    recorder.stop(success=True)
    assert recorder.wait_idle(30.0)


def test_a_round_writes_the_checkpoint_and_an_evaluation_job_rolls_it_out(tmp_path):
    policy = TaskPolicy(PolicyConfig(tasks=TASKS, observation='image', image_size=32,
                                     conv_channels=(8, 8, 8, 8), hidden_dim=32, feature_dim=16))
    initial = tmp_path / 'initial'
    save_checkpoint(policy, initial, {'kind': 'test'})
    recorder = EpisodeRecorder(RecorderSettings(dataset_dir=str(tmp_path / 'episodes'),
                                                min_free_disk_mb=0.0))
    try:
        make_episode(recorder, 'reach-v3', seed=1)
        make_episode(recorder, 'push-v3', seed=2)
    finally:
        recorder.close()
    paths = tuple(str(tmp_path / 'episodes' / e['file'])
                  for e in list_saved_episodes(tmp_path / 'episodes'))
    job = RoundJob(base_checkpoint=str(initial), episode_paths=paths,
                   checkpoint_dir=str(tmp_path / 'checkpoints'), version=1, round_index=0,
                   train={'steps': 3, 'batch_size': 4})
    q = queue.Queue()
    run_round(job, q)
    items = drain(q)
    kinds = [item['kind'] for item in items]
    assert 'error' not in kinds, items
    assert kinds[-1] == 'result' and kinds.count('result') == 1
    assert not any(item.get('state') == 'evaluating' for item in items), 'training only'
    result = items[-1]
    _, config = load_checkpoint(result['path'])
    assert config['weights_sha256'] == result['sha256'] and result['version'] == 1
    assert config['provenance']['demos_trained'] == 2 and result['demos_used'] == 2

    run_evaluation(EvaluationJob(checkpoint=result['path'], version=1, round_index=0,
                                 episodes=1, max_steps=3, tasks=('reach-v3',)), q)
    items = drain(q)
    assert [item['kind'] for item in items] == ['progress', 'evaluation'], items
    assert items[0]['state'] == 'evaluating'
    evaluation = items[-1]
    assert evaluation['version'] == 1 and set(evaluation['success']) == {'reach-v3'}
    assert evaluation['success']['reach-v3'] in (0.0, 1.0) and evaluation['reused'] == []


def test_an_unreadable_checkpoint_is_an_evaluation_error(tmp_path):
    q = queue.Queue()
    run_evaluation(EvaluationJob(checkpoint=str(tmp_path / 'missing'), version=3,
                                 round_index=2, episodes=1), q)
    items = drain(q)
    assert items[-1]['kind'] == 'error' and items[-1]['version'] == 3
    assert 'missing' in items[-1]['message']


def test_episodes_with_implausible_proprioception_or_unreadable_are_skipped_and_not_counted(
        tmp_path):
    policy = TaskPolicy(PolicyConfig(tasks=TASKS, observation='image', image_size=32,
                                     conv_channels=(8, 8, 8, 8), hidden_dim=32, feature_dim=16))
    initial = tmp_path / 'initial'
    save_checkpoint(policy, initial, {'kind': 'test'})
    recorder = EpisodeRecorder(RecorderSettings(dataset_dir=str(tmp_path / 'episodes'),
                                                min_free_disk_mb=0.0))
    try:
        make_episode(recorder, 'reach-v3', seed=1)
        make_episode(recorder, 'push-v3', seed=2, position_scale=1000.0)
        make_episode(recorder, 'push-v3', seed=3)
    finally:
        recorder.close()
    paths = [str(tmp_path / 'episodes' / e['file'])
             for e in list_saved_episodes(tmp_path / 'episodes')]
    with open(paths[2], 'r+b') as truncated:
        truncated.truncate(200)
    job = RoundJob(base_checkpoint=str(initial), episode_paths=tuple(paths),
                   checkpoint_dir=str(tmp_path / 'checkpoints'), version=1, round_index=0,
                   train={'steps': 2, 'batch_size': 4}, demos_used=3)
    q = queue.Queue()
    run_round(job, q)
    items = drain(q)
    result = items[-1]
    assert result['kind'] == 'result', items
    skipped = {item['path']: item['error'] for item in result['skipped']}
    assert set(skipped) == {paths[1], paths[2]}
    assert skipped[paths[1]].startswith('implausible proprioception: implausible end-effector '
                                        'position'), skipped[paths[1]]
    assert 'outside the workspace box' in skipped[paths[1]]
    assert result['demos_used'] == 1, 'only the episode that loads counts'
    _, config = load_checkpoint(result['path'])
    assert config['provenance']['demos_trained'] == 1
    assert config['provenance']['demos_used'] == 1
    messages = [item.get('message', '') for item in items]
    assert any('skipping implausible episode' in m for m in messages), messages


def test_tasks_still_on_the_pretrained_weights_reuse_a_matching_baseline(tmp_path):
    from active_finetune.policy.model import with_adaptive_prior
    from active_finetune.training.round_job import EVALUATION_SEED, unchanged_tasks
    policy = TaskPolicy(PolicyConfig(tasks=TASKS, observation='state', hidden_dim=16,
                                     feature_dim=8))
    initial = tmp_path / 'initial'
    digest = save_checkpoint(policy, initial, {'kind': 'test'})
    tuned = with_adaptive_prior(policy)
    tuned.alpha_gate[0] = 1.0  # reach-v3 has demos, push-v3 none
    baseline = {'checkpoint_sha256': digest, 'episodes': 5, 'max_steps': 150,
                'base_seed': EVALUATION_SEED, 'success': {'reach-v3': 0.2, 'push-v3': 0.4}}

    def job(**changes):
        fields = {'checkpoint': 'x', 'version': 1, 'round_index': 0, 'episodes': 5,
                  'max_steps': 150, 'anchor_checkpoint': str(initial),
                  'baseline_evaluation': baseline}
        fields.update(changes)
        return EvaluationJob(**fields)

    assert unchanged_tasks(tuned, TASKS, job()) == ['push-v3']
    # Other evaluation settings or another pretrained checkpoint: evaluate everything.
    assert unchanged_tasks(tuned, TASKS, job(episodes=10)) == []
    assert unchanged_tasks(tuned, TASKS, job(baseline_evaluation={
        **baseline, 'checkpoint_sha256': '0' * 64})) == []
    # Without the adaptive prior no task is known to be unchanged.
    assert unchanged_tasks(policy, TASKS, job()) == []


def children_of(pid):
    """Pids of the live processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / 'stat').read_text().rsplit(')', 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != 'Z':
                out.append(int(entry.name))
    return out


def alive(pid):
    try:
        state = (Path('/proc') / str(pid) / 'stat').read_text().rsplit(')', 1)[1].split()[0]
    except OSError:
        return False
    return state != 'Z'


def maps_library(pid, name):
    """Whether process ``pid`` has a shared library with ``name`` in its path mapped."""
    try:
        return name in (Path('/proc') / str(pid) / 'maps').read_text()
    except OSError:
        return False


@pytest.fixture
def image_checkpoint(tmp_path):
    policy = TaskPolicy(PolicyConfig(tasks=TASKS, observation='image', image_size=32,
                                     conv_channels=(8, 8, 8, 8), hidden_dim=32, feature_dim=16))
    save_checkpoint(policy, tmp_path / 'v1', {'kind': 'test'})
    return str(tmp_path / 'v1')


def test_an_evaluation_on_two_simulator_processes_reports_what_one_process_does(
        image_checkpoint):
    """The trainer's last evaluation: a non-daemon process whose episodes run in a pool."""
    ctx = multiprocessing.get_context('spawn')
    results = {}
    for workers in (1, 2):
        q = ctx.Queue()
        job = EvaluationJob(checkpoint=image_checkpoint, version=1, round_index=0, episodes=2,
                            max_steps=5, workers=workers)
        process = ctx.Process(target=run_evaluation, args=(job, q), daemon=workers == 1)
        process.start()
        try:
            items = [q.get(timeout=120) for _ in range(2)]
            process.join(timeout=30)
        finally:
            if process.is_alive():
                process.kill()
        assert [item['kind'] for item in items] == ['progress', 'evaluation'], items
        assert process.exitcode == 0
        results[workers] = items[-1]['success']
    assert set(results[2]) == set(TASKS)
    assert results[2] == results[1], 'the same seeded scenes, whatever the process count'


def test_stopping_a_multi_process_evaluation_stops_its_simulators(image_checkpoint):
    ctx = multiprocessing.get_context('spawn')
    q = ctx.Queue()
    # Far more episodes than the test waits for: each simulator would run for minutes.
    job = EvaluationJob(checkpoint=image_checkpoint, version=1, round_index=0, episodes=1000,
                        max_steps=150, workers=2)
    process = ctx.Process(target=run_evaluation, args=(job, q), daemon=False)
    process.start()
    workers = []
    try:
        assert q.get(timeout=120)['kind'] == 'progress'
        # Wait until two simulators run (MuJoCo loaded): a worker still starting up would die
        # with its parent anyway.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            workers = [pid for pid in children_of(process.pid) if maps_library(pid, 'mujoco')]
            if len(workers) >= 2:
                break
            time.sleep(0.1)
        assert len(workers) >= 2, f'no simulator pool under the evaluation: {workers}'
        process.terminate()
        process.join(timeout=30)
        assert process.exitcode is not None, 'SIGTERM did not stop the evaluation'
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in workers), 'simulator processes left behind'
    finally:
        for pid in [process.pid, *workers]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
