"""
AMF keeps asking the right question after fine-tuning rounds.

Each test pins one defect of the selection's inputs or of the forgetting control that made AMF
lock in on its first picks; each failed on the code before the fix.
"""

from active_finetune.amf.active_loop import LoopConfig, select_next_tasks
from active_finetune.amf.baselines import make_strategy
from active_finetune.amf.embeddings import embed, importance_weights, StateRows
from active_finetune.amf.selector_session import SelectorSession, SelectorSettings
from active_finetune.amf.targets import TargetConfig, task_state_sets, trajectory_log_ratio
from active_finetune.data.episode import Episode
from active_finetune.policy.inference import PolicyInference
from active_finetune.policy.model import PolicyConfig, TaskPolicy, with_adaptive_prior
from active_finetune.training.bc import (
    anchor_weights, DemoDataset, fit_normalisation, train_bc, TrainConfig)
import numpy as np
import pytest
import torch

TASKS = ('reach-v3', 'push-v3', 'door-open-v3')
GOAL = {'reach-v3': 0.6, 'push-v3': -0.6, 'door-open-v3': 0.0}
SCENE = {'reach-v3': slice(0, 0), 'push-v3': slice(10, 20), 'door-open-v3': slice(20, 30)}
"""State dimensions that differ between the tasks' scenes (objects elsewhere)."""


def demo(task, seed, length=40):
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(length, 39)).astype(np.float32)
    states[:, SCENE[task]] += 2.0
    actions = np.clip(np.tanh(states[:, :4]) * 0.2 + GOAL[task], -0.95, 0.95)
    return Episode(task=task, proprio=states[:, :4], actions=actions, states=states)


def initial_policy():
    torch.manual_seed(0)
    return TaskPolicy(PolicyConfig(tasks=TASKS, observation='state', hidden_dim=32,
                                   feature_dim=16))


@pytest.fixture(scope='module')
def pretrained():
    """Skewed pretraining: reach and door-open demos, none of push."""
    policy = initial_policy()
    data = DemoDataset([demo('reach-v3', 30 + i) for i in range(4)]
                       + [demo('door-open-v3', 40 + i) for i in range(4)], policy.config)
    fit_normalisation(policy, data)
    return train_bc(policy, data, TrainConfig(steps=300, batch_size=32, seed=0,
                                              forgetting_control='none'))[0]


def all_rows(episodes, config):
    dataset = DemoDataset(episodes, config)
    return dataset.batch(np.arange(len(dataset)), 'cpu')


def test_loss_gradient_embeddings_do_not_depend_on_the_mixture_weight():
    policy = with_adaptive_prior(initial_policy())
    with torch.no_grad():
        policy.net.head.linear.weight.add_(0.3)
    rows = StateRows(np.zeros((6, 4)), states=np.random.default_rng(0).normal(size=(6, 39)))
    phis = []
    for gate, logit in ((1.0, 5.0), (1.0, -5.0), (0.0, 0.0)):
        policy.alpha_gate.fill_(gate)
        policy.alpha_logit.data.fill_(logit)
        phis.append(embed(PolicyInference(policy), 'push-v3', rows, 'loss_gradient'))
    np.testing.assert_allclose(phis[1], phis[0], rtol=1e-6)
    np.testing.assert_allclose(phis[2], phis[0], rtol=1e-6)
    assert np.abs(phis[0]).max() > 1e-3


def test_a_round_on_one_task_leaves_the_most_informative_task_first(pretrained):
    """After fine-tuning on reach, push (the only target, never demonstrated) is still asked."""
    policy = pretrained
    tuned, metrics = train_bc(policy, DemoDataset([demo('reach-v3', i) for i in range(4)],
                                                  policy.config),
                              TrainConfig(steps=300, batch_size=32, seed=0))
    assert metrics['alpha']['push-v3'] == 0.0 and metrics['alpha']['reach-v3'] > 0.5
    demos = [demo('reach-v3', i) for i in range(4)]
    rollouts = {t: [demo(t, 100 + k)] for k, t in enumerate(TASKS)}
    config = LoopConfig(demos_per_round=2, target_weights={'push-v3': 1.0},
                        targets=TargetConfig(states_per_trajectory=10, candidate_states=10))
    result = select_next_tasks(make_strategy('amf', TASKS), tuned, TASKS, demos, rollouts,
                               config)
    assert result.chosen[0] == 'push-v3'
    scores = result.scores[0]
    assert scores['push-v3'] > 1.5 * max(scores['reach-v3'], scores['door-open-v3'])


