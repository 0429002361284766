"""af-experiment shows progress within each run: one line and one bar step per round."""

import io
from multiprocessing.pool import ThreadPool
import queue

from active_finetune.commands.experiment import follow_progress, main, report_round, \
    rounds_per_run
import pytest
from tqdm import tqdm

TINY = ['--observation', 'state', '--tasks', 'reach-v3,window-open-v3', '--mix', 'reach-v3=2',
        '--budget', '2', '--demos-per-round', '1', '--pretrain-steps', '20',
        '--finetune-steps', '5', '--batch-size', '16', '--eval-episodes', '1',
        '--target-rollouts', '1', '--max-steps', '30', '--seeds', '1', '--workers', '1']


def test_follow_progress_moves_the_bar_per_round_and_returns_the_results():
    spec = {'budget': 5, 'demos_per_round': 2}
    assert rounds_per_run(spec) == 4  # evaluation before fine-tuning + 3 rounds (2, 2, 1 demos)
    progress = queue.Queue()

    def run(seed):
        for index, demos in enumerate((0, 2, 4, 5)):
            report_round(progress, 'amf', seed, index, spec, demos, 0.1 * index)
        return seed

    lines = []
    with ThreadPool(2) as pool, tqdm(total=2 * 4, file=io.StringIO()) as bar:
        bar.write = lines.append
        assert follow_progress(pool.map_async(run, [0, 1]), progress, bar, poll_s=0.01) == [0, 1]
        assert bar.n == 8
    seed0 = [line for line in lines if line.startswith('amf seed 0')]
    assert seed0 == [f'amf seed 0: round {k}/3, demos used {d}/5, mean success {0.1 * k:.2f}'
                     for k, d in enumerate((0, 2, 4, 5))]
    report_round(None, 'amf', 0, 1, spec, 2, 0.5)  # without a queue: nothing to do


@pytest.mark.timeout(300)
def test_experiment_prints_each_round_of_each_run_and_resumed_runs(tmp_path, capsys):
    out = tmp_path / 'exp'
    assert main(['--out', str(out), '--strategies', 'amf'] + TINY) == 0
    printed = capsys.readouterr().out
    rounds = [line for line in printed.splitlines() if line.startswith('amf seed 0: round')]
    assert [line.split(', mean success')[0] for line in rounds] == [
        'amf seed 0: round 0/2, demos used 0/2', 'amf seed 0: round 1/2, demos used 1/2',
        'amf seed 0: round 2/2, demos used 2/2']
    assert main(['--out', str(out), '--strategies', 'amf'] + TINY) == 0
    assert 'amf seed 0: round 2/2, demos used 2/2 (finished earlier)' in capsys.readouterr().out
