"""A consistent copy of a live database, without blocking its writers.

The copy is made with SQLite's online backup API in a single step: the source
connection then holds one read transaction for the whole copy, so the copy is
one consistent state; in WAL mode a reader never blocks writers, and writers
committing meanwhile do not restart the copy (as they do with stepwise copies).
"""

import sqlite3
from datetime import datetime
from pathlib import Path

import apsw

from walship._fs import fsync_path
from walship.errors import CorruptObjectError, UsageError
from walship.models import SnapshotSource, utcnow
from walship.sqlite._database import check_database, read_header

__all__ = ["backup_into", "describe_copy", "take_snapshot"]

# How long to wait for a lock a writer or checkpointer holds briefly.
_BUSY_TIMEOUT_MS = 10_000


def take_snapshot(database: Path, target: Path) -> SnapshotSource:
    """Copy ``database`` into ``target`` (a new file, fsynced) and describe the copy."""
    database = database.resolve()
    check_database(database)
    if target.exists():
        raise UsageError(f"snapshot target {target} already exists")
    taken_at = utcnow()
    try:
        # READWRITE without CREATE: a database that vanished since the check
        # is an error, never a new empty file.
        source = apsw.Connection(str(database), flags=apsw.SQLITE_OPEN_READWRITE)
        try:
            source.set_busy_timeout(_BUSY_TIMEOUT_MS)
            backup_into(source, target)
        finally:
            source.close()
    except apsw.Error as exc:
        target.unlink(missing_ok=True)
        raise CorruptObjectError(f"snapshot {database}: SQLite could not copy it: {exc}") from exc
    fsync_path(target)
    return describe_copy(database, target, taken_at)


def backup_into(source: apsw.Connection, target: Path) -> None:
    """Copy what ``source`` sees (its open read transaction, if any) into a new file, in one step.

    The copy is scratch: it is read once, into a sealed object that is
    itself fsynced and checksummed, so it needs neither a journal nor syncs.
    """
    copy = apsw.Connection(str(target))
    try:
        copy.execute("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF").fetchall()
        with copy.backup("main", source, "main") as backup:
            backup.step(-1)
    finally:
        copy.close()


def describe_copy(database: Path, target: Path, taken_at: datetime) -> SnapshotSource:
    """Describe a fresh copy from its header."""
    header = read_header(target)
    return SnapshotSource(
        path=target,
        database=database,
        size=target.stat().st_size,
        page_size=header.page_size,
        page_count=header.page_count,
        sqlite_version=f"apsw {apsw.sqlite_lib_version()}; application sqlite3 {sqlite3.sqlite_version}",
        taken_at=taken_at,
    )
