"""Whether a database changed, for the price of two ``stat`` calls: how idle databases stay cheap.

A commit appends to the ``-wal`` file (its size or, after a restart, its
mtime changes) and a checkpoint writes the database file, so an idle
database is looked at through those two stats alone; only a change makes the
fleet read its WAL index. A change within one tick of the filesystem's clock
can leave the mtime as it was, so a file changed a moment ago counts as
changed until its mtime is old enough to tell.
"""

import os
import time
from pathlib import Path

__all__ = ["Activity", "Signature"]

# Longer than any filesystem's timestamp granularity (ext4 and xfs: a jiffy; FAT: 2 s).
_RECENT_SECONDS = 2.5
_Stat = tuple[int, int, int] | None
# The database's and its WAL's (size, mtime, inode); None for a file that is not there.
Signature = tuple[_Stat, _Stat]


class Activity:
    """Watches one database's files; ``look`` says whether anything may have changed since the last look."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.wal = database.with_name(f"{database.name}-wal")
        self._seen: Signature | None = None

    def look(self) -> bool:
        """True when the database or its WAL changed (or may have); FileNotFoundError once the database is gone."""
        seen = self.signature()
        changed, self._seen = seen != self._seen, seen
        return changed or _recent(seen)

    def signature(self) -> Signature:
        """The files as they are now; FileNotFoundError when the database is gone."""
        database = _stat(self.database)
        if database is None:
            raise FileNotFoundError(self.database)
        wal = _stat(self.wal)
        # An empty WAL holds no commit, as a missing one: SQLite creates and deletes it as connections come and go.
        return (database, None if wal is None or wal[0] == 0 else wal)

    def current(self) -> Signature | None:
        """``signature``, or None once the database is gone."""
        try:
            return self.signature()
        except FileNotFoundError:
            return None

    def settle(self, seen: Signature | None) -> None:
        """Compare the next ``look`` with ``seen`` (taken before the last capture began; None: anything)."""
        self._seen = seen

    def recent(self) -> bool:
        """Whether the files changed a moment ago, as of the last look."""
        return self._seen is not None and self.recent_signature(self._seen)

    @staticmethod
    def recent_signature(seen: Signature) -> bool:
        return _recent(seen)

    @staticmethod
    def parse(raw: object) -> Signature | None:
        """A signature as JSON gives it back (lists for tuples); None when it is not one."""
        try:
            database, wal = (None if s is None else (int(s[0]), int(s[1]), int(s[2])) for s in raw)  # type: ignore[attr-defined]
        except (ValueError, TypeError, IndexError):
            return None
        return None if database is None else (database, wal)


def _recent(seen: Signature) -> bool:
    newest = max(s[1] for s in seen if s is not None)
    return time.time_ns() - newest < _RECENT_SECONDS * 1e9


def _stat(path: Path) -> _Stat:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)
