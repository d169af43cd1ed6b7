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

__all__ = ["Activity"]

# Longer than any filesystem's timestamp granularity (ext4 and xfs: a jiffy; FAT: 2 s).
_RECENT_SECONDS = 2.5
_Signature = tuple[int, int, int] | None


class Activity:
    """Watches one database's files; ``look`` says whether anything may have changed since the last look."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.wal = database.with_name(f"{database.name}-wal")
        self._seen: tuple[_Signature, _Signature] | None = None

    def look(self) -> bool:
        """True when the database or its WAL changed (or may have); FileNotFoundError once the database is gone."""
        database = _signature(self.database)
        if database is None:
            raise FileNotFoundError(self.database)
        seen = (database, _signature(self.wal))
        changed, self._seen = seen != self._seen, seen
        newest = max(s[1] for s in seen if s is not None)
        return changed or time.time_ns() - newest < _RECENT_SECONDS * 1e9


def _signature(path: Path) -> _Signature:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)
