"""What a replica holds, for ``walship status``: from one listing, described by the index.

One LIST of the whole prefix gives every key and size: snapshots,
segments, the lease and the stored bytes. The index spares a HEAD per
snapshot it describes; a snapshot it lacks is described from its object, and
the index is reported ``stale``. What the index claims (the shipped position,
its snapshots) must be in the listing, or the newest data is lost and not
restorable; every key walship did not write is listed as a stray. Beyond
that: one GET of the index, one HEAD of each generation's newest segment and
of the snapshot a default restore starts from (walship.generations), one GET
of the lease if there is one, and one GET of metadata.json again where the
listing shows the original design's layout. On S3, two more: the bucket's
versioning and its Object Lock default, from which each point's lock is
estimated (walship.locks).
``--rebuild-index`` adds a rebuild (a LIST and a HEAD per snapshot), a
conditional write and a second listing.
"""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ValidationError

from walship.catalog import require_replica
from walship.envelope import recorded_encryption
from walship.errors import CorruptObjectError, UsageError
from walship.generations import describe_generations
from walship.index import read_index, rebuild_index, update_index
from walship.layout import LEASE_KEY, generation_of, is_resync_key, parse_segment_key
from walship.lease import read_lease
from walship.locks import PointLocks, estimate_locks
from walship.models import ReplicaMetadata, SnapshotInfo, utcnow
from walship.original import OriginalLayout, describe_original
from walship.retention import LEFTOVER_AGE, format_duration
from walship.storage import BucketProtection, ObjectStore, leftovers_of, versions_of
from walship.units import human_bytes

__all__ = ["GenerationSummary", "IndexState", "LeaseState", "ReplicaStatus", "replica_status"]

# ok: metadata.json agrees with the listing; stale: it names other snapshots
# than the listing shows; missing; corrupt: unreadable; original: the
# original design's metadata.json, not a walship index.
IndexState = Literal["ok", "missing", "stale", "corrupt", "original"]
# The per-snapshot table shows the newest few and the oldest; --json shows all.
_NEWEST_SHOWN = 3


class LeaseState(BaseModel):
    holder: str
    acquired_at: datetime
    expires_at: datetime
    live: bool


class GenerationSummary(BaseModel):
    """One generation in ``status --json``: what ``--generation`` can name."""

    generation: str
    newest_point: datetime
    snapshots: int
    segments: int
    resyncs: int = 0  # of its segments, those that bridged a gap (walship.resync)
    resync_bytes: int = 0
    restorable: bool


