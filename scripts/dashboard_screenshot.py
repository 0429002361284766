"""
Take the README's screenshot of the operator dashboard (docs/dashboard.png) during a sim run.

Starts the ``sim`` graph with the project runner and the scripted operator (the loop runs by
itself: suggestion, scripted demo, fine-tuning round, evaluation), the dashboard on a free
port, and waits until the trainer has evaluated ``--rounds`` fine-tuned checkpoints and the task
selector has suggested the next task after the last one; then opens the page in Debian's
headless Chromium (playwright with ``executable_path``), waits for camera frames and writes a
full-page PNG.  Small settings (few fine-tuning steps, one evaluation episode per task) keep it
to minutes; the page shows the real nodes' messages.

Usage, from the repository root::

    MUJOCO_GL=egl .venv/bin/python scripts/dashboard_screenshot.py --output docs/dashboard.png
"""

import argparse
import os
from pathlib import Path
import random
import shutil
import sys
import tempfile
import time


def loop_progress(state, rounds):
    """
    Tell whether the page has what the screenshot should show.

    :param state: /api/state snapshot (or None)
    :param rounds: fine-tuned checkpoints that must have been evaluated
    :return: True once ``rounds`` evaluations arrived and a suggestion for the newest policy
        version (with scores) followed them, or the budget is spent
    """
    if not state:
        return False
    versions = [e.get('version') or 0 for e in state.get('evaluations') or []]
    if not versions or max(versions) < rounds:
        return False
    suggestion = (state.get('topics') or {}).get('operator/next_task') or {}
    return bool(suggestion.get('done') or (
        suggestion.get('scores') and (suggestion.get('policy_version') or 0) >= rounds))


def main(argv=None):
    """
    Run the sim loop, then write the screenshot.

    :param argv: command-line arguments
    :return: exit status
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--output', default='docs/dashboard.png')
    parser.add_argument('--rounds', type=int, default=2,
                        help='fine-tuning rounds to wait for before the screenshot')
    parser.add_argument('--demos-per-round', type=int, default=2)
    parser.add_argument('--finetune-steps', type=int, default=60)
    parser.add_argument('--eval-episodes', type=int, default=1)
    parser.add_argument('--eval-max-steps', type=int, default=100)
    parser.add_argument('--width', type=int, default=1500, help='browser viewport width (px)')
    parser.add_argument('--height', type=int, default=1000, help='browser viewport height (px)')
    parser.add_argument('--timeout-s', type=float, default=1800.0)
    parser.add_argument('--page-timeout-s', type=float, default=180.0,
                        help='how long the page may take to load and draw (a loaded machine)')
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from active_finetune.dashboard.probe import free_port, get_state
    from active_finetune.runner import GraphRunner
    from playwright.sync_api import sync_playwright

    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    if not chromium:
        parser.error('chromium is not installed: run scripts/setup.sh (apt-get install chromium)')
    os.environ.setdefault('MUJOCO_GL', 'egl')
    domain_id = random.SystemRandom().randint(150, 230)
    port = free_port()
    url = f'http://127.0.0.1:{port}/'
    tmp = tempfile.TemporaryDirectory(prefix='dashboard_screenshot_')
    dataset = Path(tmp.name) / 'episodes'
    # Room for more rounds: the loop goes on while the browser loads, and a spent budget
    # leaves no scores to show.
    budget = args.demos_per_round * (args.rounds + 4)
    overrides = {
        'task_selector.budget': budget, 'task_selector.demos_per_round': args.demos_per_round,
        'task_selector.sim_rollouts_per_task': 0, 'task_selector.dataset_dir': str(dataset),
        'demo_recorder.dataset_dir': str(dataset), 'trainer.dataset_dir': str(dataset),
        'trainer.checkpoint_dir': str(Path(tmp.name) / 'checkpoints'),
        'trainer.demos_per_round': args.demos_per_round, 'trainer.steps': args.finetune_steps,
        'trainer.evaluate_episodes': args.eval_episodes,
        'trainer.evaluate_max_steps': args.eval_max_steps,
        'trainer.log_dir': str(Path(tmp.name) / 'tensorboard'),
        'dashboard.port': port, 'dashboard.dataset_dir': str(dataset),
    }
    graph = GraphRunner('sim', overrides=overrides, log_dir=Path(tmp.name) / 'logs',
                        env={'ROS_DOMAIN_ID': str(domain_id),
                             'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'})
    started = time.monotonic()
    try:
        graph.start()
        print(f'sim graph running, dashboard at {url}; waiting for {args.rounds} rounds',
              flush=True)
        deadline = started + args.timeout_s
        while not loop_progress(get_state(url), args.rounds):
            graph.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f'no {args.rounds} evaluated rounds within '
                                   f'{args.timeout_s:.0f} s')
            time.sleep(2.0)
        print(f'{args.rounds} rounds evaluated after {time.monotonic() - started:.0f} s; '
              'taking the screenshot', flush=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={'width': args.width, 'height': args.height})
            page.set_default_timeout(args.page_timeout_s * 1e3)
            page.goto(url)
            page.wait_for_function('window.afStats.connected && window.afStats.frames.full >= 5 '
                                   '&& window.afStats.states >= 3', polling=200)
            missing = []
            for selector in ('#scores-chart rect.bar', '#success-chart polyline',
                             '#loss-chart polyline'):
                try:
                    page.wait_for_selector(selector, state='attached')
                except Exception:  # noqa: B902 - playwright's TimeoutError: say what is missing
                    missing.append(selector)
            time.sleep(2.0)
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.output, full_page=True)
            browser.close()
        if missing:
            raise RuntimeError(f'{args.output} written, but the page has no {missing}')
    except Exception:
        print(graph.log_tails(10), file=sys.stderr)
        raise
    finally:
        graph.stop()
        tmp.cleanup()
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
