"""What the shipper is told (``ShipConfig``) and what each of its steps reports (``SyncResult``)."""

import logging

from pydantic import BaseModel, Field

from walship import codec
from walship.envelope import Sealing

__all__ = [
    "COALESCE_SECONDS",
    "FIRST_CAPTURE",
    "ResyncSummary",
    "ShipConfig",
    "SyncResult",
    "generation_log_level",
    "merge",
]

# Why the first run of a database starts a generation: routine, unlike every other reason.
FIRST_CAPTURE = "no earlier capture of this database"


# A single shipper's window for commits to share one sync ("When a sync is due", docs/ARCHITECTURE.md).
COALESCE_SECONDS = 0.35


def generation_log_level(reason: str) -> int:
    """INFO for a database's first generation, WARNING for one that means continuity was lost."""
    return logging.INFO if reason == FIRST_CAPTURE else logging.WARNING


class ShipConfig(BaseModel):
    """Thresholds of the shipper."""

    database_id: str
    level: int = Field(default=codec.DEFAULT_LEVEL, ge=codec.MIN_LEVEL, le=codec.MAX_LEVEL)
    recipients: tuple[str, ...] = Field(default=(), description="age recipients: objects are encrypted for them")
    checkpoint_pages: int = Field(default=1000, ge=1, description="PASSIVE checkpoint past this many WAL pages")
    restart_pages: int = Field(
        default=10_000, ge=1, description="past this many, pause writers a moment so the WAL can restart"
    )
    checkpoint_seconds: float = Field(default=60.0, gt=0, description="...or when the WAL is older than this")
    emergency_wal_bytes: int = Field(default=512 << 20, description="TRUNCATE + new generation past this WAL size")
    spool_cap_bytes: int = Field(default=1 << 30, description="warn loudly when the spool holds more")
    snapshot_seconds: float = Field(
        default=3600.0, ge=0, description="snapshot within the generation this often when it changed (0: never)"
    )
    coalesce_seconds: float = Field(
        default=COALESCE_SECONDS,
        gt=0,
        description="commits wait this long after the previous sync began to share a segment: under steady "
        "writes one upload per window, a commit in storage about this plus an upload after it was made",
    )
    backfill_seconds: float = Field(
        default=0.0,
        ge=0,
        description="under steady writes the pin moves past new captures (then SQLite's autocheckpoint backfills "
        "and fsyncs in a writer's commit) and the WAL is backfilled at most this often, however often syncs "
        "capture (0: at every sync); a shipper's interval",
    )
    progress_seconds: float = Field(
        default=60.0, gt=0, description="tell the observer how the window goes this often (a log line, the artifact)"
    )

    @property
    def sealing(self) -> Sealing:
        return Sealing(level=self.level, recipients=self.recipients)


class ResyncSummary(BaseModel):
    """A resync segment spooled: why, and what it costs against the database."""

    key: str
    reason: str
    pages: int  # pages shipped
    page_count: int  # pages of the database it resyncs
    raw_bytes: int
    stored_bytes: int


class SyncResult(BaseModel):
    """What one step captured (nothing was uploaded)."""

    segments: int = 0
    frames: int = 0
    commits: int = 0
    bytes: int = 0
    checkpointed: bool = False
    new_generation: str | None = None
    reason: str | None = None
    snapshot: str | None = None  # key of a snapshot taken within the generation
    resync: ResyncSummary | None = None


def merge(a: SyncResult, b: SyncResult) -> SyncResult:
    """Two steps' results as one (``b`` came later)."""
    return SyncResult(
        segments=a.segments + b.segments,
        frames=a.frames + b.frames,
        commits=a.commits + b.commits,
        bytes=a.bytes + b.bytes,
        checkpointed=a.checkpointed or b.checkpointed,
        new_generation=b.new_generation or a.new_generation,
        reason=b.reason or a.reason,
        snapshot=b.snapshot or a.snapshot,
        resync=b.resync or a.resync,
    )
