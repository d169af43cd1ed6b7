"""Checks on database files: is it SQLite, what does its header say, is it whole."""

import os
import struct
from pathlib import Path
from typing import NamedTuple

import apsw

from walship.errors import CorruptObjectError, UsageError

__all__ = ["HEADER_SIZE", "DatabaseHeader", "check_database", "integrity_check", "parse_header", "read_header"]

# "Database File Format", section 1.3: the first 100 bytes of every database.
_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
_CHECK_CACHE_KIB = 8 << 10


class DatabaseHeader(NamedTuple):
    page_size: int
    page_count: int
    wal_mode: bool
    # "Database File Format" 1.3.7: the in-header page count counts only when
    # version-valid-for equals the change counter (older writers left it stale).
    page_count_valid: bool = True


def read_header(path: Path) -> DatabaseHeader:
    """Parse the fields of the database header that walship records.

    Never for a database that this process holds with SQLite connections:
    closing the descriptor would drop their locks (``WalCapture.header``).
    """
    with path.open("rb") as handle:
        return parse_header(handle.read(HEADER_SIZE), path)


def parse_header(header: bytes, path: Path) -> DatabaseHeader:
    """The fields of the first ``HEADER_SIZE`` bytes of ``path``."""
    if len(header) < HEADER_SIZE or not header.startswith(_MAGIC):
        raise CorruptObjectError(f"{path} is not a SQLite database (bad header)")
    (raw_page_size,) = struct.unpack(">H", header[16:18])
    # A stored page size of 1 means 65536, which does not fit in two bytes.
    page_size = 65536 if raw_page_size == 1 else raw_page_size
    change_counter, page_count = struct.unpack(">II", header[24:32])
    (valid_for,) = struct.unpack(">I", header[92:96])
    # Bytes 18 and 19 are the write/read format versions: 2 means WAL.
    return DatabaseHeader(page_size, page_count, header[18] == 2, valid_for == change_counter)


def check_database(path: Path) -> DatabaseHeader:
    """Refuse, as bad input, anything that is not an existing SQLite database file."""
    if not path.exists():
        raise UsageError(f"database {path} does not exist: check the path")
    if not path.is_file():
        raise UsageError(f"database {path} is not a regular file: give the path of the SQLite database file")
    try:
        header = read_header(path)
    except CorruptObjectError:
        raise UsageError(f"{path} is not a SQLite database (no 'SQLite format 3' header): check the path") from None
    except PermissionError:
        raise UsageError(f"database {path} is not readable: check its permissions") from None
    _check_writable(path)
    return header


def _check_writable(path: Path) -> None:
    """walship opens a live database read-write, as its application does: SQLite needs that to share the WAL
    index and to create the -wal and -shm files beside it. access(2) answers EROFS for a read-only mount too."""
    effective = os.access in os.supports_effective_ids
    if not os.access(path, os.R_OK | os.W_OK, effective_ids=effective):
        raise UsageError(
            f"database {path} is not writable (read-only file or filesystem): SQLite opens a live database "
            "for writing; run walship as the user who writes it, on a writable mount"
        )
    companions = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
    if os.access(path.parent, os.W_OK | os.X_OK, effective_ids=effective) or all(
        os.access(name, os.R_OK | os.W_OK, effective_ids=effective) for name in companions
    ):
        return
    raise UsageError(
        f"database directory {path.parent} is not writable, so SQLite cannot create {path.name}-wal and -shm there: "
        "run walship as the user who writes the database"
    )


def integrity_check(path: Path, *, live: bool = False) -> None:
    """Run ``PRAGMA integrity_check`` on a file nobody else has open, or, ``live``, on a database others read.

    ``immutable=1`` tells SQLite no one else writes the file, so it takes no
    locks and creates no -wal or -shm beside a file we are about to rename.
    A live database is checked as its readers see it, its WAL included.
    """
    uri = f"file:{path}" if live else f"file:{path}?immutable=1"
    flags = (apsw.SQLITE_OPEN_READWRITE if live else apsw.SQLITE_OPEN_READONLY) | apsw.SQLITE_OPEN_URI
    try:
        connection = apsw.Connection(uri, flags=flags)
        try:
            # The check walks every b-tree and every index against its table:
            # with SQLite's default 2 MiB page cache it re-reads interior pages
            # over and over. 8 MiB made it 1.7x faster on the 256 MiB bench
            # database (0.87 -> 0.52 s); more measured no faster.
            connection.execute(f"PRAGMA cache_size=-{_CHECK_CACHE_KIB}").fetchall()
            rows = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        finally:
            connection.close()
    except apsw.Error as exc:
        raise CorruptObjectError(f"integrity check of {path} failed: {exc}") from exc
    if rows != ["ok"]:
        raise CorruptObjectError(f"integrity check of {path} failed: {'; '.join(map(str, rows[:3]))}")
