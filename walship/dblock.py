"""One shipper per database: an exclusive lock tied to the database file, naming the run that holds it.

The lock is ``<database>-walship.lock`` beside the database (its resolved
path, so a symlink finds the same lock), whatever spool or replica a shipper
uses: two shippers of one database would each hold the WAL back from the
other's checkpoints and write rival generations. ``flock`` is released by the
kernel when its holder dies, so a crash never leaves a stale lock; the file's
content only names the holder for the refusal message and the hand-over.
"""

import contextlib
import fcntl
import os
import socket
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

from walship.errors import ShipperRunningError
from walship.models import utcnow

__all__ = ["DatabaseLock", "ShipperIdentity", "lock_path", "who"]


class ShipperIdentity(BaseModel):
    """Who ships a database: this run, on this host, into which spool and replica."""

    host: str
    pid: int
    run: str
    spool: Path
    replica: str
    started_at: datetime

    @classmethod
    def this_process(cls, run: str, spool: Path, replica: str) -> "ShipperIdentity":
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            run=run,
            spool=spool.resolve(),
            replica=replica,
            started_at=utcnow(),
        )

    def describe(self) -> str:
        return (
            f"pid {self.pid} on {self.host} (run {self.run}, since {self.started_at:%Y-%m-%d %H:%M:%S}Z, "
            f"spool {self.spool}, replica {self.replica})"
        )


def who(holder: ShipperIdentity | None) -> str:
    """The holder as messages name it (its file may be unreadable, e.g. written by an older walship)."""
    return holder.describe() if holder is not None else "another process"


def lock_path(database: Path) -> Path:
    resolved = database.resolve()
    return resolved.with_name(f"{resolved.name}-walship.lock")


class DatabaseLock:
    """The database's shipper lock; ``try_acquire`` never waits."""

    def __init__(self, database: Path) -> None:
        self.database = database.resolve()
        self.path = lock_path(database)
        self._file = self.path.open("a+")
        self.held = False

    def try_acquire(self, identity: ShipperIdentity) -> bool:
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.held = True
        self._file.seek(0)
        self._file.truncate()
        self._file.write(identity.model_dump_json())
        self._file.flush()
        return True

    def holder(self) -> ShipperIdentity | None:
        """Who holds the lock, as it wrote itself down (None if unreadable)."""
        try:
            return ShipperIdentity.model_validate_json(self.path.read_bytes())
        except (OSError, ValidationError):
            return None

    def refusal(self) -> ShipperRunningError:
        return ShipperRunningError(
            f"database {self.database} is already shipped by {who(self.holder())}: stop that shipper, "
            "or pass --handover-wait SECONDS to take over when its run ends"
        )

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        self.held = False
