"""AMF selection: weight-space GP against a brute-force kernel GP, invariances, edge cases."""

import json
from pathlib import Path

from active_finetune.amf.active_loop import LoopConfig, select_next_tasks
from active_finetune.amf.baselines import make_strategy
from active_finetune.amf.gp import FantasyPosterior, WeightSpaceGP
from active_finetune.amf.selection import amf_select, SelectionError, SelectionInputs
from active_finetune.data.episode import Episode
from active_finetune.policy.model import PolicyConfig, TaskPolicy
import numpy as np
import pytest
import torch


def kernel_space_variance(demos, targets, rho2):
    """Return k(x,x) - k(x,D) (K_DD + rho2 I)^-1 k(D,x) for k(x,x') = x.x' (explicit Gram)."""
    if len(demos) == 0:
        return np.einsum('ij,ij->i', targets, targets)
    gram = demos @ demos.T + rho2 * np.eye(len(demos))
    cross = targets @ demos.T
    return np.einsum('ij,ij->i', targets, targets) - np.einsum(
        'ij,ji->i', cross, np.linalg.solve(gram, cross.T))


def random_problem(rng, tasks=4, dim=6, per_task=5, demos=3):
    names = [f'task-{i}' for i in range(tasks)]
    targets = {t: (rng.normal(size=(per_task, dim)), rng.uniform(0.1, 1.0, per_task))
               for t in names}
    candidates = {t: rng.normal(size=(3, dim)) for t in names}
    return SelectionInputs(targets=targets, candidates=candidates,
                           demos=rng.normal(size=(demos, dim)), rho2=0.5)


@pytest.mark.parametrize('seed', range(5))
def test_weight_space_matches_kernel_space_gp(seed):
    rng = np.random.default_rng(seed)
    dim, rho2 = 5, 0.3
    demos, candidates, targets = (rng.normal(size=(n, dim)) for n in (4, 3, 7))
    gp = WeightSpaceGP(dim, rho2, demos)
    np.testing.assert_allclose(gp.variance(targets), kernel_space_variance(demos, targets, rho2),
                               atol=1e-6)
    both = np.concatenate([demos, candidates])
    after = kernel_space_variance(both, targets, rho2)
    np.testing.assert_allclose(gp.variance_after(candidates, targets), after, atol=1e-6)
    expected_gain = 0.5 * np.log(kernel_space_variance(demos, targets, rho2) / after)
    np.testing.assert_allclose(gp.information_gain(candidates, targets), expected_gain, atol=1e-6)


def test_woodbury_conditioning_equals_recomputation():
    rng = np.random.default_rng(7)
    demos, more = rng.normal(size=(5, 8)), rng.normal(size=(4, 8))
    updated = WeightSpaceGP(8, 0.7, demos)
    updated.condition(more)
    fresh = WeightSpaceGP(8, 0.7, np.concatenate([demos, more]))
    np.testing.assert_allclose(updated.covariance, fresh.covariance, atol=1e-9)


def test_brute_force_task_score_matches_selection():
    rng = np.random.default_rng(3)
    inputs = random_problem(rng)
    result = amf_select(list(inputs.targets), {}, 1, inputs)
    for cand in inputs.targets:
        total = 0.0
        for task, (phi, w) in inputs.targets.items():
            before = kernel_space_variance(inputs.demos, phi, inputs.rho2)
            after = kernel_space_variance(np.concatenate([inputs.demos, inputs.candidates[cand]]),
                                          phi, inputs.rho2)
            total += 0.25 * np.sum(w / w.sum() * 0.5 * np.log(before / after))
        assert result.scores[0][cand] == pytest.approx(total, abs=1e-6)


def test_demonstrated_task_scores_lower_than_before():
    rng = np.random.default_rng(11)
    inputs = random_problem(rng, demos=0)
    before = amf_select(list(inputs.targets), {}, 1, inputs).scores[0]
    task = 'task-2'
    demonstrated = SelectionInputs(inputs.targets, inputs.candidates,
                                   np.concatenate([inputs.demos, inputs.candidates[task]]),
                                   rho2=inputs.rho2)
    after = amf_select(list(inputs.targets), {}, 1, demonstrated).scores[0]
    assert after[task] < before[task]


