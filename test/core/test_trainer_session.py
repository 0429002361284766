"""TrainerSession (ROS-free): resume, round size, when a round starts, queue items, payloads."""

import json
import os

from active_finetune import payloads
from active_finetune.policy.checkpoint import CheckpointError, save_checkpoint, WEIGHTS_FILE
from active_finetune.policy.model import PolicyConfig, TaskPolicy
from active_finetune.policy.transfer import DEFAULT_CHUNK_BYTES
from active_finetune.training.trainer_session import TrainerSession
from active_finetune.training.trainer_settings import TrainerSettings
import pytest

TASKS = ('reach-v3', 'push-v3')


def tiny_policy():
    return TaskPolicy(PolicyConfig(tasks=TASKS, observation='state', hidden_dim=8))


@pytest.fixture
def dirs(tmp_path):
    initial = tmp_path / 'initial'
    sha = save_checkpoint(tiny_policy(), initial, {'kind': 'test'})
    episodes = tmp_path / 'episodes'
    episodes.mkdir()
    return {'initial': initial, 'sha': sha, 'episodes': episodes,
            'checkpoints': tmp_path / 'checkpoints'}


def make_session(dirs, **overrides):
    settings = TrainerSettings(dataset_dir=str(dirs['episodes']),
                               checkpoint_dir=str(dirs['checkpoints']),
                               initial_checkpoint=str(dirs['initial']), **overrides)
    return TrainerSession(settings)


def entries(dirs, count, failed=()):
    """Index entries of ``count`` episode files (those numbered in ``failed`` unsuccessful)."""
    out = []
    for number in range(count):
        path = dirs['episodes'] / f'episode_{number:06d}_reach-v3.mcap'
        if not path.exists():
            path.write_bytes(b'x' * (number + 1))
        out.append({'path': str(path), 'task': 'reach-v3', 'success': number not in failed})
    return out


def checkpoint_item(dirs, version, demos_used, skipped=(), train_s=1.0):
    """Write checkpoint ``version`` and give the ``result`` item of the round that wrote it."""
    path = dirs['checkpoints'] / f'v{version:04d}'
    sha = save_checkpoint(tiny_policy(), path, {'demos_used': demos_used,
                                                'round': version - 1})
    return {'kind': 'result', 'path': str(path), 'sha256': sha, 'version': version,
            'round': version - 1, 'demos_used': demos_used, 'step': 5,
            'metrics': {'loss': 0.5}, 'skipped': list(skipped), 'train_s': train_s}


def test_starts_from_the_initial_checkpoint_and_announces_it(dirs):
    session = make_session(dirs)
    assert (session.version, session.round, session.trained_on) == (0, 0, 0)
    announcement, error = session.initial_announcement()
    assert error == ''
    assert (announcement.version, announcement.round, announcement.sha256) == (0, -1, dirs['sha'])
    # By reference: path, sha256 and size; the bytes are served on request, never carried.
    assert announcement.weights_b64 is None
    assert announcement.size_bytes == (dirs['initial'] / WEIGHTS_FILE).stat().st_size
    assert announcement.chunk_bytes == DEFAULT_CHUNK_BYTES
    assert announcement.config['weights_sha256'] == dirs['sha']
    decoded = payloads.decode_checkpoint(payloads.encode(announcement))
    assert decoded == announcement
    no_weights, _ = make_session(dirs, send_weights=False).initial_announcement()
    assert no_weights.chunk_bytes is None and no_weights.config is not None
    assert no_weights.size_bytes == announcement.size_bytes


def test_resumes_from_the_newest_version_with_its_bookkeeping(dirs):
    checkpoint_item(dirs, 1, 2)
    checkpoint_item(dirs, 2, 4)
    session = make_session(dirs)
    assert (session.version, session.round, session.trained_on) == (2, 2, 4)
    assert session.current_path.name == 'v0002'
    announcement, _ = session.initial_announcement()
    assert (announcement.version, announcement.round, announcement.demos_used) == (2, 1, 4)


def test_a_missing_initial_checkpoint_is_refused(tmp_path):
    settings = TrainerSettings(dataset_dir=str(tmp_path), checkpoint_dir=str(tmp_path / 'c'),
                               initial_checkpoint=str(tmp_path / 'none'))
    with pytest.raises(CheckpointError):
        TrainerSession(settings)