class ReplicaStatus(BaseModel):
    """A replica at a glance."""

    replica: str
    checked_at: datetime
    database_id: str | None
    index: IndexState
    index_rebuilt: bool = False
    index_last_modified: datetime | None
    index_latest_wal_sequence: int | None
    # The generation holding the newest data: the one a default restore uses.
    current_generation: str | None
    # False when that generation cannot be restored (a problem names why and what to do).
    restorable: bool | None = None
    generation_count: int
    # Every generation, oldest newest point first (the last is current_generation).
    generations: list[GenerationSummary] = []
    snapshot_count: int
    snapshot_bytes: int
    newest: SnapshotInfo | None
    oldest: SnapshotInfo | None
    snapshots: list[SnapshotInfo]
    segments_in_generation: int
    segments_total: int
    segment_bytes: int
    # Whether the replica's objects are encrypted with age (None: no snapshot says yet).
    encrypted: bool | None = None
    # Resync segments (gaps bridged without a full snapshot), in every generation.
    resyncs_total: int = 0
    resync_bytes: int = 0
    newest_segment_sequence: int | None
    newest_segment_captured_at: datetime | None
    # Seconds from the newest shipped state (the newest segment's capture, or
    # the newest snapshot when there is no segment, or the original layout's
    # newest snapshot when walship has none) to ``checked_at``.
    lag_seconds: float | None
    lag_of: Literal["segment", "snapshot", "original-layout snapshot"] | None
    total_bytes: int
    object_count: int
    lease: LeaseState | None
    original: OriginalLayout | None
    # Objects walship did not write, at its keys or anywhere else: reported, never used.
    strays: list[str] = []
    # Files of interrupted uploads (file://): not objects, but they take room until retention removes them.
    leftover_count: int = 0
    leftover_bytes: int = 0
    # Gaps this replica has because it was behind another replica of its shipper, each ended by a snapshot
    # taken for it alone: a point inside cannot be restored from here, the newest data can.
    bridged: list[str] = []
    # How the bucket keeps what was written (S3 only), and how long that keeps the points restorable.
    protection: BucketProtection | None = None
    locks: PointLocks | None = None
    problems: list[str]

    def render(self) -> str:
        index = self.index + (" (rebuilt from a listing just now)" if self.index_rebuilt else "")
        lines = [
            f"replica:      {self.replica}",
            f"database id:  {self.database_id or '-'}",
            f"index:        {index}",
            f"encryption:   {self._encryption()}",
            f"generation:   {self.current_generation or '-'} ({self.generation_count} in total){self._restorable()}",
            f"snapshots:    {self.snapshot_count} ({human_bytes(self.snapshot_bytes)})",
            *self._snapshot_lines(),
            f"segments:     {self.segments_in_generation} in the current generation, {self.segments_total} in total "
            f"({human_bytes(self.segment_bytes)}); newest {self._newest_segment()}",
            *self._resync_line(),
            f"lag:          {self._lag()}",
            f"stored:       {human_bytes(self.total_bytes)} in {self.object_count} objects",
            f"lease:        {self._lease()}",
        ]
        if self.protection is not None:
            lines.append(f"protection:   {self.protection.describe()}")
        if self.locks is not None and self.protection is not None and self.protection.lock_mode is not None:
            lines.append(f"locked:       {self.locks.describe()}")
        if self.original is not None:
            lines += self.original.render()
        lines += [f"stray:        {key} (walship did not write it; it is never used)" for key in self.strays]
        if self.leftover_count:
            size, idle = human_bytes(self.leftover_bytes), format_duration(LEFTOVER_AGE)
            lines.append(
                f"leftovers:    {self.leftover_count} files of interrupted uploads ({size}) in .tmp: "
                f"'walship retention' removes those idle for {idle}"
            )
        lines += [f"bridged:      {gap}" for gap in self.bridged]
        lines += [f"problem:      {problem}" for problem in self.problems]
        return "\n".join(lines)

    def _encryption(self) -> str:
        if self.encrypted is None:
            return "-"
        return "age (restore and verify need --age-identity)" if self.encrypted else "none"

    def _resync_line(self) -> list[str]:
        if not self.resyncs_total:
            return []
        size = human_bytes(self.resync_bytes)
        gaps = "gap" if self.resyncs_total == 1 else "gaps"
        return [f"resyncs:      {self.resyncs_total} {gaps} bridged without a full snapshot ({size})"]

    def _restorable(self) -> str:
        if self.restorable is None:
            return ""
        return ", newest data, restorable" if self.restorable else ", newest data, NOT restorable (see problem)"

    def _snapshot_lines(self) -> list[str]:
        if not self.snapshots:
            return ["  (none: run 'walship snapshot DB --replica URL')"] if self.original is None else []
        newest = self.snapshots[::-1][:_NEWEST_SHOWN]
        lines = [_snapshot_line(s) for s in newest]
        hidden = len(self.snapshots) - len(newest) - 1
        if hidden > 0:
            lines.append(f"  ... {hidden} more (--json lists them all)")
        if hidden >= 0:
            lines.append(_snapshot_line(self.snapshots[0]))
        return lines

    def _newest_segment(self) -> str:
        if self.newest_segment_sequence is None:
            return "-"
        when = f"{self.newest_segment_captured_at:%Y-%m-%d %H:%M:%S}Z" if self.newest_segment_captured_at else "?"
        return f"sequence {self.newest_segment_sequence}, captured {when}"

    def _lag(self) -> str:
        if self.lag_seconds is None:
            return "-"
        return f"{self.lag_seconds:.1f} s since the newest {self.lag_of}"

    def _lease(self) -> str:
        if self.lease is None:
            return "none"
        if self.lease.live:
            return f"held by {self.lease.holder} until {self.lease.expires_at:%Y-%m-%d %H:%M:%S}Z"
        return f"free (last held by {self.lease.holder}, expired {self.lease.expires_at:%Y-%m-%d %H:%M:%S}Z)"


