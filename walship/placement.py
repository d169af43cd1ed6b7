"""Where a restore's database goes: the path checked, the bytes staged beside it, then placed whole.

The output only ever appears whole: bytes go to a temporary file beside it,
are verified (``PRAGMA integrity_check``), fsynced, and then renamed over the
target. An existing database is replaced only with ``force``.
"""

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from walship._fs import fsync_dir, fsync_path, is_disk_full
from walship.copies import drop_copy_record
from walship.errors import DiskFullError, UsageError
from walship.sqlite import integrity_check

__all__ = ["check_output", "staged_output"]

# SQLite's companion files: a stale -wal beside a restored database would be
# replayed into it, so they go before the new file is renamed into place.
_COMPANIONS = ("-wal", "-shm", "-journal")


def check_output(output: Path, *, force: bool) -> Path:
    """Refuse an output path that cannot or must not be written."""
    output = output.absolute()
    if output.is_dir():
        raise UsageError(f"restore target {output} is a directory: give a file path for the database")
    if output.exists() and not force:
        raise UsageError(f"restore target {output} already exists: choose another path or pass --force to replace it")
    if not output.parent.is_dir():
        raise UsageError(f"restore target directory {output.parent} does not exist: create it first")
    if not _writable(output.parent):
        raise _unwritable(output.parent)
    return output


def _writable(directory: Path) -> bool:
    # access(2) also answers EROFS for a read-only mount, which stops root too.
    effective = os.access in os.supports_effective_ids
    return os.access(directory, os.W_OK | os.X_OK, effective_ids=effective)


def _unwritable(directory: Path) -> UsageError:
    return UsageError(
        f"restore target directory {directory} is not writable (read-only or no permission): "
        "choose an --output in a directory you can write"
    )


def _full(output: Path, exc: BaseException) -> DiskFullError:
    return DiskFullError(
        f"restore: no room on the filesystem of {output.parent} for the restored database ({exc}): "
        f"free space there or choose another --output; {output.name} was not written"
    )


@contextlib.contextmanager
def staged_output(output: Path, *, force: bool) -> Iterator[Path]:
    """A temporary file beside ``output`` for the caller to fill and check.

    When the block ends without an error, the file must pass ``PRAGMA
    integrity_check`` and is fsynced, both at once (the check reads the page
    cache while the disk writes); then the old database's companions go, and
    it is renamed over ``output`` and the directory fsynced. On any error it
    is removed: never a partial file at the target.
    """
    try:
        fd, tmp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".walship-restore")
    except OSError as exc:
        # The directory changed since check_output (or an ACL or a security module says no).
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise _unwritable(output.parent) from exc
        if is_disk_full(exc):
            raise _full(output, exc) from exc
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with ThreadPoolExecutor(1, thread_name_prefix="walship-fsync") as pool:
            synced = pool.submit(fsync_path, tmp)
            integrity_check(tmp)
            synced.result()
        if output.exists() and not force:
            raise UsageError(f"restore target {output} appeared during the restore: pass --force to replace it")
        for suffix in _COMPANIONS:
            Path(f"{output}{suffix}").unlink(missing_ok=True)
        # What the old file held is no longer true; the caller records what the new one holds.
        drop_copy_record(output)
        os.replace(tmp, output)
        fsync_dir(output.parent)
    except Exception as exc:
        if is_disk_full(exc):
            raise _full(output, exc) from exc
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
