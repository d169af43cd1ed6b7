"""Durability and disk-space helpers.

A rename is only durable once its directory is fsynced. A full disk (ENOSPC,
EDQUOT, or SQLite's ``SQLITE_FULL`` while it writes a copy) is an expected
condition, recognised here and reported as ``SpoolFullError`` by the spool.
"""

import errno
import os
from pathlib import Path

import apsw

__all__ = ["free_bytes", "fsync_dir", "fsync_path", "is_disk_full", "remove_sqlite_file"]

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    fsync_path(directory)


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer may still write on ``directory``'s filesystem."""
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the quota) has no room left."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    return isinstance(exc, apsw.FullError)


def remove_sqlite_file(path: Path) -> None:
    """Remove a database file and what SQLite writes beside it (rollback journal, WAL, index)."""
    for name in (path, *(path.with_name(path.name + s) for s in ("-journal", "-wal", "-shm"))):
        name.unlink(missing_ok=True)