def test_scores_invariant_to_task_order():
    rng = np.random.default_rng(5)
    inputs = random_problem(rng, tasks=6)
    names = list(inputs.targets)
    forward = amf_select(names, {}, 3, inputs)
    reordered = SelectionInputs({t: inputs.targets[t] for t in reversed(names)},
                                {t: inputs.candidates[t] for t in reversed(names)},
                                inputs.demos, rho2=inputs.rho2)
    backward = amf_select(list(reversed(names)), {}, 3, reordered)
    assert forward.chosen == backward.chosen
    for a, b in zip(forward.scores, backward.scores):
        assert a == pytest.approx(b, abs=1e-12)


def test_greedy_batch_conditions_on_earlier_picks():
    rng = np.random.default_rng(2)
    inputs = random_problem(rng, tasks=3)
    result = amf_select(list(inputs.targets), {}, 2, inputs)
    first = result.chosen[0]
    assert result.scores[1][first] < result.scores[0][first]
    assert len(result.terms) == 2 and set(result.terms[0][first]) == set(inputs.targets)
    assert result.to_dict()['chosen'] == result.chosen


def test_skipped_tasks_stay_targets_but_are_never_chosen():
    rng = np.random.default_rng(4)
    inputs = random_problem(rng, tasks=4)
    allowed = ['task-0', 'task-3']
    result = amf_select(allowed, {}, 3, inputs)
    assert set(result.chosen) <= set(allowed) and set(result.scores[0]) == set(allowed)
    assert set(result.terms[0]['task-0']) == set(inputs.targets)


def test_zero_embeddings_give_zero_scores_and_a_defined_choice():
    targets = {t: (np.zeros((4, 3)), np.ones(4)) for t in ('b-task', 'a-task', 'c-task')}
    inputs = SelectionInputs(targets, {t: np.zeros((2, 3)) for t in targets}, np.zeros((0, 3)))
    result = amf_select(list(targets), {'a-task': 2, 'b-task': 0, 'c-task': 1}, 2, inputs)
    assert all(v == 0.0 for v in result.scores[0].values())
    assert result.chosen[0] == 'b-task', 'ties go to the least-demonstrated task'
    assert result.chosen[1] == 'b-task', 'then to the earliest task (b and c both have 1 now)'
    assert amf_select(['c-task', 'a-task', 'b-task'], {}, 1, inputs).chosen == ['c-task']


def test_one_task_no_demos_and_empty_candidates():
    rng = np.random.default_rng(0)
    inputs = SelectionInputs({'only': (rng.normal(size=(5, 4)), np.ones(5))},
                             {'only': np.zeros((0, 4))}, np.zeros((0, 4)))
    result = amf_select(['only'], {}, 2, inputs)
    assert result.chosen == ['only', 'only'] and result.scores[0]['only'] == 0.0


@pytest.mark.parametrize(
    'bad', ['nan_target', 'nan_demo', 'negative_weight', 'dims', 'mu', 'rho2'])
def test_bad_inputs_raise_a_clear_error(bad):
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(3, 4))
    targets = {'a': (phi, np.ones(3))}
    kwargs = {'targets': targets, 'candidates': {'a': phi}, 'demos': np.zeros((0, 4))}
    if bad == 'nan_target':
        kwargs['targets'] = {'a': (np.full((3, 4), np.nan), np.ones(3))}
    elif bad == 'nan_demo':
        kwargs['demos'] = np.full((2, 4), np.nan)
    elif bad == 'negative_weight':
        kwargs['targets'] = {'a': (phi, -np.ones(3))}
    elif bad == 'dims':
        kwargs['candidates'] = {'a': np.ones((2, 5))}
    elif bad == 'mu':
        kwargs['target_weights'] = {'a': 0.0}
    elif bad == 'rho2':
        kwargs['rho2'] = 0.0
    with pytest.raises(SelectionError):
        SelectionInputs(**kwargs)


def test_batched_gains_equal_one_candidate_at_a_time():
    rng = np.random.default_rng(9)
    gp = WeightSpaceGP(6, 0.4, rng.normal(size=(5, 6)))
    targets = rng.normal(size=(20, 6))
    blocks = [rng.normal(size=(3, 6)), np.zeros((0, 6)), rng.normal(size=(2, 6))]
    batched = gp.information_gains(blocks, targets)
    for block, row in zip(blocks, batched):
        expected = gp.information_gain(block, targets) if len(block) else np.zeros(len(targets))
        np.testing.assert_allclose(row, expected, atol=1e-10)


def padded_problem(rng, dim=5):
    """Return candidate blocks of uneven sizes (one empty), targets and demos."""
    blocks = [rng.normal(size=(3, dim)), np.zeros((0, dim)), rng.normal(size=(1, dim)),
              rng.normal(size=(2, dim))]
    return blocks, rng.normal(size=(9, dim)), rng.normal(size=(4, dim))


