"""Pydantic models shared by the core, the tasks and the flows.

They are small on purpose: tasks hand them to each other instead of bytes, so
Prefect never persists or pickles a database payload.
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "METADATA_FORMAT_VERSION",
    "CompressedFile",
    "ObjectInfo",
    "ReplicaMetadata",
    "RestoreResult",
    "RestoreTarget",
    "RetryPolicy",
    "SnapshotInfo",
    "SnapshotSource",
    "WalCursor",
    "WalPosition",
    "utcnow",
]

# Bumped when metadata.json changes incompatibly; readers refuse newer versions.
# 2: snapshots may record their SHA-256 at their end (sha256_at_end, walship.trailer).
METADATA_FORMAT_VERSION = 2


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ObjectInfo(_Frozen):
    """What a listing or a write says about one stored object."""

    key: str
    size: int
    etag: str = ""
    last_modified: datetime | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class WalPosition(_Frozen):
    """A point in a generation's WAL lineage: the last segment a state contains."""

    generation: str
    sequence: int = Field(ge=0)

    def __str__(self) -> str:
        """``<generation>/<sequence>``, as messages and artifacts show a position."""
        return f"{self.generation}/{self.sequence}"


class WalCursor(_Frozen):
    """Where WAL capture stands: the end of the last captured commit.

    ``checkpointed`` means the database file holds everything up to here
    (our own checkpoint backfilled it all) and nothing can follow it in this
    WAL (its next writer restarts it), so a WAL restarted once since, with
    new salts, still continues this lineage.
    """

    generation: str
    sequence: int = Field(ge=0, description="the last captured segment (0: the generation's snapshot)")
    salt1: int = 0
    salt2: int = 0
    offset: int = Field(ge=32, description="WAL byte offset just after the last captured commit frame")
    checksum1: int = 0
    checksum2: int = 0
    big_endian: bool = False
    page_size: int = 0
    checkpointed: bool = False
    db_inode: int = 0
    # The database file's mtime when ``checkpointed`` was recorded: if the WAL
    # is gone and the file changed since, someone wrote while nobody watched.
    db_mtime_ns: int = 0
    # When the cursor last moved: the next segment's commits all came later.
    moved_at: datetime | None = None
    # The generation's newest snapshot: its sequence and when it was taken.
    snapshot_sequence: int = 0
    snapshot_at: datetime | None = None

    @property
    def position(self) -> "WalPosition":
        return WalPosition(generation=self.generation, sequence=self.sequence)


class SnapshotSource(_Frozen):
    """A consistent copy of a database, taken into a local temporary file."""

    path: Path
    database: Path
    size: int
    page_size: int
    page_count: int
    sqlite_version: str
    taken_at: datetime


class CompressedFile(_Frozen):
    """A sealed file on local disk and what its uncompressed content hashes to."""

    path: Path
    raw_size: int
    compressed_size: int
    sha256: str
    level: int
    envelope: str = "zstd"


class SnapshotInfo(_Frozen):
    """One snapshot object, as recorded in the index and in the object itself."""

    key: str
    generation: str
    sequence: int
    created_at: datetime
    raw_size: int
    compressed_size: int
    sha256: str
    page_size: int
    page_count: int
    level: int
    database_id: str
    sqlite_version: str = ""
    # None until WAL shipping takes the snapshot: then the exact point it holds.
    wal_position: WalPosition | None = None
    # How the object is stored (walship.envelope); objects older than the envelope are plain zstd.
    envelope: str = "zstd"
    # A streamed snapshot records its SHA-256 at the object's end (walship.trailer),
    # not in its metadata: the object's description then has none, the index has it.
    sha256_at_end: bool = False
    # Taken for this replica alone, which missed the segments just before it (walship.acks): the gap it
    # ends is bridged, not lost.
    bridge: bool = False

    @property
    def encrypted(self) -> bool:
        return "age" in self.envelope.split("+")


class ReplicaMetadata(BaseModel):
    """The replica's index (``metadata.json``): rebuildable from a listing.

    The first six fields are those of the original design, kept so its
    readers still find them.
    """

    model_config = ConfigDict(extra="ignore")

    format_version: int = METADATA_FORMAT_VERSION
    database_id: str | None = None
    latest_snapshot: str | None = None
    latest_snapshot_time: datetime | None = None
    latest_wal_sequence: int | None = None
    snapshot_count: int = 0
    last_modified: datetime = Field(default_factory=utcnow)
    current_generation: str | None = None
    snapshots: list[SnapshotInfo] = Field(default_factory=list)
    # Set by the first snapshot: a replica is encrypted or not from its first object on.
    encrypted: bool | None = None


class RestoreTarget(_Frozen):
    """Which state a restore stops at, and what it must be a replica of."""

    segments: bool = True
    until_time: datetime | None = None
    until_sequence: int | None = None
    database_id: str | None = None


class RestoreResult(_Frozen):
    """What a restore placed where, and from which snapshot."""

    output: Path
    snapshot: SnapshotInfo
    size: int
    integrity: Literal["ok"] = "ok"
    duration_seconds: float
    position: WalPosition
    segments_applied: int = 0
    # A point-in-time restore's asked time, and the time up to which the state
    # is known to hold every commit (docs/FORMAT.md, "Point in time").
    asked_time: datetime | None = None
    complete_until: datetime | None = None
    # The first segment a time limit left out: restoring up to it gets the commits the state lacks.
    next_sequence: int | None = None
    # Bytes of the snapshot object read: fewer than it holds when a delta restore had frames already.
    snapshot_bytes_fetched: int = 0

    def missing_window(self, margin_seconds: float) -> bool:
        """True when commits between ``complete_until`` and the asked time may be missing."""
        if self.asked_time is None or self.complete_until is None:
            return False
        return (self.asked_time - self.complete_until).total_seconds() > margin_seconds


class RetryPolicy(_Frozen):
    """How a flow's tasks retry transient storage errors.

    Part of each flow's parameters so prefect.yaml can declare retries per
    deployment (it has no retries field of its own).
    """

    attempts: int = Field(default=4, ge=0, le=20, description="retries after the first try")
    backoff_seconds: float = Field(default=2.0, gt=0, le=600, description="first delay; doubles each retry")
    jitter: float = Field(default=0.5, ge=0, le=1, description="random spread of each delay, as a fraction")

    def delays(self) -> list[float]:
        return [self.backoff_seconds * 2**n for n in range(self.attempts)]
