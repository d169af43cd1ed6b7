"""Snapshots the shipper spools: a generation's first, and later ones within it, copied beside capture.

A snapshot holds exactly one WAL position: the caller fixes it inside a
writers' pause (tail captured, the copy's read transaction begun). Only the
copy, compression and spooling come here, and for a snapshot within the
generation they run in a thread of their own, so segments keep their cadence
while a large database is copied.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import apsw

from walship.envelope import Sealing, seal_file
from walship.errors import SpoolFullError
from walship.models import SnapshotInfo, SnapshotSource, WalPosition
from walship.snapshot import describe_new_snapshot
from walship.spool import Spool, new_entry
from walship.sqlite import WalCapture

__all__ = ["BackgroundSnapshot", "SnapshotJob", "spool_snapshot"]

log = logging.getLogger(__name__)

# How long an in-generation snapshot waits after the spool had no room for it.
SNAPSHOT_RETRY_SECONDS = 60.0


def spool_snapshot(
    spool: Spool,
    source: SnapshotSource,
    position: WalPosition,
    state_at: datetime,
    *,
    database_id: str,
    sealing: Sealing,
    only_for: tuple[str, ...] = (),
) -> SnapshotInfo:
    """Seal a copy that holds exactly ``position`` and spool it for upload (to ``only_for``'s replicas, if any)."""
    what = f"compressing a snapshot of {source.database}"
    with spool.writing(".zst", what=what, needed=source.size) as zst:
        compressed = seal_file(source.path, zst, sealing)
        source.path.unlink()
        info = describe_new_snapshot(
            source,
            compressed,
            database_id=database_id,
            generation=position.generation,
            position=position,
            state_at=state_at,
        )
        if only_for:
            info = info.model_copy(update={"bridge": True})
        spool.add(new_entry(info, only_for=only_for), compressed.path)
    return info


class SnapshotJob(NamedTuple):
    """A snapshot whose exact point is fixed: an open read transaction, and what to do once it is spooled."""

    source: contextlib.ExitStack  # closes ``connection``
    connection: apsw.Connection
    position: WalPosition
    state_at: datetime
    done: Callable[[SnapshotInfo], None]
    only_for: tuple[str, ...] = ()  # a bridge for these replicas alone (``walship.acks``)


class BackgroundSnapshot:
    """At most one in-generation snapshot at a time, copied, compressed and spooled in a thread."""

    def __init__(self, spool: Spool, database: Path, *, database_id: str, sealing: Sealing) -> None:
        self.spool, self.database = spool, database
        self.database_id, self.sealing = database_id, sealing
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0

    @property
    def copying(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def busy(self) -> bool:
        """A snapshot is being copied, or the spool had no room for one a moment ago."""
        running = self._thread is not None and self._thread.is_alive()
        return running or time.monotonic() < self._retry_at

    def check_room(self) -> bool:
        """Whether the spool can hold a copy now; if not, the next attempt waits a while (WAL shipping goes on)."""
        try:
            self.spool.check_snapshot_room(self.database)
        except SpoolFullError as full:
            self._put_off(str(full))
            return False
        return True

    def _put_off(self, why: str) -> None:
        log.warning("snapshot of %s put off for %.0f s: %s", self.database, SNAPSHOT_RETRY_SECONDS, why)
        self._retry_at = time.monotonic() + SNAPSHOT_RETRY_SECONDS

    def start(self, job: "SnapshotJob") -> None:
        """Copy what ``job.connection``'s read transaction sees (``job.source`` closes it), then call ``job.done``."""
        self._thread = threading.Thread(target=self._run, args=(job,), name="walship-snapshot", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self, job: "SnapshotJob") -> None:
        source, connection, position, state_at, done, only_for = job
        try:
            with source, self.spool.snapshot_file(self.database) as target:
                target.unlink()
                copy = WalCapture.copy_database(connection, self.database, target)
                source.close()  # the read transaction ends as soon as the copy is made
                info = spool_snapshot(
                    self.spool,
                    copy,
                    position,
                    state_at,
                    database_id=self.database_id,
                    sealing=self.sealing,
                    only_for=only_for,
                )
        except SpoolFullError as full:
            self._put_off(str(full))
            return
        except Exception as exc:
            log.exception("snapshot of %s failed", self.database)
            self._put_off(f"it failed: {exc}")
            return
        done(info)