def test_tasks_without_demos_act_exactly_like_the_pretrained_policy_after_any_round(pretrained):
    policy = pretrained
    config = TrainConfig(steps=300, batch_size=32, seed=0)
    round1, m1 = train_bc(policy, DemoDataset([demo('reach-v3', i) for i in range(4)],
                                              policy.config), config)
    round2, m2 = train_bc(round1, DemoDataset([demo('reach-v3', i) for i in range(4)]
                                              + [demo('push-v3', 10)], policy.config), config)
    assert m1['alpha']['push-v3'] == 0.0 and m2['alpha']['door-open-v3'] == 0.0
    # A demonstrated task may move all the way to the fine-tuned network within one round.
    assert m1['alpha']['reach-v3'] > 0.9
    assert m2['alpha']['push-v3'] > 0.5
    with torch.no_grad():
        batch, _ = all_rows([demo('door-open-v3', 7)], policy.config)
        for tuned in (round1, round2):
            mean, log_std, _ = tuned(batch)
            mean0, log_std0, _ = policy(batch)
            assert torch.equal(mean, mean0) and torch.equal(log_std, log_std0)
        batch, _ = all_rows([demo('push-v3', 8)], policy.config)
        assert torch.equal(round1(batch)[0], policy(batch)[0])
        assert not torch.equal(round2(batch)[0], policy(batch)[0])


def test_alpha_step_size_follows_the_round_length(pretrained):
    """The logits' step size is travel / steps, so short and long rounds reach similar alpha."""
    policy = pretrained
    data = DemoDataset([demo('reach-v3', i) for i in range(4)], policy.config)
    short = train_bc(policy, data, TrainConfig(steps=100, batch_size=32, seed=0))[1]['alpha']
    longer = train_bc(policy, data, TrainConfig(steps=400, batch_size=32, seed=0))[1]['alpha']
    assert short['reach-v3'] > 0.8 and longer['reach-v3'] > 0.8
    with pytest.raises(ValueError, match='alpha_logit_travel'):
        TrainConfig(alpha_logit_travel=0.0)


def test_l2_init_pulls_towards_the_pretrained_weights_not_the_last_round(pretrained):
    policy = pretrained
    first = TrainConfig(steps=200, batch_size=32, forgetting_control='none', seed=0)
    round1, _ = train_bc(policy, DemoDataset([demo('reach-v3', i) for i in range(4)],
                                             policy.config), first)
    strong = TrainConfig(steps=200, batch_size=32, forgetting_control='l2_init',
                         l2_init_weight=10.0, learning_rate=1e-2, seed=1)
    data = DemoDataset([demo('push-v3', 20)], policy.config)
    round2, _ = train_bc(round1, data, strong, anchor=policy)

    def distance(a, b):
        return sum(float((p - q).detach().pow(2).sum())
                   for p, q in zip(a.net.parameters(), b.net.parameters()))
    assert distance(round2, policy) < 0.5 * distance(round2, round1)
    # Without an anchor (the old behaviour) the pull goes to the last round instead.
    to_last, _ = train_bc(round1, data, strong)
    assert distance(round2, policy) < 0.5 * distance(to_last, policy)
    # An adaptive-prior policy carries pi_0 itself.
    mixed = with_adaptive_prior(round1)
    mixed.prior.load_state_dict(policy.net.state_dict())
    for p, q in zip(anchor_weights(mixed), policy.net.parameters()):
        assert torch.equal(p, q)


def gaussian_log_pdf(mean, log_std, action):
    z = (action - mean) / np.exp(log_std)
    return float((-0.5 * z ** 2 - log_std - 0.5 * np.log(2 * np.pi)).sum())


def test_importance_log_ratio_is_the_product_over_every_step(pretrained):
    policy = pretrained
    runner = PolicyInference(policy)
    episode = demo('reach-v3', 3, length=37)
    expected = 0.0
    with torch.no_grad():
        for t in range(len(episode)):
            for task, sign in (('push-v3', 1.0), ('reach-v3', -1.0)):
                batch = runner.make_batch(np.array([policy.config.task_id(task)]),
                                          episode.proprio[t:t + 1], states=episode.states[t:t + 1])
                mean, log_std, _ = policy(batch)
                expected += sign * gaussian_log_pdf(mean[0].numpy().astype(np.float64),
                                                    log_std[0].numpy().astype(np.float64),
                                                    episode.actions[t].astype(np.float64))
    assert trajectory_log_ratio(runner, 'push-v3', episode) == pytest.approx(expected, rel=1e-4)
    assert trajectory_log_ratio(runner, 'reach-v3', episode) == 0.0
    # The state sets weight each reused trajectory by exactly these ratios.
    demos = [episode, demo('door-open-v3', 4, length=25)]
    sets = task_state_sets(runner, TASKS, demos, {}, TargetConfig(states_per_trajectory=5,
                                                                  max_importance_weight=1.0))
    ratios = [trajectory_log_ratio(runner, 'push-v3', e) for e in demos]
    weights = sets['push-v3'].weights
    np.testing.assert_allclose([weights[:5].sum(), weights[5:].sum()],
                               importance_weights(ratios, 1.0), rtol=1e-9)


