"""The episode index's warnings: once per file and state, not on every listing (polls)."""

import logging
import os

from active_finetune.data.episode_index import append_index_entry, INDEX_FILE, \
    list_saved_episodes


def warnings_about(caplog, text):
    return [r for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


def test_each_problem_is_warned_about_once_per_file_state(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger='active_finetune.data.episode_index')
    append_index_entry(tmp_path, {'file': 'episode_000001_reach.mcap', 'task': 'reach',
                                  'success': True, 'frames': 3, 'sha256': 'ab',
                                  'saved_unix_s': 1.0})
    with open(tmp_path / INDEX_FILE, 'a') as index:
        index.write('{"file": "episode_000002_re')  # a torn line
    unusable = tmp_path / 'episode_000003_push.mcap'
    unusable.write_bytes(b'\x89MCAP0\r\n' + b'\x00' * 64)
    for _ in range(3):  # three polls
        assert list_saved_episodes(tmp_path) == []
    assert len(warnings_about(caplog, 'episode_000001_reach.mcap is missing')) == 1
    assert len(warnings_about(caplog, 'torn or malformed')) == 1
    assert len(warnings_about(caplog, 'episode_000003_push.mcap is not a usable')) == 1
    # The same file in another state is a new problem: warned about again, once.
    unusable.write_bytes(b'\x89MCAP0\r\n' + b'\x00' * 80)
    os.utime(unusable, ns=(1, 1))
    for _ in range(2):
        list_saved_episodes(tmp_path)
    assert len(warnings_about(caplog, 'episode_000003_push.mcap is not a usable')) == 2
