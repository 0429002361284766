"""
Time of one AMF suggestion of the task selector on a main job's recorded demos, trunk reuse on/off.

Loads the ROS-recorded demos of a main-job run (``bash scripts/main_job.sh``) and a checkpoint of
that run, and times :meth:`SelectorSession.suggestion` (what the task selector node runs for every
request) with the first ``n`` demos for each ``n`` of ``--demos``, two ways side by side, order
alternating per repeat:

- ``reuse``: the frozen pretrained trunk's features of every demo frame are computed once per
  suggestion and shared by every task's importance weights and embeddings (this revision);
- ``recompute``: the trunk runs again on the same frames for every task (before);
- ``cached``: the second suggestion of one session with the same checkpoint (as the requests
  within a round): the demos' features come from the session's cache.

Both must give the same scores.  Writes results/bench_selector_scoring.json.

    MUJOCO_GL=egl .venv/bin/python bench/bench_selector_scoring.py --run runs/main_job_<time>
"""

import argparse
import json
import os
from pathlib import Path
import shlex
import sys
import time

from active_finetune.amf import embeddings
from active_finetune.amf.selector_session import SelectorSession, SelectorSettings
from active_finetune.commands.common import setup_cli
from active_finetune.data.mcap_episode import load_episode
from active_finetune.policy.checkpoint import load_checkpoint
import numpy as np
import torch

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
TARGETS = ('drawer-close-v3', 'button-press-topdown-v3', 'peg-insert-side-v3', 'window-open-v3',
           'window-close-v3')


def suggest(policy, demos, way):
    """
    One suggestion, timed.

    :param policy: the current policy
    :param demos: demo episodes so far
    :param way: 'recompute' (the trunk runs on every pass), 'reuse' (once per suggestion) or
        'cached' (a second suggestion of the same session with the same checkpoint, as the
        requests of one round: the demos' features come from the session's cache)
    :return: (seconds, suggestion dict)
    """
    session = SelectorSession(SelectorSettings(strategy='amf', budget=len(demos) + 4,
                                               demos_per_round=2, target_tasks=TARGETS),
                              policy.config.tasks)
    rollouts = {t: [demos[i % len(demos)]] for i, t in enumerate(policy.config.tasks)}
    saved = embeddings.TrunkFeatureCache.rows
    if way == 'recompute':
        embeddings.TrunkFeatureCache.rows = lambda self, runner, rows: rows
    try:
        if way == 'cached':
            session.suggestion(policy, 1, len(demos), demos, rollouts)
        t0 = time.perf_counter()
        out = session.suggestion(policy, 1, len(demos), demos, rollouts)
        return time.perf_counter() - t0, out
    finally:
        embeddings.TrunkFeatureCache.rows = saved


def main(argv=None):
    """Run the benchmark and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--run', required=True, help='main-job run directory')
    parser.add_argument('--version', default='v0001', help='checkpoint of the run to score with')
    parser.add_argument('--demos', default='4,8,12')
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads (the task selector node uses 1)')
    parser.add_argument('--out', default=str(REPOSITORY_ROOT / 'results'
                                             / 'bench_selector_scoring.json'))
    args = parser.parse_args(argv)
    setup_cli()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    policy, _ = load_checkpoint(str(run / 'checkpoints' / args.version))
    size = policy.config.image_size
    records = [json.loads(line) for line in
               (run / 'episodes' / 'episodes.jsonl').read_text().splitlines() if line.strip()]
    episodes = [load_episode(run / 'episodes' / r['file'], image_size=(size, size))
                for r in records]
    rows = []
    load_start = os.getloadavg()
    for n in map(int, args.demos.split(',')):
        demos = episodes[:n]
        ways = ('recompute', 'reuse', 'cached')
        times = {way: [] for way in ways}
        outs = {}
        for repeat in range(args.repeats):
            for way in (ways if repeat % 2 == 0 else ways[::-1]):
                seconds, outs[way] = suggest(policy, demos, way)
                times[way].append(seconds)
        row = {'demos': n, 'frames': int(sum(len(e) for e in demos))}
        for way in ways:
            row[f'{way}_s'] = [round(t, 2) for t in times[way]]
        for way in ways[1:]:
            row[f'speedup_{way}_paired_median'] = round(float(np.median(
                np.array(times['recompute']) / np.array(times[way]))), 2)
            row[f'same_tasks_{way}'] = \
                outs[way]['tasks_this_round'] == outs['recompute']['tasks_this_round']
            row[f'largest_score_difference_{way}'] = max(
                abs(outs[way]['scores'][t] - outs['recompute']['scores'][t])
                for t in outs['recompute']['scores'])
        rows.append(row)
        print(json.dumps(rows[-1]), flush=True)
    result = {'command': ' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
              'run': str(run), 'checkpoint': args.version, 'threads': args.threads,
              'cpu_count': os.cpu_count(), 'loadavg_start': load_start,
              'loadavg_end': os.getloadavg(), 'rows': rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
