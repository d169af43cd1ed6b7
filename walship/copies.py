"""What a restored copy holds: the record walship keeps beside it, so a later restore or a follower can update it.

``{output}-walship-copy.json`` names the database, the replica position the
copy holds, and how to tell that nobody changed it since: the file's stat as
walship left it, the WAL index as walship's last apply published it, and,
when one was taken, the state digest of its pages. A copy whose record is
missing, damaged or of another database is never updated in place.
"""

import contextlib
import os
import tempfile
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from walship._fs import fsync_dir

__all__ = ["CopyRecord", "FileMark", "WalMark", "drop_copy_record", "file_mark", "read_copy_record", "save_copy_record"]

_SUFFIX = "-walship-copy.json"


class FileMark(BaseModel):
    """The database file as walship last left it: any write since changes its ctime."""

    model_config = ConfigDict(frozen=True)

    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


class WalMark(BaseModel):
    """The WAL index header walship's last apply published: a commit of anyone else's moves it."""

    model_config = ConfigDict(frozen=True)

    max_frame: int
    page_count: int
    salts: str  # hex
    frame_checksum: tuple[int, int]


class CopyRecord(BaseModel):
    """A copy of ``database_id`` at ``generation``/``sequence``, ``page_count`` pages of ``page_size`` bytes."""

    model_config = ConfigDict(frozen=True)

    database_id: str
    generation: str
    sequence: int
    page_size: int
    page_count: int
    updated_at: datetime
    # Every commit the source made before this moment is in the copy (its last segment's capture).
    captured_at: datetime | None = None
    file: FileMark | None = None  # None while applies are in the WAL and not yet checkpointed
    wal: WalMark | None = None
    # Of the file's pages at this position, once its WAL was checkpointed; None when not taken since.
    state_digest: str | None = None

    @property
    def position(self) -> str:
        return f"{self.generation}/{self.sequence}"


def record_path(output: Path) -> Path:
    return output.with_name(output.name + _SUFFIX)


def file_mark(database: Path) -> FileMark:
    stat = database.stat()
    return FileMark(inode=stat.st_ino, size=stat.st_size, mtime_ns=stat.st_mtime_ns, ctime_ns=stat.st_ctime_ns)


def read_copy_record(output: Path) -> CopyRecord | None:
    """The copy's record; None when there is none or it is damaged (either way, the copy cannot be trusted)."""
    try:
        return CopyRecord.model_validate_json(record_path(output).read_bytes())
    except (FileNotFoundError, ValidationError):
        return None


def save_copy_record(output: Path, record: CopyRecord) -> None:
    """Replace the record durably: a reader finds the old one or the new one."""
    path = record_path(output)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(record.model_dump_json().encode())
            out.flush()
            os.fsync(out.fileno())
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
    fsync_dir(path.parent)


def drop_copy_record(output: Path) -> None:
    """Forget what ``output`` held (it is about to be replaced by other bytes)."""
    record_path(output).unlink(missing_ok=True)
