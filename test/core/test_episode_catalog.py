"""Episodes by announcement: the catalog, the decoded-episode caches, the index's one writer."""

import os

from active_finetune.data.episode_catalog import EpisodeCatalog, EpisodeDiskCache, \
    EpisodeMemoryCache
from active_finetune.data.episode_index import entry_for_file, INDEX_FILE, \
    list_saved_episodes, read_index
from active_finetune.data.mcap_episode import EpisodeFileError, load_episode
from active_finetune.data.recorder import EpisodeRecorder, RecorderSettings
from active_finetune.payloads import EpisodeSaved
import numpy as np
import pytest

GRIPPER = 'gripper_finger_distance'


def record(recorder, task, steps, seed):
    rng = np.random.default_rng(seed)
    recorder.start(task)
    t0 = 1_700_000_000_000_000_000 + seed * 10_000_000_000
    for step in range(steps):
        t = t0 + step * 50_000_000
        recorder.add_joint_state(['arm', GRIPPER], [0.1, 0.05], stamp_ns=t, log_time_ns=t)
        recorder.add_ee_pose(tuple(rng.uniform(-0.2, 0.2, 3)), stamp_ns=t, log_time_ns=t)
        recorder.add_twist(tuple(rng.uniform(-0.2, 0.2, 3)), stamp_ns=t, log_time_ns=t)
        recorder.add_gripper(1.0, log_time_ns=t)
        recorder.add_image(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8), t, 'camera',
                           log_time_ns=t + 1_000_000)
    recorder.stop(success=True)
    assert recorder.wait_idle(30.0)
    return recorder.last_result


@pytest.fixture
def dataset(tmp_path):
    directory = tmp_path / 'episodes'
    recorder = EpisodeRecorder(RecorderSettings(dataset_dir=str(directory),
                                                min_free_disk_mb=0.0))
    try:
        for number, task in enumerate(('reach-v3', 'push-v3', 'reach-v3')):
            record(recorder, task, 8, seed=number)
    finally:
        recorder.close()
    return directory


def announcement(entry, root=None):
    """Build the recorder's EpisodeSaved for a listed entry, as seen where ``root`` is mounted."""
    path, bag = entry['path'], entry['bag_path'] or ''
    if root is not None:
        path, bag = str(root / entry['file']), str(root / entry['file'].split('/')[0])
    return EpisodeSaved(path=path, sha256=entry['sha256'], task=entry['task'],
                        success=entry['success'], frames=entry['frames'], bag_path=bag)


def test_catalog_takes_announcements_and_lists_only_at_rescan(dataset, tmp_path):
    listed = list_saved_episodes(dataset)
    assert len(listed) == 3
    catalog = EpisodeCatalog(dataset)
    assert catalog.entries() == [], 'nothing is listed before a rescan or an announcement'
    # The recorder's machine mounts the directory elsewhere: the names relative to it count.
    elsewhere = tmp_path / 'recorder_mount'
    assert catalog.add(announcement(listed[0], elsewhere)) == 'added'
    assert catalog.add(announcement(listed[0], elsewhere)) == 'known'
    assert [e['path'] for e in catalog.entries()] == [listed[0]['path']]
    # Without bag_path (an older recorder), the <bag>/<bag>.mcap path still names the bag.
    second = announcement(listed[1], elsewhere)
    assert catalog.add(EpisodeSaved(**{**second.to_dict(), 'bag_path': ''})) == 'added'
    assert catalog.entries()[1]['path'] == listed[1]['path']
    assert catalog.entries()[1]['bag_path'] == listed[1]['bag_path']
    assert catalog.rescans == 0
    assert catalog.rescan() == 3
    assert [e['path'] for e in catalog.entries()] == [e['path'] for e in listed]
    assert catalog.add(announcement(listed[2])) == 'known'
    # An announcement whose file is not visible yet (a share lagging) waits, then is listed.
    late = dict(listed[2], path=str(dataset / 'episode_000009_push-v3' /
                                    'episode_000009_push-v3.mcap'),
                bag_path=str(dataset / 'episode_000009_push-v3'))
    assert catalog.add(announcement(late)) == 'pending'
    assert len(catalog.entries()) == 3 and catalog.pending
    os.rename(os.path.dirname(listed[2]['path']), dataset / 'episode_000009_push-v3')
    os.rename(dataset / 'episode_000009_push-v3' / os.path.basename(listed[2]['path']),
              late['path'])
    assert catalog.entries()[-1]['path'] == late['path'] and not catalog.pending
    with pytest.raises(ValueError, match='not a saved episode'):
        catalog.add(EpisodeSaved(path='/x/notes.txt', sha256='a' * 64, task='t', success=True))


