"""af-evaluate: new scenes by default, or the scenes the checkpoint was pretrained on."""

import json

from active_finetune.commands import evaluate
from active_finetune.policy.checkpoint import save_checkpoint
from active_finetune.policy.model import PolicyConfig, TaskPolicy
from active_finetune.sim.rollouts import PURPOSE_DEMO, PURPOSE_EVAL
import pytest


@pytest.fixture
def checkpoint(tmp_path):
    policy = TaskPolicy(PolicyConfig(tasks=('reach-v3', 'push-v3'), observation='state'))
    save_checkpoint(policy, tmp_path / 'ckpt', {'kind': 'pretrain', 'seed': 3})
    return tmp_path / 'ckpt'


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def fake_evaluate(policy, tasks, episodes, sim_config, base_seed=0, workers=1,
                      purpose=PURPOSE_EVAL, **kwargs):
        seen.append({'tasks': tuple(tasks), 'episodes': episodes, 'seed': base_seed,
                     'purpose': purpose})
        return dict.fromkeys(tasks, 0.5)

    monkeypatch.setattr(evaluate, 'evaluate_policy', fake_evaluate)
    return seen


def test_pretraining_scenes_are_the_first_demo_scenes_of_the_recorded_seed(
        checkpoint, calls, tmp_path):
    out = tmp_path / 'r.json'
    assert evaluate.main([str(checkpoint), '--scenes', 'pretraining', '--episodes', '4',
                          '--workers', '1', '--out', str(out)]) == 0
    assert calls == [{'tasks': ('reach-v3', 'push-v3'), 'episodes': 4, 'seed': 3,
                      'purpose': PURPOSE_DEMO}]
    record = json.loads(out.read_text())
    assert record['scenes'] == 'pretraining' and record['seed'] == 3


def test_default_is_new_scenes_from_the_given_seed(checkpoint, calls):
    evaluate.main([str(checkpoint), '--seed', '1234', '--episodes', '2', '--workers', '1'])
    assert calls[0]['seed'] == 1234 and calls[0]['purpose'] == PURPOSE_EVAL


def test_pretraining_scenes_need_a_recorded_seed(tmp_path, calls, capsys):
    policy = TaskPolicy(PolicyConfig(tasks=('reach-v3',), observation='state'))
    save_checkpoint(policy, tmp_path / 'c', {'kind': 'finetune'})
    with pytest.raises(SystemExit):
        evaluate.main([str(tmp_path / 'c'), '--scenes', 'pretraining', '--workers', '1'])
    assert 'records no pretraining seed' in capsys.readouterr().err
    assert calls == []
