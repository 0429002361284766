"""
Saved episodes as the trainer and the task selector know them, and decoded episodes by sha256.

ROS-free.  :class:`EpisodeCatalog` is filled once from the dataset directory at start-up
(:meth:`EpisodeCatalog.rescan`, also on request) and then by the recorder's announcements on
``recorder/episode`` (:meth:`EpisodeCatalog.add`), so no process but the recorder reads the index
every round, and none but the recorder writes it.

Decoded episodes (:func:`active_finetune.data.mcap_episode.load_episode` at one image size) are
cached under the sha256 of their MCAP file, so an episode is decoded once however many rounds or
re-scorings use it:

- :class:`EpisodeMemoryCache`: in the process (the task selector), least recently used first out
  past ``max_bytes``;
- :class:`EpisodeDiskCache`: a directory of uncompressed ``.npz`` files (the trainer, whose rounds
  run in a new process each), oldest use first out past ``max_bytes``.

A cached episode is used only while its file's size and modification time are those it was
decoded from (:func:`~active_finetune.data.episode_index.file_state`): a file rewritten or
truncated after it was announced is decoded again (and skipped if it no longer loads).  Files
that fail to load are never cached.
"""

from collections import OrderedDict
import json
import logging
import os
from pathlib import Path
import threading

from active_finetune.data.episode import Episode
from active_finetune.data.episode_index import BAG_DIR_RE, bag_file_name, file_state, \
    is_index_file_name, list_saved_episodes
from active_finetune.data.mcap_episode import load_episode
import numpy as np

LOGGER = logging.getLogger(__name__)

_ARRAYS = ('proprio', 'actions', 'images', 'states', 'joint_positions')


class EpisodeCatalog:
    """
    The saved episodes of one dataset directory, in save order, kept up to date by announcements.

    :param dataset_dir: the dataset directory as this process mounts it
    """

    def __init__(self, dataset_dir):
        self.dataset_dir = Path(dataset_dir)
        self._entries = OrderedDict()
        self._pending = OrderedDict()
        self._lock = threading.Lock()
        self.rescans = 0

    def rescan(self):
        """
        List the directory (read-only: the recorder alone writes the index) and adopt the listing.

        Announced episodes the listing lacks (the index line not yet visible on a network share)
        are kept, after the listed ones.

        :return: number of episodes known
        :raises OSError: when the directory cannot be read
        """
        listed = list_saved_episodes(self.dataset_dir, write=False)
        with self._lock:
            entries = OrderedDict((e['file'], e) for e in listed)
            for name, entry in self._entries.items():
                if name not in entries and os.path.exists(entry['path']):
                    entries[name] = entry
            self._entries = entries
            self.rescans += 1
            return len(self._entries)

    def add(self, episode):
        """
        Take one ``recorder/episode`` announcement.

        The file is looked for under this process's ``dataset_dir`` by its name relative to the
        recorder's (``<bag>/<bag>.mcap`` or ``<name>.mcap``), so the directory may be mounted at
        another path; an episode whose file is not there yet is kept pending and looked for again
        at every :meth:`entries`.

        :param episode: :class:`active_finetune.payloads.EpisodeSaved`
        :return: 'added', 'known' (already listed) or 'pending'
        :raises ValueError: for a path that is not a saved episode's
        """
        mcap = Path(episode.path)
        bag = Path(episode.bag_path).name if episode.bag_path else ''
        if not bag and mcap.name == f'{mcap.parent.name}.mcap' and BAG_DIR_RE.match(
                mcap.parent.name):
            bag = mcap.parent.name  # a recorder that does not fill bag_path
        name = bag_file_name(bag) if bag else mcap.name
        if not is_index_file_name(name) or not name.endswith('.mcap'):
            raise ValueError(f'recorder/episode path {episode.path!r} is not a saved episode')
        local = self.dataset_dir / name
        entry = {'file': name, 'path': str(local),
                 'bag_path': str(local.parent) if bag else None,
                 'task': episode.task, 'success': bool(episode.success), 'frames': episode.frames,
                 'steps': episode.steps, 'sha256': episode.sha256,
                 'request_id': episode.request_id}
        with self._lock:
            if name in self._entries:
                return 'known'
            self._pending[name] = entry
        self._promote()
        with self._lock:
            return 'added' if name in self._entries else 'pending'

    def _promote(self):
        with self._lock:
            for name in [n for n, e in self._pending.items() if os.path.exists(e['path'])]:
                self._entries[name] = self._pending.pop(name)

    def entries(self):
        """
        List the known episodes as :func:`list_saved_episodes` does (no directory listing).

        :return: list of entry dicts with 'path', 'bag_path', 'task', 'success', 'sha256', ...
        """
        if self._pending:
            self._promote()
        with self._lock:
            return list(self._entries.values())

    @property
    def pending(self):
        """:return: names of announced episodes whose file is not visible here yet."""
        with self._lock:
            return list(self._pending)