def test_a_round_starts_after_b_demos_and_trains_on_the_successful_ones(dirs):
    session = make_session(dirs, demos_per_round=3)
    assert session.plan_round(entries(dirs, 2)) is None
    plan = session.plan_round(entries(dirs, 3, failed=(1,)))
    assert plan.demos_used == 3 and len(plan.paths) == 2
    assert plan.job.version == 1 and plan.job.round_index == 0
    assert plan.job.episode_paths == plan.paths and plan.job.demos_used == 3
    with_failed = make_session(dirs, demos_per_round=3, train_on_failed_demos=True)
    assert len(with_failed.plan_round(entries(dirs, 3, failed=(1,))).paths) == 3


def test_round_steps_grow_with_the_demos_trained_on(dirs):
    fixed = make_session(dirs, demos_per_round=2, steps=300)
    assert fixed.plan_round(entries(dirs, 8)).job.train['steps'] == 300
    growing = make_session(dirs, demos_per_round=2, steps=300, steps_per_demo=100)
    assert growing.plan_round(entries(dirs, 2)).job.train['steps'] == 300, 'never below steps'
    # Only the demos the round trains on count (a failed demo is not trained on by default).
    assert growing.plan_round(entries(dirs, 8, failed=(0, 1))).job.train['steps'] == 600


def test_the_round_size_follows_the_selector(dirs):
    session = make_session(dirs, demos_per_round=3)
    assert session.demos_per_round == 3
    assert not session.follow_round_size(None), 'an older selector does not carry B'
    assert session.follow_round_size(1)
    assert not session.follow_round_size(1)
    assert session.demos_per_round == 1
    assert session.plan_round(entries(dirs, 1)) is not None
    status = session.status('waiting', 'ok', entries(dirs, 1))
    assert (status.demos_per_round, status.demos_needed) == (1, 1)


def test_a_round_result_is_adopted_announced_and_handed_on_for_evaluation(dirs, tmp_path):
    baseline = tmp_path / 'baseline.json'
    baseline.write_text(json.dumps({'success': {'push-v3': 0.4}}))
    session = make_session(dirs, demos_per_round=2, evaluate_episodes=3,
                           baseline_evaluation_path=str(baseline))
    listed = entries(dirs, 2)
    plan = session.plan_round(listed)
    assert plan.job.version == 1
    progress = session.on_job_item({'kind': 'progress', 'state': 'training',
                                    'message': 'step 1', 'progress': 0.123456}, listed)
    assert progress.status.state == 'training' and progress.status.progress == 0.123
    assert progress.checkpoint is None and not progress.finished
    item = checkpoint_item(dirs, 1, 2, train_s=1.5)
    result = session.on_job_item(item, listed)
    assert result.finished and result.checkpoint.version == 1
    assert result.checkpoint.sha256 == item['sha256']
    assert result.checkpoint.metrics == {'loss': 0.5} and result.checkpoint.step == 5
    assert (session.version, session.round, session.trained_on) == (1, 1, 2)
    assert result.status.state == 'waiting' and result.status.demos_needed == 4
    job = result.evaluation_job
    assert (job.checkpoint, job.version, job.episodes) == (item['path'], 1, 3)
    assert job.baseline_evaluation == {'success': {'push-v3': 0.4}}
    assert job.anchor_checkpoint == str(dirs['initial'])

    started = session.on_evaluation_item({'kind': 'progress', 'state': 'evaluating',
                                          'message': 'evaluating version 1'}, listed,
                                         training=False)
    assert started.status.state == 'evaluating' and not started.finished
    done = session.on_evaluation_item({'kind': 'evaluation', 'version': 1, 'reused': ['push-v3'],
                                       'success': {'reach-v3': 1.0, 'push-v3': 0.0}}, listed,
                                      training=True)
    assert done.finished and done.status is None, "a training round's status stands"
    assert done.evaluation == payloads.Evaluation(
        version=1, success={'reach-v3': 1.0, 'push-v3': 0.0}, mean=0.5, episodes=3,
        reused_from_pretrained=['push-v3'])


