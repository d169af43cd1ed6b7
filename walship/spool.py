"""The local spool: captured WAL lives here, durable, until storage confirms it.

Layout under the spool directory (default ``<database>-walship/``)::

    lock                             flock: one shipper per database
    cursor.json                      the WalCursor: what has been captured
    abandoned.json                   a generation no cursor may continue (a damaged entry was dropped from it)
    replicas/<id>/lease.json         our copy of each replica's lease and its ETag (<id>: ``replica_key``)
    replicas/<id>/stored.json        with several replicas, how far each has stored (``walship.acks``)
    replicas/served.json             with several replicas, which ones the spool serves
    pending/<gen>/snapshot-<seq:020>.zst  a snapshot of the generation at that sequence, until uploaded
    pending/<gen>/<seq:020>.wal.zst  captured frames, sealed as they are stored, until uploaded
    pending/<gen>/*.json             each entry's description, cache time, attempts
    pages/base, pages/journal        the page digest map at the cursor (walship.resync)
    tmp/                             files being written

An entry counts as captured only once its data and description are fsynced
and the cursor moved past it; a crash in between leaves an orphan that the
next start removes and captures again.

Each description records the SHA-256 of its data file as spooled
(``stored_sha256``), hashed while the file was written; uploads check it
first, so bytes that changed on the local disk never reach the replica.

A full disk is an expected condition (docs/OPERATIONS.md): every file the
spool writes goes through ``Spool.writing`` or ``_write_atomic``, which
remove their temporary file on any failure and turn ENOSPC, EDQUOT and
SQLite's SQLITE_FULL into ``SpoolFullError``, one line that names the spool,
the space needed and the space free. Room is checked before work that would
not fit: a segment is bounded by ``segment_budget`` (a big WAL backlog is
captured in pieces that drain as uploads free space), and a snapshot is
refused before its copy starts (``check_snapshot_room``).
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, ValidationError

from walship._fs import free_bytes, fsync_dir, is_disk_full, remove_sqlite_file
from walship.errors import SpoolFullError, UsageError
from walship.layout import is_generation, parse_generation
from walship.lease import Lease
from walship.models import SnapshotInfo, WalCursor, utcnow
from walship.segment import ResyncSegment, Segment, WalSegment
from walship.units import human_bytes

__all__ = [
    "CAUGHT_UP",
    "SEGMENT_CAP_BYTES",
    "SPOOL_RESERVE_BYTES",
    "EntryOrder",
    "PendingEntry",
    "SegmentBudget",
    "Spool",
    "default_spool_dir",
    "file_sha256",
    "new_entry",
    "read_cursor",
    "replica_key",
    "snapshot_needs",
]

log = logging.getLogger(__name__)

# No segment is captured bigger than this (unless one transaction is bigger:
# a transaction cannot be split), however much room the spool has.
SEGMENT_CAP_BYTES = 64 << 20
# Kept free for the small files a run must still write: cursor, lease, descriptions.
SPOOL_RESERVE_BYTES = 1 << 20
CURSOR_DAMAGED = "the spool's cursor was damaged"
# Written by a run that ended with everything captured and uploaded (walship.fleet: a parked database);
# dropped by the next run that takes the spool.
CAUGHT_UP = "caught-up.json"
_ANY = "*"
_NEWEST_GENERATION = "newest-generation.json"
_READ_CHUNK = 1 << 20


class EntryOrder(NamedTuple):
    """An entry's place in upload order: a later snapshot at sequence N goes right after segment N."""

    generation: str
    sequence: int
    snapshot: bool


def replica_key(location: str) -> str:
    """The short, stable name of a replica (its ``ObjectStore.location``) among a spool's files."""
    return hashlib.sha256(location.encode()).hexdigest()[:16]


class SegmentBudget(NamedTuple):
    """How many WAL bytes the next segment may hold, and whether free space (not the cap) set it."""

    bytes: int
    by_free_space: bool


def default_spool_dir(database: Path) -> Path:
    return database.resolve().with_name(f"{database.name}-walship")