def episode_bytes(episode):
    """
    Memory an episode's arrays take.

    :param episode: :class:`Episode`
    :return: bytes
    """
    return sum(getattr(episode, name).nbytes for name in _ARRAYS
               if getattr(episode, name) is not None)


def _key(sha256, image_size):
    size = 'full' if image_size is None else f'{image_size[0]}x{image_size[1]}'
    return f'{sha256}_{size}'


class EpisodeMemoryCache:
    """
    Decoded episodes in memory by (sha256, image size); least recently used out past max_bytes.

    :param max_bytes: bound on the arrays kept (an episode larger than it is not kept)
    :param loader: callable(path, image_size) -> Episode (:func:`load_episode`)
    """

    def __init__(self, max_bytes, loader=load_episode):
        self.max_bytes = int(max_bytes)
        self._loader = loader
        self._items = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def size_bytes(self):
        """:return: bytes of the episodes kept."""
        return self._bytes

    def __len__(self):
        return len(self._items)

    def load(self, path, sha256, image_size):
        """
        Return the decoded episode, from the cache when its file is unchanged.

        :param path: the MCAP file (or bag directory)
        :param sha256: the announced or indexed sha256 of the file
        :param image_size: (height, width) or None
        :return: :class:`Episode`
        :raises EpisodeFileError, OSError, ValueError: as :func:`load_episode` (nothing cached)
        """
        key, state = _key(sha256, image_size), file_state(path)
        with self._lock:
            item = self._items.get(key)
            if item is not None and item[1] == state:
                self._items.move_to_end(key)
                self.hits += 1
                return item[0]
        self.misses += 1
        episode = self._loader(path, image_size=image_size)
        size = episode_bytes(episode)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[2]
            if size <= self.max_bytes:
                self._items[key] = (episode, state, size)
                self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, _, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped
        return episode


class EpisodeDiskCache:
    """
    Decoded episodes as ``<sha256>_<H>x<W>.npz`` files in a directory, bounded by max_bytes.

    Writes are atomic (a temporary file renamed into place), so processes may share the
    directory; a file that cannot be read back is decoded again.  Eviction removes the files
    used longest ago (modification time, refreshed at every hit).

    :param directory: cache directory (created when needed)
    :param max_bytes: bound on the directory's cache files
    :param loader: callable(path, image_size) -> Episode
    """

    def __init__(self, directory, max_bytes, loader=load_episode):
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self._loader = loader
        self.hits = 0
        self.misses = 0

    def _file(self, sha256, image_size):
        return self.directory / f'{_key(sha256, image_size)}.npz'

    def load(self, path, sha256, image_size):
        """
        Return the decoded episode, from the cache when its file is unchanged.

        Arguments, return and exceptions as :meth:`EpisodeMemoryCache.load`.
        """
        state = file_state(path)
        cached = self._file(sha256, image_size)
        if state is not None:
            episode = self._read(cached, state)
            if episode is not None:
                self.hits += 1
                return episode
        self.misses += 1
        episode = self._loader(path, image_size=image_size)
        if state is not None and episode_bytes(episode) <= self.max_bytes:
            try:
                self._write(cached, episode, state)
                self._evict()
            except OSError as exc:
                LOGGER.warning('cannot cache decoded episode %s in %s: %s', path, self.directory,
                               exc)
        return episode

    def _read(self, cached, state):
        try:
            with np.load(cached, allow_pickle=False) as data:
                header = json.loads(str(data['header']))
                if tuple(header['file_state']) != tuple(state):
                    return None
                arrays = {name: data[name] if name in data else None for name in _ARRAYS}
            os.utime(cached)
        except (OSError, ValueError, KeyError):
            return None
        return Episode(task=header['task'], success=header['success'],
                       metadata=header['metadata'], **arrays)

    def _write(self, cached, episode, state):
        self.directory.mkdir(parents=True, exist_ok=True)
        header = {'task': episode.task, 'success': bool(episode.success),
                  'metadata': episode.metadata, 'file_state': list(state)}
        arrays = {name: getattr(episode, name) for name in _ARRAYS
                  if getattr(episode, name) is not None}
        tmp = cached.with_name(f'.{cached.name}.{os.getpid()}.tmp')
        with open(tmp, 'wb') as stream:
            np.savez(stream, header=np.array(json.dumps(header, default=str)), **arrays)
        os.replace(tmp, cached)

    def _evict(self):
        files = []
        for item in self.directory.glob('*.npz'):
            try:
                stat = item.stat()
            except OSError:
                continue
            files.append((stat.st_mtime_ns, stat.st_size, item))
        total = sum(size for _, size, _ in files)
        for _, size, item in sorted(files):
            if total <= self.max_bytes:
                break
            try:
                item.unlink()
            except OSError:
                continue
            total -= size
