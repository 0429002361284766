"""
The index of saved episodes in a dataset directory: JSON lines, appended and fsynced.

``dataset_dir/episodes.jsonl`` holds one JSON object per saved episode, in save order::

    {"file": "episode_000003_reach/episode_000003_reach.mcap", "task": "reach",
     "success": true, "frames": 87, "sha256": "...", "saved_unix_s": 1764000000.0,
     "request_id": 4, "episode_number": 3}

A saved episode is a rosbag2 bag directory ``episode_<N>_<task>/`` (its MCAP file and
``metadata.yaml``, :func:`~active_finetune.data.mcap_episode.finalise_bag`); ``file`` names its
MCAP file relative to the dataset directory.  Episodes saved before bags are single
``episode_<N>_<task>.mcap`` files and keep their bare names.  ``sha256`` is the hash of the MCAP
file's bytes (what the recorder hashed while writing it and announces on ``recorder/episode``);
``metadata.yaml`` is not covered: it is derived from the MCAP file and can be rewritten from it.

File names are relative, so recorder, selector and trainer may mount the directory at different
paths (a network share).  Only the recorder writes the index: it appends a line after it has
renamed a finished file into place; a crash between the two leaves a complete file the index does
not name, which the recorder's next start (:func:`list_saved_episodes` with ``write=True``) finds
and indexes again.  The trainer and the task selector list with ``write=False``: they list such a
file too (read from the file) but never append.  A torn last line (crash during the append) is
skipped with a warning, and the next append starts on a fresh line.

The trainer and the task selector list the directory at start-up and on request (they learn of
new episodes from ``recorder/episode``, :class:`active_finetune.data.episode_catalog
.EpisodeCatalog`); each of these warnings (torn line, missing file, unusable unindexed file) is
logged once per process and file state, not on every listing.
"""

import hashlib
import json
import logging
import os
from pathlib import Path
import re
import threading

from active_finetune.data.mcap_episode import BAG_METADATA_FILE, episode_data_file, \
    EpisodeFileError, read_episode_info, write_bag_metadata

LOGGER = logging.getLogger(__name__)

_WARNED = set()
_WARNED_LOCK = threading.Lock()

INDEX_FILE = 'episodes.jsonl'
"""Name of the index file inside a dataset directory."""

EPISODE_FILE_RE = re.compile(r'^episode_(\d{6,})_(.+)\.mcap$')
"""Saved episode file names: episode_<NNNNNN>_<task>.mcap (recovered ones excluded by name)."""

BAG_DIR_RE = re.compile(r'^episode_(\d{6,})_([^.]+)$')
"""Saved episode bag directories: episode_<NNNNNN>_<task> (holding <the same name>.mcap)."""

RECOVERED_SUFFIX = '.recovered.mcap'
"""Suffix of episodes salvaged from a crash; kept aside, never listed as saved."""


class EpisodeIndexError(ValueError):
    """An index entry that lacks a required field."""


def file_state(path):
    """
    Size and modification time of a file, which change when it is rewritten or truncated.

    :param path: file path, or an episode bag directory (its MCAP file's state)
    :return: (size in bytes, mtime in ns), or None if it cannot be read
    """
    try:
        if os.path.isdir(path):
            path = episode_data_file(path)
        stat = os.stat(path)
    except (OSError, EpisodeFileError):
        return None
    return stat.st_size, stat.st_mtime_ns


def _warn_once(key, message, *args):
    """Log a warning unless one with the same key was logged before in this process."""
    with _WARNED_LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    LOGGER.warning(message, *args)


def file_sha256(path, block_bytes=1 << 20):
    """
    Hash a file's content; for an episode bag directory, its MCAP file's (not metadata.yaml).

    :param path: file or episode bag directory
    :param block_bytes: read size
    :return: hex sha256
    """
    if os.path.isdir(path):
        path = episode_data_file(path)
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for block in iter(lambda: stream.read(block_bytes), b''):
            digest.update(block)
    return digest.hexdigest()


def is_saved_episode_name(name):
    """
    Tell whether a file name is that of a saved (not recovered, not partial) episode.

    :param name: file name without directory
    :return: bool
    """
    return bool(EPISODE_FILE_RE.match(name)) and not name.endswith(RECOVERED_SUFFIX)