def test_readers_never_write_the_index(dataset):
    listed = list_saved_episodes(dataset)
    # A crash between rename and index append: the index lacks the last episode.
    index = dataset / INDEX_FILE
    lines = index.read_text().splitlines(keepends=True)
    index.write_text(''.join(lines[:2]))
    before = index.read_bytes()
    catalog = EpisodeCatalog(dataset)
    catalog.rescan()
    assert [e['path'] for e in catalog.entries()] == [e['path'] for e in listed], \
        'the unindexed episode is listed'
    assert index.read_bytes() == before, 'a reader leaves the index alone'
    # The recorder, at its next start, indexes it.
    EpisodeRecorder(RecorderSettings(dataset_dir=str(dataset), min_free_disk_mb=0.0)).close()
    assert [e['file'] for e in read_index(dataset)] == [e['file'] for e in listed]


def counting_loader():
    calls = []

    def loader(path, image_size):
        calls.append(str(path))
        return load_episode(path, image_size=image_size)
    return loader, calls


def assert_same_episode(a, b):
    assert a.task == b.task and a.success == b.success
    for name in ('proprio', 'actions', 'images'):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.metadata['path'] == b.metadata['path']
    assert a.metadata['frame_log_times_ns'] == b.metadata['frame_log_times_ns']


@pytest.mark.parametrize('kind', ['memory', 'disk'])
def test_cache_decodes_once_by_sha256_and_again_when_the_file_changes(dataset, tmp_path, kind):
    listed = list_saved_episodes(dataset)
    loader, calls = counting_loader()
    if kind == 'memory':
        cache = EpisodeMemoryCache(1e9, loader=loader)
    else:
        cache = EpisodeDiskCache(tmp_path / 'cache', 1e9, loader=loader)
    for _ in range(3):  # three rounds
        loaded = [cache.load(e['path'], e['sha256'], (16, 16)) for e in listed]
    assert len(calls) == 3, 'each episode decoded once'
    for entry, episode in zip(listed, loaded):
        assert_same_episode(episode, load_episode(entry['path'], image_size=(16, 16)))
    cache.load(listed[0]['path'], listed[0]['sha256'], (8, 8))
    assert len(calls) == 4, 'another image size is another entry'
    # The file is truncated after it was announced: decoded again, and it no longer loads.
    path = listed[1]['path']
    with open(path, 'r+b') as stream:
        stream.truncate(os.path.getsize(path) // 2)
    with pytest.raises(EpisodeFileError):
        cache.load(path, listed[1]['sha256'], (16, 16))
    assert len(calls) == 5
    with pytest.raises(EpisodeFileError):
        cache.load(path, listed[1]['sha256'], (16, 16))
    assert len(calls) == 6, 'a file that fails is not cached'


def test_caches_are_bounded(dataset, tmp_path):
    listed = list_saved_episodes(dataset)
    one = sum(a.nbytes for a in (lambda e: (e.proprio, e.actions, e.images))(
        load_episode(listed[0]['path'], image_size=(16, 16))))
    loader, calls = counting_loader()
    memory = EpisodeMemoryCache(2.5 * one, loader=loader)
    for entry in listed:
        memory.load(entry['path'], entry['sha256'], (16, 16))
    assert len(memory) == 2 and memory.size_bytes <= 2.5 * one
    memory.load(listed[0]['path'], listed[0]['sha256'], (16, 16))
    assert len(calls) == 4, 'the least recently used one was dropped'
    disk = EpisodeDiskCache(tmp_path / 'cache', 1e9)
    for entry in listed:
        disk.load(entry['path'], entry['sha256'], (16, 16))
    files = sorted((tmp_path / 'cache').glob('*.npz'))
    assert len(files) == 3 and {f.name[:64] for f in files} == {e['sha256'] for e in listed}
    file_bytes = max(f.stat().st_size for f in files)
    small = EpisodeDiskCache(tmp_path / 'cache', 2.5 * file_bytes)
    os.utime(tmp_path / 'cache' / files[0].name, ns=(1, 1))
    small.load(listed[0]['path'], 'f' * 64, (16, 16))  # a fourth entry: two go
    left = sorted(f.name for f in (tmp_path / 'cache').glob('*.npz'))
    assert len(left) == 2 and files[0].name not in left


def test_disk_cache_refuses_a_cache_file_of_another_file_state(dataset, tmp_path):
    listed = list_saved_episodes(dataset)
    entry = listed[0]
    loader, calls = counting_loader()
    cache = EpisodeDiskCache(tmp_path / 'cache', 1e9, loader=loader)
    cache.load(entry['path'], entry['sha256'], (16, 16))
    os.utime(entry['path'], ns=(5, 5))  # touched: same bytes, another state
    cache.load(entry['path'], entry['sha256'], (16, 16))
    assert len(calls) == 2 and cache.hits == 0
    (next((tmp_path / 'cache').glob('*.npz'))).write_bytes(b'not a zip')
    episode = cache.load(entry['path'], entry['sha256'], (16, 16))
    assert len(calls) == 3, 'an unreadable cache file is decoded again'
    assert_same_episode(episode, load_episode(entry['path'], image_size=(16, 16)))
    assert entry_for_file(entry['path'])['sha256'] == entry['sha256']
