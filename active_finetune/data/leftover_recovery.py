"""
Leftover recovery: what a recorder does at start with the ``.partial`` files a crash left behind.

A killed recorder leaves ``<name>.mcap.partial`` whose complete MCAP records can be read.
:func:`recover_leftovers` rewrites each as ``<name>.recovered.mcap`` (metadata recovered=true,
success=false; never listed for training) or, when nothing usable is in it, moves it to
``dataset_dir/quarantine/`` with a ``.reason.txt`` (:func:`quarantine`).  It fails soft: a leftover
it cannot rewrite (a full disk, any OS error) is kept as it is and reported with outcome 'kept'.
"""

import logging
import os
from pathlib import Path

from active_finetune.atomic_io import fsync_directory
from active_finetune.data.episode_index import RECOVERED_SUFFIX
from active_finetune.data.mcap_episode import EpisodeFileError, rewrite_salvaged

LOGGER = logging.getLogger(__name__)

PARTIAL_SUFFIX = '.partial'
"""Suffix of a file being written."""

QUARANTINE_DIR = 'quarantine'
"""Sub-directory of dataset_dir for leftovers that could not be recovered."""


def quarantine(path, reason):
    """
    Move a file that must not be used into ``<its dir>/quarantine/`` with a reason file.

    :param path: the file
    :param reason: why (written next to it as ``<name>.reason.txt``)
    :return: the new path
    """
    path = Path(path)
    target_dir = path.parent / QUARANTINE_DIR
    target_dir.mkdir(exist_ok=True)
    target = target_dir / path.name
    os.replace(path, target)
    (target_dir / f'{path.name}.reason.txt').write_text(reason + '\n')
    fsync_directory(target_dir)
    fsync_directory(path.parent)
    LOGGER.warning('quarantined %s: %s', target, reason)
    return target


def _write_recovered(source, target, metadata_updates):
    tmp = target.with_name(target.name + '.tmp')
    try:
        with open(tmp, 'wb') as stream:
            result = rewrite_salvaged(source, stream, metadata_updates)
            stream.flush()
            os.fsync(stream.fileno())
        if result['frames'] == 0:
            raise EpisodeFileError(source, 'no camera frame in the readable part')
        os.replace(tmp, target)
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError as exc:
            LOGGER.warning('cannot remove %s: %s', tmp, exc)
    fsync_directory(target.parent)
    return result


def recover_leftovers(dataset_dir):
    """
    Deal with the ``*.mcap.partial`` files a crashed recorder left in ``dataset_dir``.

    Each is rewritten as ``<name>.recovered.mcap`` (complete records only; metadata
    recovered=true, success=false) and removed, or quarantined when nothing usable is in it.
    Recovered files are not indexed: they are never trained on unless an operator renames them.
    An OS error on the way (ENOSPC on a full disk, EIO, a read-only file system) leaves the
    partial file where it is, with outcome 'kept': never raises for one file.

    :param dataset_dir: dataset directory
    :return: list of dicts: 'partial', 'outcome' ('recovered' | 'quarantined' | 'kept'),
        'path', 'frames', 'reason'
    """
    dataset_dir = Path(dataset_dir)
    results = []
    if not dataset_dir.is_dir():
        return results
    for stale in dataset_dir.glob(f'*{RECOVERED_SUFFIX}.tmp'):
        try:
            stale.unlink()
        except OSError as exc:
            LOGGER.warning('cannot remove %s: %s', stale, exc)
    for partial in sorted(dataset_dir.glob(f'*.mcap{PARTIAL_SUFFIX}')):
        stem = partial.name[:-len(f'.mcap{PARTIAL_SUFFIX}')]
        target = dataset_dir / f'{stem}{RECOVERED_SUFFIX}'
        try:
            results.append(_recover_one(partial, target))
        except OSError as exc:
            reason = f'recovery failed, partial file kept: {exc}'
            LOGGER.error('cannot recover leftover %s: %s', partial, exc)
            results.append({'partial': str(partial), 'outcome': 'kept', 'path': str(partial),
                            'frames': 0, 'reason': reason})
    return results


def _recover_one(partial, target):
    try:
        result = _write_recovered(partial, target, {'recovered': 'true', 'success': 'false'})
    except EpisodeFileError as exc:
        moved = quarantine(partial, f'unrecoverable partial episode: {exc.reason}')
        return {'partial': str(partial), 'outcome': 'quarantined', 'path': str(moved),
                'frames': 0, 'reason': exc.reason}
    partial.unlink()
    fsync_directory(partial.parent)
    reason = result['stop_reason'] or 'file was complete up to its last record'
    LOGGER.warning('recovered %d frames of crashed episode %s into %s (%s)',
                   result['frames'], partial, target, reason)
    return {'partial': str(partial), 'outcome': 'recovered', 'path': str(target),
            'frames': result['frames'], 'reason': reason}