@pytest.mark.parametrize('with_demos', [True, False])
def test_fantasy_posterior_gains_match_the_reference_gp(with_demos):
    rng = np.random.default_rng(21)
    blocks, targets, demos = padded_problem(rng)
    demos = demos if with_demos else np.zeros((0, 5))
    posterior = FantasyPosterior(blocks, targets, demos, 0.6, chunk_rows=4)
    reference = WeightSpaceGP(5, 0.6, demos)
    np.testing.assert_allclose(posterior.variance, reference.variance(targets), atol=1e-10)
    all_gains = posterior.all_gains()
    for index, block in enumerate(blocks):
        expected = reference.information_gain(block, targets)
        np.testing.assert_allclose(all_gains[index], expected, atol=1e-10)
        np.testing.assert_allclose(posterior.gains(index), expected, atol=1e-10)
    assert np.all(all_gains[1] == 0.0), 'a candidate without rows gains nothing'


def test_fantasy_conditioning_equals_recomputation_from_scratch():
    rng = np.random.default_rng(8)
    blocks, targets, demos = padded_problem(rng)
    updated = FantasyPosterior(blocks, targets, demos, 0.6)
    updated.condition(0)
    updated.condition(2)
    updated.condition(1)
    fresh = FantasyPosterior(blocks, targets, np.concatenate([demos, blocks[0], blocks[2]]), 0.6)
    np.testing.assert_allclose(updated.variance, fresh.variance, atol=1e-10)
    np.testing.assert_allclose(updated.cross, fresh.cross, atol=1e-10)
    np.testing.assert_allclose(updated.joint, fresh.joint, atol=1e-10)
    np.testing.assert_allclose(updated.all_gains(), fresh.all_gains(), atol=1e-9)


def test_later_greedy_picks_match_brute_force_after_appending_earlier_picks():
    rng = np.random.default_rng(13)
    inputs = random_problem(rng, tasks=4)
    result = amf_select(list(inputs.targets), {}, 3, inputs)
    demos = inputs.demos
    for step, pick in enumerate(result.chosen):
        for cand in inputs.targets:
            total = 0.0
            for task, (phi, w) in inputs.targets.items():
                before = kernel_space_variance(demos, phi, inputs.rho2)
                after = kernel_space_variance(np.concatenate([demos, inputs.candidates[cand]]),
                                              phi, inputs.rho2)
                total += 0.25 * np.sum(w / w.sum() * 0.5 * np.log(before / after))
            assert result.scores[step][cand] == pytest.approx(total, abs=1e-6)
        assert result.scores[step][pick] == max(result.scores[step].values())
        demos = np.concatenate([demos, inputs.candidates[pick]])


def test_target_weights_mu_scale_the_terms():
    rng = np.random.default_rng(6)
    base = random_problem(rng, tasks=3)
    mu = {'task-0': 3.0, 'task-1': 1.0, 'task-2': 0.0}
    weighted = SelectionInputs(base.targets, base.candidates, base.demos, mu, base.rho2)
    uniform = amf_select(list(base.targets), {}, 1, base).terms[0]
    terms = amf_select(list(base.targets), {}, 1, weighted).terms[0]
    for cand in base.targets:
        assert terms[cand]['task-2'] == 0.0
        assert terms[cand]['task-0'] == pytest.approx(uniform[cand]['task-0'] * 0.75 * 3, rel=1e-9)
        assert terms[cand]['task-1'] == pytest.approx(uniform[cand]['task-1'] * 0.25 * 3, rel=1e-9)


def test_arrays_without_rows_may_have_any_width_and_scores_are_json_ready():
    rng = np.random.default_rng(1)
    targets = {'a': (rng.normal(size=(4, 3)), np.ones(4)), 'b': (np.zeros((0, 0)), np.zeros(0))}
    candidates = {'a': np.zeros((0, 0)), 'b': rng.normal(size=(2, 3))}
    inputs = SelectionInputs(targets, candidates, np.zeros((0, 7)))
    assert inputs.dim == 3 and inputs.demos.shape == (0, 3)
    result = make_strategy('amf', ['a', 'b']).select(['a', 'b'], {}, 2, inputs)
    assert result.scores[0]['a'] == 0.0 and result.scores[0]['b'] > 0.0
    assert result.chosen[0] == 'b' and result.to_dict()['strategy'] == 'amf'
    assert all(np.isfinite(v) for step in result.scores for v in step.values())


