"""Baseline strategies behind the AMF interface: determinism, cycling, rebalancing, skipping."""

from active_finetune.amf.baselines import make_strategy, STRATEGY_NAMES
from active_finetune.amf.selection import SelectionError
import pytest

TASKS = ('a-v3', 'b-v3', 'c-v3', 'd-v3')


def test_uniform_is_seeded_and_covers_tasks():
    picks = [make_strategy('uniform', TASKS, seed=3).select(list(TASKS), {}, 40).chosen
             for _ in range(2)]
    assert picks[0] == picks[1]
    assert set(picks[0]) == set(TASKS)
    other = make_strategy('uniform', TASKS, seed=4).select(list(TASKS), {}, 40).chosen
    assert other != picks[0]


def test_round_robin_cycles_across_calls_and_skips():
    strategy = make_strategy('round_robin', TASKS)
    assert strategy.select(list(TASKS), {}, 3).chosen == ['a-v3', 'b-v3', 'c-v3']
    assert strategy.select(['a-v3', 'b-v3', 'c-v3'], {}, 2).chosen == ['a-v3', 'b-v3'], \
        'd-v3 is skipped, the cycle goes on'
    assert strategy.select(list(TASKS), {}, 2).chosen == ['c-v3', 'd-v3']


def test_least_demonstrated_counts_earlier_picks():
    strategy = make_strategy('least_demonstrated', TASKS)
    result = strategy.select(list(TASKS), {'a-v3': 2, 'b-v3': 0, 'c-v3': 1, 'd-v3': 3}, 3)
    assert result.chosen == ['b-v3', 'b-v3', 'c-v3']
    assert result.scores[0]['d-v3'] == -3.0


def test_privileged_rebalancing_equalises_with_pretraining():
    strategy = make_strategy('privileged_rebalancing', TASKS,
                             pretraining_counts={'a-v3': 5, 'b-v3': 5})
    result = strategy.select(list(TASKS), {'c-v3': 1}, 4)
    assert result.chosen == ['d-v3', 'c-v3', 'd-v3', 'c-v3']


@pytest.mark.parametrize('name', [n for n in STRATEGY_NAMES if n != 'amf'])
def test_skipped_tasks_are_never_chosen(name):
    strategy = make_strategy(name, TASKS, seed=1, pretraining_counts={'a-v3': 9})
    result = strategy.select(['b-v3', 'd-v3'], {}, 6)
    assert set(result.chosen) <= {'b-v3', 'd-v3'} and not strategy.needs_embeddings
    assert result.to_dict()['strategy'] == name


def test_amf_needs_embeddings_and_unknown_names_are_refused():
    amf = make_strategy('amf', TASKS)
    assert amf.needs_embeddings
    with pytest.raises(SelectionError, match='embeddings'):
        amf.select(list(TASKS), {}, 1, None)
    with pytest.raises(ValueError, match='round_robin'):
        make_strategy('random', TASKS)
    with pytest.raises(SelectionError):
        make_strategy('uniform', TASKS).select([], {}, 1)


def test_uniform_depends_only_on_seed_and_call_count():
    first, second = (make_strategy('uniform', TASKS, seed=7) for _ in range(2))
    calls_first = [first.select(list(TASKS), {}, 5).chosen for _ in range(3)]
    calls_second = [second.select(list(TASKS), {}, 5).chosen for _ in range(3)]
    assert calls_first == calls_second
    assert calls_first[0] != calls_first[1] or calls_first[1] != calls_first[2]


def test_privileged_rebalancing_reaches_equal_totals():
    pretraining = {'a-v3': 6, 'b-v3': 4, 'c-v3': 2, 'd-v3': 0}
    strategy = make_strategy('privileged_rebalancing', TASKS, pretraining_counts=pretraining)
    counts = dict.fromkeys(TASKS, 0)
    for _ in range(3):
        for task in strategy.select(list(TASKS), counts, 4).chosen:
            counts[task] += 1
    totals = {t: pretraining[t] + counts[t] for t in TASKS}
    assert set(totals.values()) == {6} and counts['a-v3'] == 0
    assert strategy.select(list(TASKS), counts, 1).scores[0] == {t: -6.0 for t in TASKS}


def test_round_robin_scores_mark_the_next_task():
    strategy = make_strategy('round_robin', TASKS)
    result = strategy.select(list(TASKS), {}, 2)
    assert result.scores[0] == {'a-v3': 1.0, 'b-v3': 0.0, 'c-v3': 0.0, 'd-v3': 0.0}
    assert result.scores[1]['b-v3'] == 1.0 and result.terms == []
