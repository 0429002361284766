"""The main job's targets option, its report table and its plot (ROS-free parts)."""

from active_finetune.commands.evaluate import success_table
from active_finetune.commands.main_job import mean_over, plot_results, resolve_targets
import pytest
from rich.console import Console

TASKS = ['reach-v3', 'push-v3', 'window-open-v3', 'drawer-close-v3']
PROVENANCE = {'mix': {'reach-v3': 40, 'push-v3': 40, 'window-open-v3': 0}}


def test_new_targets_are_the_tasks_without_pretraining_demos():
    assert resolve_targets('new', TASKS, PROVENANCE) == ['window-open-v3', 'drawer-close-v3']
    assert resolve_targets('all', TASKS, PROVENANCE) == TASKS
    assert resolve_targets('push-v3, reach-v3', TASKS, PROVENANCE) == ['push-v3', 'reach-v3']
    # Every task pretrained: 'new' falls back to every task rather than to none.
    assert resolve_targets('new', TASKS[:2], PROVENANCE) == TASKS[:2]


def test_bad_targets_are_refused_with_the_reason():
    with pytest.raises(ValueError, match='pick-place-v3'):
        resolve_targets('pick-place-v3', TASKS, PROVENANCE)
    with pytest.raises(ValueError, match='pretraining mix'):
        resolve_targets('new', TASKS, {})


def test_table_has_a_target_mean_row_and_marks_the_targets(tmp_path):
    before = dict(zip(TASKS, (1.0, 0.5, 0.0, 0.2)))
    after = dict(zip(TASKS, (1.0, 0.5, 0.8, 0.6)))
    targets = resolve_targets('new', TASKS, PROVENANCE)
    assert mean_over(after, targets) == pytest.approx(0.7)
    console = Console(width=100, record=True)
    console.print(success_table('per-task success', {'pretrained': before, 'after': after},
                                subset=targets))
    text = console.export_text()
    assert 'window-open-v3 *' in text and 'reach-v3 *' not in text
    target_row = next(line for line in text.splitlines() if 'mean, targets' in line)
    assert '0.10' in target_row and '0.70' in target_row
    curve = [(0, mean_over(before, TASKS), mean_over(before, targets)),
             (2, mean_over(after, TASKS), mean_over(after, targets))]
    plot_results(before, after, curve, tmp_path / 'loop.png', targets)
    assert (tmp_path / 'loop.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