def is_index_file_name(name):
    """
    Tell whether an index entry's 'file' is a bare file name or a bag's ``<bag>/<bag>.mcap``.

    :param name: the entry's 'file'
    :return: bool
    """
    parts = Path(name).parts
    if len(parts) == 1:
        return parts[0] not in ('.', '..')
    return (len(parts) == 2 and not Path(name).is_absolute() and BAG_DIR_RE.match(parts[0])
            is not None and parts[1] == f'{parts[0]}.mcap')


def bag_file_name(bag_name):
    """
    Index 'file' of a bag directory: its MCAP file relative to the dataset directory.

    :param bag_name: e.g. 'episode_000003_reach'
    :return: e.g. 'episode_000003_reach/episode_000003_reach.mcap'
    """
    return f'{bag_name}/{bag_name}.mcap'


def append_index_entry(dataset_dir, entry):
    """
    Append one episode to the index with a single write, then fsync.

    :param dataset_dir: dataset directory
    :param entry: dict with at least 'file' (``<name>.mcap`` or ``<bag>/<bag>.mcap`` inside
        dataset_dir), 'task', 'success', 'frames', 'sha256', 'saved_unix_s'
    :raises EpisodeIndexError: when a required field is missing or 'file' is another path
    """
    required = ('file', 'task', 'success', 'frames', 'sha256', 'saved_unix_s')
    missing = [key for key in required if key not in entry]
    if missing:
        raise EpisodeIndexError(f'index entry lacks {missing}: {entry!r}')
    if not is_index_file_name(entry['file']):
        raise EpisodeIndexError(f"index entry 'file' must be a bare name or <bag>/<bag>.mcap, "
                                f"got {entry['file']!r}")
    index_path = Path(dataset_dir) / INDEX_FILE
    line = json.dumps(entry, sort_keys=True) + '\n'
    fd = os.open(index_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size > 0 and os.pread(fd, 1, size - 1) != b'\n':
            line = '\n' + line
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_index(dataset_dir):
    """
    Read the index lines that parse, in file order, skipping torn or malformed ones with a warning.

    :param dataset_dir: dataset directory
    :return: list of entry dicts as stored (no existence check)
    """
    index_path = Path(dataset_dir) / INDEX_FILE
    if not index_path.exists():
        return []
    entries = []
    for number, raw in enumerate(index_path.read_bytes().split(b'\n'), start=1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict) or not isinstance(entry.get('file'), str):
                raise ValueError('not an object with a file name')
        except ValueError as exc:
            _warn_once(('torn', str(index_path), number, raw), '%s line %d is torn or malformed, '
                       'skipped (%s): %r', index_path, number, exc, raw[:120])
            continue
        entries.append(entry)
    return entries


def entry_for_file(path, saved_unix_s=None):
    """
    Build an index entry by reading a finished episode (bag directory or MCAP file).

    :param path: the bag directory, its MCAP file, or an older single-file episode
    :param saved_unix_s: save time (default: the MCAP file's modification time)
    :return: entry dict (as :func:`append_index_entry` takes)
    :raises EpisodeFileError: when it is not a finished episode
    """
    path = episode_data_file(path)
    info = read_episode_info(path)
    bag = path.parent.name if path.name == f'{path.parent.name}.mcap' \
        and BAG_DIR_RE.match(path.parent.name) else None
    match = EPISODE_FILE_RE.match(path.name)
    request_id = info.get('request_id', '')
    return {
        'file': bag_file_name(bag) if bag else path.name, 'task': info.get('task', ''),
        'success': info.get('success') == 'true',
        'frames': int(info['frames']), 'steps': int(info.get('steps', info['frames'])),
        'sha256': file_sha256(path),
        'saved_unix_s': float(path.stat().st_mtime if saved_unix_s is None else saved_unix_s),
        'request_id': int(request_id) if request_id.lstrip('-').isdigit() else None,
        'episode_number': int(match.group(1)) if match else None,
    }


def _listed(entry, dataset_dir):
    """Add 'path' (the MCAP file) and 'bag_path' (its bag directory, or None) to an entry."""
    path = dataset_dir / entry['file']
    bag = path.parent if path.parent != dataset_dir else None
    return {**entry, 'path': str(path), 'bag_path': None if bag is None else str(bag),
            'success': bool(entry.get('success', False))}


def _unindexed(dataset_dir, seen):
    """Find the saved episodes on disk the index does not name: sorted (number, 'file')."""
    found = []
    for path in dataset_dir.iterdir():
        if path.is_dir():
            match = BAG_DIR_RE.match(path.name)
            name = bag_file_name(path.name)
            if match and name not in seen and (dataset_dir / name).is_file():
                found.append((int(match.group(1)), name))
        elif is_saved_episode_name(path.name) and path.name not in seen:
            found.append((int(EPISODE_FILE_RE.match(path.name).group(1)), path.name))
    return sorted(found)


def list_saved_episodes(dataset_dir, reindex=True, write=True):
    """
    List the saved episodes of a dataset directory, in save order.

    Index entries whose file is gone are dropped with a warning; complete episodes the index
    does not name (a crash between rename and index append) are read, appended to the index
    (best effort: a read-only share is fine) and listed after the indexed ones, by episode
    number; a bag directory among them without ``metadata.yaml`` (a crash before it was written)
    gets one.  Recovered (``*.recovered.mcap``) and partial files are never listed.

    :param dataset_dir: dataset directory (a missing directory has no episodes)
    :param reindex: list the unindexed episodes (else they are only logged)
    :param write: append them to the index and complete their bag metadata (the recorder's
        job); False lists them without writing anything (trainer, task selector)
    :return: list of dicts with 'path' (absolute str: the MCAP file, which every reader takes),
        'bag_path' (absolute str: its rosbag2 bag directory, or None for a single-file episode),
        'task', 'success' (bool), 'frames', 'sha256', 'saved_unix_s' and the other stored fields
    """
    dataset_dir = Path(dataset_dir).resolve()
    if not dataset_dir.is_dir():
        return []
    listed, seen = [], set()
    for entry in read_index(dataset_dir):
        name = entry['file']
        if name in seen:
            continue
        seen.add(name)
        path = dataset_dir / name
        if not is_index_file_name(name) or not path.is_file():
            _warn_once(('missing', str(path)), 'indexed episode %s is missing; dropped from the '
                       'list', path)
            continue
        listed.append(_listed(entry, dataset_dir))
    for _, name in _unindexed(dataset_dir, seen):
        path = dataset_dir / name
        if not reindex:
            _warn_once(('unindexed', str(path)), 'episode %s is not in the index', path)
            continue
        try:
            entry = entry_for_file(path)
        except EpisodeFileError as exc:
            _warn_once(('unusable', str(path), file_state(path)), 'unindexed file %s is not a '
                       'usable episode, skipped: %s', path, exc.reason)
            continue
        if not write:
            _warn_once(('unindexed', str(path)), 'episode %s is not in the index (crash after '
                       'rename?); listed, the recorder indexes it at its next start', path)
            listed.append(_listed(entry, dataset_dir))
            continue
        LOGGER.warning('episode %s was missing from the index (crash after rename?); indexed now',
                       path)
        try:
            if path.parent != dataset_dir and not (path.parent / BAG_METADATA_FILE).exists():
                write_bag_metadata(path.parent, path)
            append_index_entry(dataset_dir, entry)
        except OSError as exc:
            LOGGER.warning('cannot append to the index of %s (%s); listing anyway', dataset_dir,
                           exc)
        listed.append(_listed(entry, dataset_dir))
    return listed


def next_episode_number(dataset_dir):
    """
    Return the number for the next episode: one more than any number used in the directory.

    Saved files and bag directories, partial, recovered and quarantined files and index entries
    all count.

    :param dataset_dir: dataset directory
    :return: int >= 1
    """
    dataset_dir = Path(dataset_dir)
    pattern = re.compile(r'^episode_(\d{6,})_')
    highest = 0
    for directory in (dataset_dir, dataset_dir / 'quarantine'):
        if directory.is_dir():
            for path in directory.iterdir():
                match = pattern.match(path.name)
                if match:
                    highest = max(highest, int(match.group(1)))
    for entry in read_index(dataset_dir):
        match = pattern.match(entry['file'])
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1