def test_select_next_tasks_with_a_real_policy_gives_a_json_ready_batch():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tasks = ('reach-v3', 'push-v3', 'door-open-v3')
    policy = TaskPolicy(PolicyConfig(tasks=tasks, observation='state', hidden_dim=16,
                                     feature_dim=8))
    rng = np.random.default_rng(0)

    def episode(task):
        states = rng.normal(size=(20, 39)).astype(np.float32)
        return Episode(task=task, proprio=states[:, :4], actions=np.tanh(states[:, 4:8]),
                       states=states)

    demos = [episode('reach-v3'), episode('reach-v3')]
    rollouts = {t: [episode(t)] for t in tasks}
    strategy = make_strategy('amf', tasks)
    result = select_next_tasks(strategy, policy, tasks, demos, rollouts,
                               LoopConfig(demos_per_round=3), round_index=1)
    assert len(result.chosen) == 3 and set(result.chosen) <= set(tasks)
    assert all(np.isfinite(v) and v >= 0 for step in result.scores for v in step.values())
    assert json.loads(json.dumps(result.to_dict()))['chosen'] == result.chosen


def test_posterior_precision_and_covariance_are_inverse_and_match_the_definition():
    rng = np.random.default_rng(17)
    demos = rng.normal(size=(6, 4))
    gp = WeightSpaceGP(4, 0.25, demos)
    np.testing.assert_allclose(gp.precision, np.eye(4) + demos.T @ demos / 0.25, atol=1e-9)
    np.testing.assert_allclose(gp.precision @ gp.covariance, np.eye(4), atol=1e-9)
    gp.condition(rng.normal(size=(2, 4)))
    np.testing.assert_allclose(gp.precision @ gp.covariance, np.eye(4), atol=1e-9)
    with pytest.raises(ValueError, match='rho2'):
        WeightSpaceGP(4, -1.0)


def _before_problem(tasks, targets_per_task, dim, candidate_rows, demo_rows, rho2, seed):
    rng = np.random.default_rng(seed)
    names = [f'task-{i:02d}' for i in range(tasks)]
    scale = 1.0 / np.sqrt(dim)
    targets = {t: (rng.normal(size=(targets_per_task, dim)) * scale,
                   rng.uniform(0.1, 1.0, targets_per_task)) for t in names}
    candidates = {t: rng.normal(size=(candidate_rows, dim)) * scale for t in names}
    demos = rng.normal(size=(demo_rows, dim)) * scale
    return names, SelectionInputs(targets, candidates, demos, None, rho2)


def test_the_faster_selection_gives_the_picks_and_scores_of_before():
    """Picks and every score of two greedy batches equal those the previous code computed."""
    recorded = json.loads((Path(__file__).parent / 'data' / 'selection_before.json').read_text())
    assert len(recorded['cases']) == 2
    for case in recorded['cases']:
        names, inputs = _before_problem(**case['problem'])
        result = amf_select(names, {}, case['batch_size'], inputs)
        assert result.chosen == case['chosen']
        assert len(result.scores) == len(case['scores'])
        for scores, before in zip(result.scores, case['scores']):
            assert list(scores) == list(before)
            np.testing.assert_allclose([scores[t] for t in before], list(before.values()),
                                       rtol=1e-10, atol=0)


@pytest.mark.parametrize('chunk_rows', [3, 4096])
def test_conditioning_with_scoring_equals_conditioning_then_scoring(chunk_rows):
    rng = np.random.default_rng(11)
    blocks = [rng.normal(size=(4, 6)), rng.normal(size=(2, 6)), rng.normal(size=(4, 6))]
    targets, demos = rng.normal(size=(10, 6)), rng.normal(size=(5, 6))
    fused = FantasyPosterior(blocks, targets, demos, 0.8, chunk_rows=chunk_rows)
    plain = FantasyPosterior(blocks, targets, demos, 0.8, chunk_rows=chunk_rows)
    gains = fused.condition(1, score=True)
    assert plain.condition(1) is None
    np.testing.assert_allclose(gains, plain.all_gains(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(fused.cross, plain.cross, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(fused.variance, plain.variance, rtol=1e-12, atol=1e-15)
    assert gains.shape == (3, 10)
    fresh = FantasyPosterior(blocks, targets, np.concatenate([demos, blocks[1]]), 0.8)
    np.testing.assert_allclose(gains, fresh.all_gains(), rtol=1e-8, atol=1e-12)
