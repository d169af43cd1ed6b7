"""What the operating system's refusals of a ``file://`` replica mean to walship: one line, naming the path.

A replica path under a regular file can never be a directory: bad input,
fixed by choosing another path. A full, read-only or forbidden directory is
the storage failing (as a full bucket or a denied request would be): the
same command succeeds once the operator fixed the directory.
"""

import errno
from pathlib import Path

from walship.errors import NotFoundError, PermanentStorageError, UsageError, WalshipError

__all__ = ["local_error"]


def local_error(exc: OSError, root: Path, doing: str) -> WalshipError:
    """The walship error for ``exc``, raised while ``doing`` (e.g. "put lease.json") in the replica at ``root``."""
    where = exc.filename or root
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) and (blocker := _file_in_the_way(root)) is not None:
        itself = "it is a file" if blocker == root else f"{blocker} is a file"
        return UsageError(f"file: replica {root} cannot be a directory: {itself}: choose another replica path")
    if exc.errno == errno.ENOENT:  # gone between two steps: another process deleted it
        return NotFoundError(f"file: {doing}: {where} is gone")
    return PermanentStorageError(f"file: {doing}: {_problem(exc, root)}")


def _problem(exc: OSError, root: Path) -> str:
    where = exc.filename or root
    if exc.errno == errno.ENOTDIR:
        return f"{where}: a file stands where the replica needs a directory"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left in {root}: free some, or move the replica"
    if exc.errno == errno.EROFS:
        return f"{root} is on a read-only file system: use a writable path"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied on {where}: let this user read and write {root}, or use another path"
    return f"{where}: {exc.strerror or exc}"


def _file_in_the_way(root: Path) -> Path | None:
    """The replica's root or the nearest of its parents that exists, if that is not a directory."""
    for path in (root, *root.parents):
        try:
            if path.exists():
                return None if path.is_dir() else path
        except OSError:  # cannot tell (e.g. a parent this user may not search): not known to be a file
            return None
    return None
