"""The local spool: captured WAL lives here, durable, until storage confirms it.

Layout under the spool directory (default ``<database>-walship/``)::

    lock                             flock: one shipper per database
    cursor.json                      the WalCursor: what has been captured
    lease.json                       our copy of the replica lease and its ETag
    pending/<gen>/snapshot-<seq:020>.zst  a snapshot of the generation at that sequence, until uploaded
    pending/<gen>/<seq:020>.wal      captured frames, verbatim, until uploaded
    pending/<gen>/*.json             each entry's description, cache time, attempts
    tmp/                             files being written

An entry counts as captured only once its data and description are fsynced
and the cursor moved past it; a crash in between leaves an orphan that the
next start removes and captures again.
"""

import contextlib
import fcntl
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from walship._fs import fsync_dir
from walship.errors import UsageError
from walship.lease import Lease
from walship.models import SegmentInfo, SnapshotInfo, WalCursor, utcnow

__all__ = ["PendingEntry", "Spool", "default_spool_dir", "new_entry", "read_cursor"]


def default_spool_dir(database: Path) -> Path:
    return database.resolve().with_name(f"{database.name}-walship")


def read_cursor(root: Path) -> WalCursor | None:
    """A spool's cursor as last saved (None if none), read without its lock: saves are atomic renames."""
    try:
        return WalCursor.model_validate_json((root / "cursor.json").read_bytes())
    except (FileNotFoundError, ValidationError):
        return None


class PendingEntry(BaseModel):
    """One spooled object waiting for upload (the original design's cache entry)."""

    kind: Literal["snapshot", "segment"]
    snapshot: SnapshotInfo | None = None
    segment: SegmentInfo | None = None
    cached_at: datetime
    attempts: int = 0

    @property
    def generation(self) -> str:
        info = self.snapshot or self.segment
        assert info is not None
        return info.generation

    @property
    def sequence(self) -> int:
        info = self.snapshot or self.segment
        assert info is not None
        return info.sequence


class Spool:
    """A locked spool directory; only one process may hold it."""

    def __init__(self, root: Path, *, lock: bool = True) -> None:
        """Open the spool; ``lock=False`` only for code running under the lock holder
        (a flow's own tasks), since flock refuses a second holder even in one process."""
        self.root = root
        (root / "pending").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(exist_ok=True)
        self._lock = (root / "lock").open("a")
        if not lock:
            return
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise UsageError(
                f"another walship shipper is running for this database (spool {root} is locked): "
                "stop it first, or wait for its run to end"
            ) from None

    def close(self) -> None:
        self._lock.close()

    # The cursor -----------------------------------------------------------

    def load_cursor(self) -> WalCursor | None:
        path = self.root / "cursor.json"
        return WalCursor.model_validate_json(path.read_bytes()) if path.exists() else None

    def save_cursor(self, cursor: WalCursor) -> None:
        self._write_atomic(self.root / "cursor.json", cursor.model_dump_json().encode())

    # The lease, as we last wrote it --------------------------------------------

    def load_lease(self) -> Lease | None:
        path = self.root / "lease.json"
        return Lease.model_validate_json(path.read_bytes()) if path.exists() else None

    def save_lease(self, lease: Lease) -> None:
        self._write_atomic(self.root / "lease.json", lease.model_dump_json().encode())

    # Entries ----------------------------------------------------------------

    def temp_file(self, suffix: str) -> Path:
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", suffix=suffix)
        os.close(fd)
        return Path(name)

    def data_path(self, entry: PendingEntry) -> Path:
        name = f"snapshot-{entry.sequence:020d}.zst" if entry.kind == "snapshot" else f"{entry.sequence:020d}.wal"
        return self.root / "pending" / entry.generation / name

    def add(self, entry: PendingEntry, data: Path) -> None:
        """Move a fully written, fsynced file into the spool with its description."""
        target = self.data_path(entry)
        target.parent.mkdir(exist_ok=True)
        os.replace(data, target)
        self._write_atomic(self._sidecar(entry), entry.model_dump_json().encode())
        fsync_dir(target.parent)

    def record_attempt(self, entry: PendingEntry) -> PendingEntry:
        updated = entry.model_copy(update={"attempts": entry.attempts + 1})
        self._write_atomic(self._sidecar(updated), updated.model_dump_json().encode())
        return updated

    def remove(self, entry: PendingEntry) -> None:
        """Forget an entry, once storage has confirmed it."""
        self._sidecar(entry).unlink(missing_ok=True)
        self.data_path(entry).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.data_path(entry).parent.rmdir()

    def pending(self) -> list[PendingEntry]:
        """Entries in upload order: generation by generation, by sequence.

        A generation's first snapshot (sequence 0) goes before its segments;
        a later snapshot at sequence N goes right after segment N, whose
        state it holds.
        """
        entries = [
            PendingEntry.model_validate_json(path.read_bytes()) for path in (self.root / "pending").glob("*/*.json")
        ]
        return sorted(entries, key=lambda e: (e.generation, e.sequence, e.kind == "snapshot"))

    def pending_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.root / "pending").glob("*/*") if p.is_file())

    def discard_uncaptured(self, cursor: WalCursor | None) -> int:
        """Remove entries the cursor never reached (a crash between spooling and the cursor)."""
        removed = 0
        for entry in self.pending():
            if cursor is None or (
                entry.kind == "segment" and entry.generation == cursor.generation and entry.sequence > cursor.sequence
            ):
                self.remove(entry)
                removed += 1
        for leftover in (self.root / "tmp").iterdir():
            leftover.unlink(missing_ok=True)
        return removed

    # Helpers ----------------------------------------------------------------

    def _sidecar(self, entry: PendingEntry) -> Path:
        name = f"snapshot-{entry.sequence:020d}.json" if entry.kind == "snapshot" else f"{entry.sequence:020d}.json"
        return self.root / "pending" / entry.generation / name

    def _write_atomic(self, path: Path, data: bytes) -> None:
        fd, name = tempfile.mkstemp(dir=self.root / "tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(name, path)
        fsync_dir(path.parent)


def new_entry(info: SnapshotInfo | SegmentInfo) -> PendingEntry:
    if isinstance(info, SnapshotInfo):
        return PendingEntry(kind="snapshot", snapshot=info, cached_at=utcnow())
    return PendingEntry(kind="segment", segment=info, cached_at=utcnow())