def test_no_evaluation_job_when_evaluation_is_off(dirs):
    session = make_session(dirs, demos_per_round=1)
    listed = entries(dirs, 1)
    session.plan_round(listed)
    outcome = session.on_job_item(checkpoint_item(dirs, 1, 1),
                                  listed)
    assert outcome.checkpoint.version == 1 and outcome.evaluation_job is None


def test_a_skipped_episode_is_not_counted_until_its_file_changes(dirs):
    session = make_session(dirs, demos_per_round=2)
    listed = entries(dirs, 3)
    bad = listed[2]['path']
    outcome = session.on_job_item(checkpoint_item(
        dirs, 1, 2, skipped=[{'path': bad, 'error': 'unreadable'}]), listed)
    assert [level for level, _ in outcome.logs] == ['warning'] and bad in outcome.logs[0][1]
    status = session.status('waiting', '', listed)
    assert (status.demos_available, status.demos_unreadable) == (2, 1)
    assert session.plan_round(entries(dirs, 3)) is None
    with open(bad, 'ab') as handle:
        handle.write(b'more')
    os.utime(bad, ns=(1, 1))
    assert session.status('waiting', '', listed).demos_available == 3


def test_round_and_evaluation_errors(dirs):
    session = make_session(dirs, demos_per_round=2)
    listed = entries(dirs, 2)
    session.plan_round(listed)
    failed = session.on_job_item({'kind': 'error', 'message': 'boom'}, listed)
    assert failed.finished and failed.status.state == 'error'
    assert ('error', 'round 0 failed: boom') in failed.logs
    assert session.trained_on == 2, 'not retried on the same demos'
    assert session.plan_round(listed) is None
    listed = entries(dirs, 4)
    session.plan_round(listed)
    session.on_job_item(checkpoint_item(dirs, 1, 4), listed)
    evaluation_failed = session.on_evaluation_item(
        {'kind': 'error', 'version': 1, 'message': 'sim'}, listed, training=False)
    assert evaluation_failed.finished
    assert evaluation_failed.status.message == 'evaluation of version 1 failed: sim'
    assert session.version == 1 and session.trained_on == 4
    died = session.on_job_died(-9, listed)
    assert died.finished and 'exit code -9' in died.status.message
    evaluation_died = session.on_evaluation_died(1, -9, listed, training=True)
    assert evaluation_died.finished and evaluation_died.status is None
    assert ('error', 'evaluation of version 1 died (exit code -9)') in evaluation_died.logs


def test_baseline_evaluation_is_read_when_a_checkpoint_is_evaluated(dirs, tmp_path):
    path = tmp_path / 'baseline.json'
    path.write_text('[]')
    session = make_session(dirs, demos_per_round=1, evaluate_episodes=2,
                           baseline_evaluation_path=str(path))
    listed = entries(dirs, 1)
    session.plan_round(listed)
    outcome = session.on_job_item(checkpoint_item(dirs, 1, 1),
                                  listed)
    assert outcome.evaluation_job.baseline_evaluation == {}
    assert any(level == 'warning' and 'unusable' in text for level, text in outcome.logs)


def test_unknown_queue_item(dirs):
    with pytest.raises(ValueError, match='unknown'):
        make_session(dirs).on_job_item({'kind': 'other'}, [])
    with pytest.raises(ValueError, match='unknown'):
        make_session(dirs).on_evaluation_item({'kind': 'checkpoint'}, [], training=False)


def test_only_the_last_evaluation_runs_on_several_simulator_processes(dirs):
    session = make_session(dirs, last_evaluation_workers=2)
    assert session.evaluation_workers(training=False) == 1, 'demos may still come'
    session.budget_spent = True
    assert session.evaluation_workers(training=True) == 1, 'a round shares the cores'
    assert session.evaluation_workers(training=False) == 2
    single = make_session(dirs, last_evaluation_workers=1)
    single.budget_spent = True
    assert single.evaluation_workers(training=False) == 1


def test_rounds_train_on_shifted_trunk_features_unless_turned_off(dirs):
    assert make_session(dirs, demos_per_round=2).plan_round(
        entries(dirs, 2)).job.train['trunk_shift_copies'] == 2
    assert make_session(dirs, demos_per_round=2, trunk_shift_copies=0).plan_round(
        entries(dirs, 2)).job.train['trunk_shift_copies'] == 0