def replica_status(store: ObjectStore, *, rebuild: bool = False, lock_days: int = 0) -> ReplicaStatus:
    """Describe the replica; with ``rebuild``, first rewrite metadata.json from a listing. On a bucket with
    Object Lock, name the oldest point locked ``lock_days`` more days.

    Raises ``NotFoundError`` where no replica is (a wrong URL, most likely).
    """
    problems: list[str] = []
    metadata, state = _read(store, problems)
    listing = list(store.list())
    require_replica(store, listing)
    original = describe_original(store, listing)
    if original is not None and original.metadata_state == "original" and state != "corrupt":
        state = "original"
    # The index was read before the listing: what it claims was uploaded before, so a gap is a loss.
    generations = describe_generations(store, listing=listing, index=metadata)
    snapshots = generations.snapshots
    if state == "ok" and metadata is not None and {s.key for s in metadata.snapshots} != {s.key for s in snapshots}:
        state = "stale"
    if rebuild:
        if state == "original" and not snapshots:
            raise UsageError(
                f"status --rebuild-index: {store.location} holds the original layout and no walship snapshot; "
                "its metadata.json belongs to the original replicator, so walship leaves it alone"
            )
        # A conditional write like every update: a racing writer's change is re-read, not lost.
        metadata = update_index(store, lambda _current: rebuild_index(store))
        listing = list(store.list())  # what the replica holds now, the new index included
        generations = describe_generations(store, listing=listing, index=metadata)
        snapshots = generations.snapshots
    problems += generations.problems()
    current = generations.newest
    generation = current.generation if current else None
    segments = [(parsed, o.size) for o in listing if (parsed := parse_segment_key(o.key)) is not None]
    resyncs: dict[str, list[int]] = {}
    for obj in listing:
        owner = generation_of(obj.key)
        if owner is not None and is_resync_key(obj.key):
            resyncs.setdefault(owner, []).append(obj.size)
    in_generation = list(current.sequences) if current else []
    captured_at = current.newest_captured_at if current else None
    now = utcnow()
    lag_of, shipped = _newest_state(captured_at, snapshots, original)
    leftovers = leftovers_of(store)
    versioned = versions_of(store)
    protection = versioned.protection() if versioned is not None else None
    return ReplicaStatus(
        replica=store.location,
        checked_at=now,
        database_id=_database_id(metadata, snapshots, original),
        index=state,
        index_rebuilt=rebuild,
        index_last_modified=metadata.last_modified if metadata else None,
        index_latest_wal_sequence=metadata.latest_wal_sequence if metadata else None,
        current_generation=generation,
        restorable=current.restorable if current else None,
        generation_count=len(generations.generations),
        generations=[
            GenerationSummary(
                generation=g.generation,
                newest_point=g.newest_point,
                snapshots=len(g.snapshots),
                segments=len(g.sequences),
                resyncs=len(resyncs.get(g.generation, [])),
                resync_bytes=sum(resyncs.get(g.generation, [])),
                restorable=g.restorable,
            )
            for g in generations.generations
        ],
        snapshot_count=len(snapshots),
        snapshot_bytes=sum(s.compressed_size for s in snapshots),
        newest=snapshots[-1] if snapshots else None,
        oldest=snapshots[0] if snapshots else None,
        snapshots=snapshots,
        segments_in_generation=len(in_generation),
        segments_total=len(segments),
        segment_bytes=sum(size for _, size in segments),
        encrypted=recorded_encryption(metadata, snapshots),
        resyncs_total=sum(len(sizes) for sizes in resyncs.values()),
        resync_bytes=sum(sum(sizes) for sizes in resyncs.values()),
        newest_segment_sequence=in_generation[-1] if in_generation else None,
        newest_segment_captured_at=captured_at,
        lag_seconds=(now - shipped).total_seconds() if shipped else None,
        lag_of=lag_of,
        total_bytes=sum(o.size for o in listing),
        object_count=len(listing),
        lease=_lease(store, now, problems) if any(o.key == LEASE_KEY for o in listing) else None,
        original=original,
        strays=list(generations.strays),
        leftover_count=len(leftovers),
        leftover_bytes=sum(leftover.size for leftover in leftovers),
        bridged=[
            f"sequences {first}-{snapshot} of generation {state.generation} are not here: this replica was behind "
            f"another and resumed at its snapshot {snapshot}; a point inside is restored from the other replica"
            for state in generations.generations
            for first, snapshot in state.bridged
        ],
        protection=protection,
        locks=estimate_locks(protection, generations.generations, listing, now, lock_days) if protection else None,
        problems=problems,
    )


def _newest_state(
    captured_at: datetime | None, snapshots: list[SnapshotInfo], original: OriginalLayout | None
) -> tuple[Literal["segment", "snapshot", "original-layout snapshot"] | None, datetime | None]:
    if captured_at is not None:
        return "segment", captured_at
    if snapshots:
        return "snapshot", snapshots[-1].created_at
    if original is not None and original.newest is not None:
        return "original-layout snapshot", original.newest.taken_at
    return None, None


def _read(store: ObjectStore, problems: list[str]) -> tuple[ReplicaMetadata | None, IndexState]:
    try:
        metadata, _ = read_index(store)
    except CorruptObjectError as exc:
        problems.append(str(exc))
        return None, "corrupt"
    return metadata, "ok" if metadata is not None else "missing"


def _lease(store: ObjectStore, now: datetime, problems: list[str]) -> LeaseState | None:
    try:
        lease, _ = read_lease(store)
    except (CorruptObjectError, ValidationError):
        problems.append(f"{LEASE_KEY} is unreadable: the next shipper run replaces it")
        return None
    if lease is None:
        return None  # deleted between the listing and now
    return LeaseState(
        holder=lease.holder, acquired_at=lease.acquired_at, expires_at=lease.expires_at, live=lease.expires_at > now
    )


def _database_id(
    metadata: ReplicaMetadata | None, snapshots: list[SnapshotInfo], original: OriginalLayout | None
) -> str | None:
    if metadata is not None and metadata.database_id:
        return metadata.database_id
    if snapshots:
        return snapshots[-1].database_id
    return original.metadata.db_identifier if original is not None and original.metadata is not None else None


def _snapshot_line(snapshot: SnapshotInfo) -> str:
    return (
        f"  {snapshot.created_at:%Y-%m-%d %H:%M:%S}Z  {snapshot.raw_size:>14} -> "
        f"{snapshot.compressed_size:>14} bytes  {snapshot.key}"
    )
