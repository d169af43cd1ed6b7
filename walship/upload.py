"""The remote half of WAL shipping: drain the spool into storage, in order.

Each entry is removed from the spool only once storage confirmed it, so a
crash or an outage at any point loses nothing; what was uploaded just before
a crash is uploaded again, with the same content. This is what the Prefect
task retries; ``walship.ship.Shipper`` is the local half.
"""

from pathlib import Path

from pydantic import BaseModel, Field

from walship import codec, index
from walship.catalog import describe_snapshot, to_metadata
from walship.errors import ChecksumMismatchError
from walship.lease import acquire_lease, lease_needs_renewal
from walship.models import SegmentInfo, WalPosition, utcnow
from walship.spool import PendingEntry, Spool
from walship.storage import ObjectStore

__all__ = ["UploadResult", "describe_segment", "upload_pending"]


class UploadResult(BaseModel):
    """What one drain of the spool uploaded."""

    snapshots: list[str] = Field(default_factory=list)
    segments: int = 0
    bytes: int = 0
    last_position: WalPosition | None = None
    oldest_captured_at_lag_seconds: float | None = None


def describe_segment(info: SegmentInfo) -> dict[str, str]:
    """User metadata stored with a segment object."""
    # A WAL segment's metadata stays as it always was: readers default the resync fields.
    return to_metadata(info, exclude={"key"} if info.kind == "resync" else {"key", "kind", "state_digest"})


def upload_pending(store: ObjectStore, spool: Spool, *, holder: str, level: int) -> UploadResult:
    """Upload every spooled entry in order; each is removed only once storage confirmed it.

    The lease is renewed first when half its time has passed, so an idle
    database costs nothing and a busy one a lease PUT every few minutes.
    """
    result = UploadResult()
    lease = spool.load_lease()
    if lease is None or lease_needs_renewal(lease):
        spool.save_lease(acquire_lease(store, holder))
    for entry in spool.pending():
        try:
            _upload_one(store, spool, entry, level, result)
        except Exception:
            spool.record_attempt(entry)
            raise
        spool.remove(entry)
    return result


def _upload_one(store: ObjectStore, spool: Spool, entry: PendingEntry, level: int, result: UploadResult) -> None:
    data = spool.data_path(entry)
    if entry.snapshot is not None:
        store.put_file(entry.snapshot.key, data, metadata=describe_snapshot(entry.snapshot))
        index.add_snapshot(store, entry.snapshot)
        result.snapshots.append(entry.snapshot.key)
        result.bytes += entry.snapshot.compressed_size
        return
    segment = entry.segment
    assert segment is not None
    if entry.sealed:
        size = data.stat().st_size
        if size != segment.compressed_size:
            raise ChecksumMismatchError(f"spool {data}: {size} bytes, {segment.compressed_size} when captured")
        store.put_file(segment.key, data, metadata=describe_segment(segment))
        stored = segment.compressed_size
    else:
        stored = _upload_raw(store, spool, data, segment, level)
    result.segments += 1
    result.bytes += stored
    result.last_position = WalPosition(generation=segment.generation, sequence=segment.sequence)
    lag = (utcnow() - segment.captured_at).total_seconds()
    result.oldest_captured_at_lag_seconds = max(result.oldest_captured_at_lag_seconds or 0.0, lag)


def _upload_raw(store: ObjectStore, spool: Spool, data: Path, segment: SegmentInfo, level: int) -> int:
    """A segment an older walship spooled raw: compressed now, into the spool's tmp/ for the upload only."""
    with spool.writing(".zst", what=f"compressing segment {data.name}", needed=segment.raw_size) as target:
        compressed = codec.compress_file(data, target, level)
        if compressed.sha256 != segment.sha256:
            raise ChecksumMismatchError(f"spool {data}: content changed since capture")
        info = segment.model_copy(update={"compressed_size": compressed.compressed_size, "level": level})
        store.put_file(info.key, compressed.path, metadata=describe_segment(info))
    return compressed.compressed_size
