"""Crash-safe file writes: temporary name, fsync, rename, fsync the directory."""

import contextlib
import os
from pathlib import Path
import shutil
import tempfile


def fsync_directory(path):
    """
    Flush a directory entry to disk so a rename inside it survives a crash.

    :param path: directory path
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path, data):
    """
    Write ``data`` to ``path`` so that a crash leaves the old or the new file, never a torn one.

    :param path: destination file
    :param data: bytes to write
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


@contextlib.contextmanager
def atomic_directory(path):
    """
    Build a directory under a temporary name and rename it to ``path`` when the block succeeds.

    Files written inside must be complete when the block ends; they are fsynced here.

    :param path: final directory path; must not exist yet
    :raises FileExistsError: if ``path`` exists
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f'{path} already exists; checkpoints are never overwritten')
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent))
    try:
        yield tmp
        for child in tmp.iterdir():
            with open(child, 'rb') as f:
                os.fsync(f.fileno())
        fsync_directory(tmp)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_directory(path.parent)
