"""AMF selection: weight-space GP against a brute-force kernel GP, monotonicity, invariances, edge cases."""

from active_finetune.amf.gp import WeightSpaceGP
from active_finetune.amf.selection import SelectionError, SelectionInputs, amf_select
import numpy as np
import pytest


def kernel_space_variance(demos, targets, rho2):
    """sigma^2(x) = k(x,x) - k(x,D) (K_DD + rho2 I)^-1 k(D,x) with k(x,x') = x.x' (explicit Gram)."""
    if len(demos) == 0:
        return np.einsum('ij,ij->i', targets, targets)
    gram = demos @ demos.T + rho2 * np.eye(len(demos))
    cross = targets @ demos.T
    return np.einsum('ij,ij->i', targets, targets) - np.einsum(
        'ij,ji->i', cross, np.linalg.solve(gram, cross.T))


def random_problem(rng, tasks=4, dim=6, per_task=5, demos=3):
    names = [f'task-{i}' for i in range(tasks)]
    targets = {t: (rng.normal(size=(per_task, dim)), rng.uniform(0.1, 1.0, per_task)) for t in names}
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
    assert result.chosen == ['b-task', 'b-task'] or result.chosen == ['b-task', 'c-task']
    assert result.chosen[0] == 'b-task', 'ties go to the least-demonstrated task'


def test_one_task_no_demos_and_empty_candidates():
    rng = np.random.default_rng(0)
    inputs = SelectionInputs({'only': (rng.normal(size=(5, 4)), np.ones(5))},
                             {'only': np.zeros((0, 4))}, np.zeros((0, 4)))
    result = amf_select(['only'], {}, 2, inputs)
    assert result.chosen == ['only', 'only'] and result.scores[0]['only'] == 0.0


@pytest.mark.parametrize('bad', ['nan_target', 'nan_demo', 'negative_weight', 'dims', 'mu', 'rho2'])
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