def test_a_skipped_task_leaves_the_candidates_but_stays_a_target(pretrained):
    session = SelectorSession(SelectorSettings(strategy='amf', budget=8, demos_per_round=2,
                                               states_per_trajectory=5, candidate_states=5),
                              TASKS)
    demos = [demo('reach-v3', 0)]
    rollouts = {t: [demo(t, 50 + k)] for k, t in enumerate(TASKS)}
    session.skip('push-v3', demos_used=1)
    payload = session.suggestion(pretrained, 0, 0, demos, rollouts)
    assert payload['task'] != 'push-v3' and 'push-v3' not in payload['scores']
    for candidate, terms in payload['terms'].items():
        assert set(terms) == set(TASKS), candidate


def test_a_few_demos_of_a_well_pretrained_task_cannot_overwrite_it(pretrained):
    from active_finetune.training.bc import evidence_gate
    assert evidence_gate({'reach-v3': 1, 'push-v3': 2}, {'reach-v3': 40}, TASKS) == \
        [1 / 41, 1.0, 0.0]
    data = DemoDataset([demo('reach-v3', 60), demo('push-v3', 61)], pretrained.config)
    tuned, metrics = train_bc(pretrained, data, TrainConfig(steps=200, batch_size=32, seed=0),
                              pretraining_counts={'reach-v3': 40, 'door-open-v3': 40})
    assert 0 < metrics['alpha']['reach-v3'] <= 1 / 41
    assert metrics['alpha']['push-v3'] > 0.5 and metrics['alpha']['door-open-v3'] == 0.0
    # The cap travels with the checkpoint: the next round starts from it.
    assert float(tuned.alpha_gate[0]) == pytest.approx(1 / 41)


@pytest.mark.parametrize('capped', [True, False])
def test_the_experiment_loop_caps_alpha_by_the_pretraining_demos_like_the_trainer(
        pretrained, capped, monkeypatch):
    from active_finetune.amf import active_loop
    seen = {}

    def fake_train_bc(policy, dataset, config, **kwargs):
        seen.update(kwargs)
        return policy, {}

    monkeypatch.setattr(active_loop, 'train_bc', fake_train_bc)
    monkeypatch.setattr(active_loop, 'collect_demos',
                        lambda requests, *a, **k: [demo(t, 7) for t, n in requests.items()
                                                   for _ in range(n)])
    mix = {'reach-v3': 20, 'push-v3': 20}
    loop = active_loop.ActiveFinetuningLoop(
        pretrained, None, LoopConfig(strategy='uniform', budget=2, demos_per_round=2,
                                     cap_alpha_by_pretraining=capped),
        pretraining_counts=mix)
    loop.step()
    assert seen['pretraining_counts'] == (mix if capped else None)
    assert seen['anchor'] is pretrained


@pytest.mark.parametrize('control', ['adaptive_prior', 'none'])
def test_the_experiment_loop_reuses_the_first_evaluation_only_for_tasks_the_prior_serves(
        pretrained, control, monkeypatch):
    from active_finetune.amf import active_loop
    evaluated = []

    def fake_evaluate(policy, tasks, episodes, sim_config, **kwargs):
        evaluated.append(list(tasks))
        return {t: 0.1 * len(evaluated) + 0.01 * k for k, t in enumerate(tasks)}

    monkeypatch.setattr(active_loop, 'evaluate_policy', fake_evaluate)
    monkeypatch.setattr(active_loop, 'collect_demos',
                        lambda requests, *a, **k: [demo('push-v3', 70 + i) for i in range(2)])
    loop = active_loop.ActiveFinetuningLoop(
        pretrained, None, LoopConfig(strategy='uniform', budget=2, demos_per_round=2,
                                     finetune=TrainConfig(steps=3, batch_size=8,
                                                          forgetting_control=control)))
    first = loop.evaluate()
    assert evaluated == [list(TASKS)] and loop.reused == []
    loop.step()
    after = loop.evaluate()
    if control == 'adaptive_prior':
        # Only push-v3 has demos: the other tasks keep alpha = 0 and the first evaluation.
        assert evaluated[1] == ['push-v3']
        assert loop.reused == ['reach-v3', 'door-open-v3']
        assert after['reach-v3'] == first['reach-v3'] and after['push-v3'] != first['push-v3']
    else:
        assert evaluated[1] == list(TASKS) and loop.reused == []
    assert list(after) == list(TASKS)
