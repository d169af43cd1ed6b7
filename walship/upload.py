"""The remote half of WAL shipping: drain the spool into storage, in order.

Each entry is removed from the spool only once storage confirmed it, so a
crash or an outage at any point loses nothing; what was uploaded just before
a crash is uploaded again, with the same content. This is what the Prefect
task retries; ``walship.ship.Shipper`` is the local half.
"""

import os
from pathlib import Path

from pydantic import BaseModel, Field

from walship import codec, index
from walship.acks import ReplicaAcks
from walship.catalog import describe_snapshot
from walship.envelope import is_encrypted
from walship.errors import ChecksumMismatchError, CorruptObjectError, SpoolEntryDamagedError
from walship.lease import acquire_lease, lease_needs_renewal
from walship.models import WalPosition, utcnow
from walship.segment import segment_metadata
from walship.spool import PendingEntry, Spool, file_sha256
from walship.storage import ObjectStore

__all__ = ["UploadResult", "upload_pending"]


class UploadResult(BaseModel):
    """What one drain of the spool uploaded, to which replica (its location)."""

    replica: str = ""
    snapshots: list[str] = Field(default_factory=list)
    segments: int = 0
    commits: int = 0  # what the uploaded segments hold, whichever run captured them
    bytes: int = 0
    last_position: WalPosition | None = None
    oldest_captured_at_lag_seconds: float | None = None


def upload_pending(store: ObjectStore, spool: Spool, *, holder: str, acks: ReplicaAcks | None = None) -> UploadResult:
    """Upload every spooled entry ``store``'s replica needs, in order; each is acknowledged only once storage
    confirmed it (``acks``: the run's, shared by its replicas' uploaders; else the spool's, as last served).

    The lease is renewed first when half its time has passed, so an idle
    database costs nothing and a busy one a lease PUT every few minutes.

    Each entry's bytes are checked against what was spooled before they go
    up, and the store checks the bytes it receives against the same SHA-256
    (the file may change after the first check). A damaged entry is never
    uploaded: it and the entries after it in its generation are dropped, that
    generation is abandoned (the replica keeps it as it was, consistent), and
    ``SpoolEntryDamagedError`` ends the drain; the shipper starts a new
    generation.
    """
    replica = store.location
    result = UploadResult(replica=replica)
    acks = acks or ReplicaAcks(spool)
    spool.drop_abandoned()
    wanted = [entry for entry in spool.pending() if acks.wants(replica, entry)]
    if not wanted or acks.waits_for_bridge(replica):
        # Nothing to send, or only what follows the snapshot it is to resume at, still being copied.
        return result
    lease = spool.load_lease(replica)
    if lease is None or lease_needs_renewal(lease):
        spool.save_lease(replica, acquire_lease(store, holder))
    for entry in wanted:
        try:
            _check_intact(spool, entry)
            _upload_one(store, spool, entry, result, bridge=acks.resumes_at(replica, entry))
        except SpoolEntryDamagedError:
            spool.abandon(entry, f"spool entry {spool.data_path(entry).name} was damaged")
            raise
        except Exception:
            spool.record_attempt(entry)
            raise
        acks.stored(replica, entry)
    return result


def _check_intact(spool: Spool, entry: PendingEntry) -> None:
    """Raise ``SpoolEntryDamagedError`` when the entry's file is not what was spooled.

    Its SHA-256 as spooled when recorded; else (an older spool) its size, and
    for plaintext the SHA-256 of what it opens to. Every entry is spooled as
    it is stored (``Spool`` refuses a spool that holds raw WAL).
    """
    data = spool.data_path(entry)
    info = entry.snapshot or entry.segment
    assert info is not None
    try:
        if entry.stored_sha256:
            if file_sha256(data) != entry.stored_sha256:
                raise ChecksumMismatchError("its SHA-256 is not the one recorded when it was spooled")
        else:
            size = data.stat().st_size
            if size != info.compressed_size:
                raise ChecksumMismatchError(f"{size} bytes, {info.compressed_size} when spooled")
            if not is_encrypted(info.envelope):
                _check_opens(data, info.sha256, info.raw_size)
    except (ChecksumMismatchError, CorruptObjectError, FileNotFoundError) as exc:
        raise _damaged(data, entry, str(exc)) from exc


def _damaged(data: Path, entry: PendingEntry, why: str) -> SpoolEntryDamagedError:
    return SpoolEntryDamagedError(
        f"spool entry {data} is damaged ({why}): not uploaded; {entry.generation} ends before it on the "
        "replica and a new generation starts"
    )


def _put_spooled(store: ObjectStore, key: str, data: Path, entry: PendingEntry, metadata: dict[str, str]) -> None:
    """Upload an entry's file; the store proves that what it received is what was spooled."""
    try:
        store.put_file(key, data, metadata=metadata, sha256=entry.stored_sha256 or None)
    except ChecksumMismatchError as exc:
        raise _damaged(data, entry, "what was read to upload is not what was spooled") from exc


def _upload_one(store: ObjectStore, spool: Spool, entry: PendingEntry, result: UploadResult, *, bridge: bool) -> None:
    """``bridge``: the snapshot this replica resumes at, described as its bridge whoever it was taken for."""
    data = spool.data_path(entry)
    if entry.snapshot is not None:
        snapshot = entry.snapshot.model_copy(update={"bridge": True}) if bridge else entry.snapshot
        _put_spooled(store, snapshot.key, data, entry, describe_snapshot(snapshot))
        index.add_snapshot(store, snapshot)
        result.snapshots.append(snapshot.key)
        if snapshot.bridge and snapshot.wal_position is not None:
            result.last_position = snapshot.wal_position  # where this replica resumes
        result.bytes += snapshot.compressed_size
        return
    segment = entry.segment
    assert segment is not None
    _put_spooled(store, segment.key, data, entry, segment_metadata(segment))
    result.segments += 1
    result.commits += segment.commits
    result.bytes += segment.compressed_size
    result.last_position = WalPosition(generation=segment.generation, sequence=segment.sequence)
    lag = (utcnow() - segment.captured_at).total_seconds()
    result.oldest_captured_at_lag_seconds = max(result.oldest_captured_at_lag_seconds or 0.0, lag)


def _check_opens(data: Path, sha256: str, size: int) -> None:
    with data.open("rb") as source, open(os.devnull, "wb") as nowhere:
        codec.decompress_to_file(source, nowhere, expected_sha256=sha256, expected_size=size, name=data.name)