def read_cursor(root: Path) -> WalCursor | None:
    """A spool's cursor as last saved (None if none), read without its lock: saves are atomic renames."""
    try:
        return WalCursor.model_validate_json((root / "cursor.json").read_bytes())
    except (FileNotFoundError, ValidationError):
        return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Abandoned(BaseModel):
    """A generation given up from one entry on (``sequence``, and whether that entry was its snapshot)."""

    generation: str
    sequence: int = 0
    snapshot: bool = False
    reason: str


class PendingEntry(BaseModel):
    """One spooled object waiting for upload (the original design's cache entry)."""

    kind: Literal["snapshot", "segment"]
    snapshot: SnapshotInfo | None = None
    segment: Segment | None = None
    cached_at: datetime
    attempts: int = 0
    # The data file's SHA-256 as spooled; empty in entries an older walship spooled.
    stored_sha256: str = ""
    # The replicas (locations) it is for; empty: every one (a snapshot taken to bridge one replica's gap).
    only_for: tuple[str, ...] = ()

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

    @property
    def order(self) -> "EntryOrder":
        """Where the entry goes in upload order (``Spool.pending``)."""
        return EntryOrder(self.generation, self.sequence, self.kind == "snapshot")


class Spool:
    """A locked spool directory; only one process may hold it."""

    def __init__(self, root: Path, *, lock: bool = True) -> None:
        """Open the spool; ``lock=False`` only for code running under the lock holder
        (a flow's own tasks), since flock refuses a second holder even in one process."""
        self.root = root
        # Why ``load_cursor`` found none to continue, when it was not simply absent.
        self.no_cursor_reason: str | None = None
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
        # Only the lock holder writes here: whatever tmp/ holds is left from a
        # run that died while writing, and only takes room.
        self._clear_tmp()
        # A run holds the spool: what it does may change what a caught-up record said.
        (root / CAUGHT_UP).unlink(missing_ok=True)
        self._refuse_raw_segments()

    def close(self) -> None:
        self._lock.close()

    # The cursor -----------------------------------------------------------

    def load_cursor(self) -> WalCursor | None:
        """The cursor to continue; None when there is none, it is damaged, or its generation was abandoned
        (``no_cursor_reason`` says which of the last two)."""
        self.no_cursor_reason = None
        path = self.root / "cursor.json"
        if not path.exists():
            return None
        try:
            cursor = WalCursor.model_validate_json(path.read_bytes())
        except ValidationError:
            log.warning("spool %s: cursor.json is damaged; the next capture starts a new generation", self.root)
            self.no_cursor_reason = CURSOR_DAMAGED
            return None
        abandoned = self._abandoned()
        if abandoned is not None and abandoned.generation in (cursor.generation, _ANY):
            self.no_cursor_reason = abandoned.reason
            return None
        return cursor

    def save_cursor(self, cursor: WalCursor) -> None:
        self._write_atomic(self.root / "cursor.json", cursor.model_dump_json().encode())
        abandoned = self._abandoned()
        if abandoned is not None and abandoned.generation != cursor.generation:
            (self.root / "abandoned.json").unlink(missing_ok=True)

    def abandon(self, damaged: PendingEntry, reason: str) -> int:
        """Drop a damaged entry and those after it in its generation; no cursor continues that generation.

        The replica keeps the generation as it was before the entry: consistent, only older. Returns how
        many entries were dropped.
        """
        marker = _Abandoned(
            generation=damaged.generation, sequence=damaged.sequence, snapshot=damaged.kind == "snapshot", reason=reason
        )
        self._write_atomic(self.root / "abandoned.json", marker.model_dump_json().encode())
        return self.drop_abandoned()

    def drop_abandoned(self) -> int:
        """Remove the entries of an abandoned generation from its damaged entry on (a capture that raced the
        abandonment may have added some)."""
        marker = self._abandoned()
        if marker is None:
            return 0
        start = (marker.generation, marker.sequence, marker.snapshot)
        dropped = [e for e in self.pending() if e.generation == marker.generation and e.order >= start]
        for entry in dropped:
            self.remove(entry)
        return len(dropped)

    def begin_generation(self, generation: str) -> None:
        """Record ``generation`` as the newest this spool began, before anything of it is spooled: a damaged
        cursor with every entry uploaded leaves only the replicas' marks naming the one before it."""
        self._write_atomic(self.root / _NEWEST_GENERATION, json.dumps(generation).encode())

    def newest_generation(self) -> str | None:
        """The newest generation this spool knows, from the record ``begin_generation`` keeps, its cursor
        (continued or abandoned), its abandoned record and its pending entries: a new generation is named
        after it (``walship.layout.new_generation``)."""
        known: list[str] = []
        with contextlib.suppress(FileNotFoundError, ValueError):
            known.append(str(json.loads((self.root / _NEWEST_GENERATION).read_bytes())))
        with contextlib.suppress(FileNotFoundError, ValidationError):
            known.append(WalCursor.model_validate_json((self.root / "cursor.json").read_bytes()).generation)
        abandoned = self._abandoned()
        if abandoned is not None and abandoned.generation != _ANY:
            known.append(abandoned.generation)
        with contextlib.suppress(FileNotFoundError):
            known += [path.name for path in (self.root / "pending").iterdir()]
        named = [name for name in known if is_generation(name)]
        return max(named, key=lambda name: (parse_generation(name), name), default=None)

    def _abandoned(self) -> _Abandoned | None:
        try:
            return _Abandoned.model_validate_json((self.root / "abandoned.json").read_bytes())
        except FileNotFoundError:
            return None
        except ValidationError:
            # Damaged too: whatever generation it named, no cursor may continue it.
            return _Abandoned(generation=_ANY, reason="the spool's record of an abandoned generation was damaged")

    # Each replica's lease as we last wrote it, and what it stored ----------------------

    def load_lease(self, replica: str) -> Lease | None:
        """The lease of ``replica`` (its location) as last written here; None when there is none or it is
        damaged (the lease is taken again)."""
        path = self.replica_file(replica, "lease.json")
        try:
            return Lease.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValidationError:
            log.warning("spool %s: %s is damaged; the lease is taken again", self.root, path)
            return None

    def save_lease(self, replica: str, lease: Lease) -> None:
        self.save_replica_file(replica, "lease.json", lease.model_dump_json().encode())

    def replica_file(self, replica: str, name: str) -> Path:
        """The spool's file ``name`` about ``replica`` (its location)."""
        return self.root / "replicas" / replica_key(replica) / name

    def save_replica_file(self, replica: str, name: str, data: bytes) -> None:
        path = self.replica_file(replica, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_atomic(path, data)

    def load_served(self) -> list[str]:
        """The replicas (locations) a run of several last said it serves; empty for a run of one."""
        try:
            return list(json.loads((self.root / "replicas" / "served.json").read_bytes()))
        except (FileNotFoundError, ValueError, TypeError):
            return []

    def save_served(self, replicas: list[str]) -> None:
        """Record the replicas a run serves; for one, none (its uploads remove entries at once)."""
        path = self.root / "replicas" / "served.json"
        if len(replicas) < 2:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(exist_ok=True)
        self._write_atomic(path, json.dumps(replicas).encode())

    # Entries ----------------------------------------------------------------

    def temp_file(self, suffix: str) -> Path:
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", suffix=suffix)
        os.close(fd)
        return Path(name)

    @contextlib.contextmanager
    def writing(self, suffix: str, *, what: str, needed: int) -> Iterator[Path]:
        """A new, empty file in tmp/ for ``what`` (about ``needed`` bytes), gone when the block ends.

        The block moves the file into the spool (``add``) or removes it; if
        it does neither (it failed, or returned early), the file and anything
        SQLite wrote beside it (a backup's ``-journal``) are removed here. A
        full disk becomes ``SpoolFullError``.
        """
        try:
            path = self.temp_file(suffix)
        except OSError as exc:
            if is_disk_full(exc):
                raise self.full_error(what, needed) from exc
            raise
        try:
            yield path
        except Exception as exc:
            if is_disk_full(exc):
                raise self.full_error(what, needed) from exc
            raise
        finally:
            remove_sqlite_file(path)

    # Disk space ----------------------------------------------------------------

    def free_bytes(self) -> int:
        return free_bytes(self.root)

    def full_error(self, what: str, needed: int, free: int | None = None) -> SpoolFullError:
        free = self.free_bytes() if free is None else free
        return SpoolFullError(
            f"spool {self.root} is out of disk space: {what} needs {human_bytes(needed)}, "
            f"{human_bytes(free)} free; free space on that disk, or point --spool at a bigger one"
        )

    def segment_budget(self) -> SegmentBudget:
        """The most WAL bytes the next segment may take.

        Half of the free space (less a reserve), since the upload writes the
        segment's compressed copy beside it, and never more than
        ``SEGMENT_CAP_BYTES``.
        """
        room = max(0, self.free_bytes() - SPOOL_RESERVE_BYTES) // 2
        return SegmentBudget(min(room, SEGMENT_CAP_BYTES), room < SEGMENT_CAP_BYTES)

    def room_for_segment(self, size: int) -> bool:
        """Whether a segment of ``size`` WAL bytes fits now; False when it will once uploads free space.

        Raises ``SpoolFullError`` when it cannot fit even after everything
        spooled is uploaded.
        """
        needed = 2 * size + SPOOL_RESERVE_BYTES
        free = self.free_bytes()
        if needed <= free:
            return True
        pending = self.pending_bytes()
        if pending and needed <= free + pending:
            log.warning(
                "spool %s: %s of WAL wait for room (%s free); captured once uploads free space",
                self.root,
                human_bytes(size),
                human_bytes(free),
            )
            return False
        raise self.full_error(f"capturing {human_bytes(size)} of committed WAL", needed, free)

    def snapshot_file(self, database: Path) -> contextlib.AbstractContextManager[Path]:
        """``writing`` for the uncompressed copy of ``database`` (see ``check_snapshot_room``)."""
        return self.writing(".db", what=f"a snapshot of {database}", needed=snapshot_needs(database.stat().st_size))

    def check_snapshot_room(self, database: Path) -> None:
        """Refuse a snapshot of ``database`` before its copy starts when the spool cannot hold it.

        The uncompressed copy is written here first, then compressed beside
        it: the database's size plus a quarter for the compressed copy (most
        databases compress far better) plus the reserve.
        """
        size = database.stat().st_size
        needed, free = snapshot_needs(size), self.free_bytes()
        if needed > free:
            raise self.full_error(f"a snapshot of {database} ({human_bytes(size)})", needed, free)

    def data_path(self, entry: PendingEntry) -> Path:
        name = f"snapshot-{entry.sequence:020d}.zst" if entry.kind == "snapshot" else f"{entry.sequence:020d}.wal.zst"
        return self.root / "pending" / entry.generation / name

    def add(self, entry: PendingEntry, data: Path) -> None:
        """Move a fully written, fsynced file into the spool with its description.

        If the description cannot be written, the data file goes too: an entry
        exists with both or neither. An entry without ``stored_sha256`` gets
        it here, read back from ``data``.
        """
        if not entry.stored_sha256:
            entry = entry.model_copy(update={"stored_sha256": file_sha256(data)})
        target = self.data_path(entry)
        for attempt in range(3):
            if not target.parent.exists():
                target.parent.mkdir(exist_ok=True)
                fsync_dir(target.parent.parent)  # the new generation's directory itself is durable
            try:
                os.replace(data, target)
                break
            except FileNotFoundError:
                # An uploader removed the generation's last entry, and its emptied directory, meanwhile.
                if attempt == 2 or not data.exists():
                    raise
        try:
            # Its directory fsync covers the data's rename too: both live there.
            self._write_atomic(self._sidecar(entry), entry.model_dump_json().encode())
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    def record_attempt(self, entry: PendingEntry) -> PendingEntry:
        """Count a failed upload (bookkeeping only: on a full disk the count is not kept)."""
        updated = entry.model_copy(update={"attempts": entry.attempts + 1})
        with contextlib.suppress(SpoolFullError):
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
        entries = []
        for path in self._pending_files():
            if path.suffix == ".json":
                with contextlib.suppress(FileNotFoundError):  # uploaded everywhere since the listing
                    entries.append(PendingEntry.model_validate_json(path.read_bytes()))
        return sorted(entries, key=lambda e: e.order)

    def pending_bytes(self) -> int:
        total = 0
        for path in self._pending_files():
            with contextlib.suppress(FileNotFoundError):  # uploaded everywhere since the listing
                total += path.stat().st_size
        return total

    def _pending_files(self) -> Iterator[Path]:
        """The files under pending/, generation by generation. With several replicas another thread removes
        entries meanwhile, and a generation's directory with its last one: a directory gone is simply empty."""
        for generation in (self.root / "pending").iterdir():
            try:
                yield from generation.iterdir()
            except (FileNotFoundError, NotADirectoryError):
                continue

    def discard_uncaptured(self, cursor: WalCursor | None) -> int:
        """Remove entries the cursor never reached (a crash between spooling and the cursor),
        data files without a description, and whatever tmp/ holds."""
        removed = 0
        for entry in self.pending():
            if cursor is None or (
                entry.kind == "segment" and entry.generation == cursor.generation and entry.sequence > cursor.sequence
            ):
                self.remove(entry)
                removed += 1
        for data in (self.root / "pending").glob("*/*"):
            # The description of "<seq>.wal.zst" is "<seq>.json": every suffix goes, not only the last.
            described = data.with_name(data.name.split(".", 1)[0] + ".json")
            if data.suffix != ".json" and not described.exists():
                data.unlink(missing_ok=True)
                removed += 1
        self._clear_tmp()
        return removed

    # Helpers ----------------------------------------------------------------

    def _sidecar(self, entry: PendingEntry) -> Path:
        name = f"snapshot-{entry.sequence:020d}.json" if entry.kind == "snapshot" else f"{entry.sequence:020d}.json"
        return self.root / "pending" / entry.generation / name

    def save_caught_up(self, data: bytes) -> None:
        """Record that a run ended caught up (nothing pending), while this spool is still held."""
        self._write_atomic(self.root / CAUGHT_UP, data)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        """Replace ``path`` with ``data`` durably; on any failure the old file stays and no temporary file."""
        with self.writing(".json", what=f"writing {path.name}", needed=len(data)) as temp:
            with temp.open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, path)
            fsync_dir(path.parent)

    def _clear_tmp(self) -> None:
        for leftover in (self.root / "tmp").iterdir():
            leftover.unlink(missing_ok=True)

    def _refuse_raw_segments(self) -> None:
        """Refuse a spool holding raw WAL (``<seq>.wal``), as walship spooled it before segments were sealed
        at capture: this walship uploads only what is spooled as stored (docs/ARCHITECTURE.md)."""
        raw = sorted((self.root / "pending").glob("*/*.wal"))
        if raw:
            self.close()
            raise UsageError(
                f"spool {self.root} holds {len(raw)} WAL segments an older walship spooled uncompressed "
                f"(first: {raw[0].relative_to(self.root)}): upload them with that walship "
                "(`walship ship --once`), or move the spool aside to start a new generation"
            )


def snapshot_needs(size: int) -> int:
    """The room a snapshot of a ``size``-byte database takes in the spool (``Spool.check_snapshot_room``)."""
    return size + max(size // 4, SPOOL_RESERVE_BYTES) + SPOOL_RESERVE_BYTES


def new_entry(
    info: SnapshotInfo | WalSegment | ResyncSegment, stored_sha256: str = "", *, only_for: tuple[str, ...] = ()
) -> PendingEntry:
    """An entry for ``info``; ``stored_sha256`` when the writer hashed the file as it wrote it."""
    if isinstance(info, SnapshotInfo):
        return PendingEntry(
            kind="snapshot", snapshot=info, cached_at=utcnow(), stored_sha256=stored_sha256, only_for=only_for
        )
    return PendingEntry(kind="segment", segment=info, cached_at=utcnow(), stored_sha256=stored_sha256)
