"""The replica's index, ``metadata.json``: the one mutable object.

Every update is read-modify-write guarded by a conditional put (If-None-Match
for the first write, If-Match on the ETag read after), retried on conflict by
re-reading, so two writers never lose each other's update. The index is a
cache of what the objects say: when it is missing or unreadable it is rebuilt
from a listing.
"""

import logging
import random
import time
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from walship.catalog import list_snapshots, read_trailer_sha256
from walship.errors import ConflictError, CorruptObjectError, NewerIndexError, NotFoundError
from walship.layout import GENERATIONS_PREFIX, METADATA_KEY, parse_segment_key
from walship.models import METADATA_FORMAT_VERSION, ReplicaMetadata, SnapshotInfo, WalPosition, utcnow
from walship.storage import ObjectStore

__all__ = [
    "add_snapshot",
    "current_snapshots",
    "forget_snapshots",
    "indexed_snapshots",
    "read_index",
    "readable_index",
    "rebuild_index",
    "record_wal_position",
    "update_index",
]

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 20
_MAX_INDEX_BYTES = 64 << 20


def read_index(store: ObjectStore) -> tuple[ReplicaMetadata | None, str | None]:
    """The index and its ETag, or ``(None, None)`` when there is none yet."""
    raw, etag = _read_raw(store)
    return (_parse(store, raw), etag) if raw is not None else (None, None)


def _read_raw(store: ObjectStore) -> tuple[bytes | None, str | None]:
    try:
        raw, info = store.get_bytes(METADATA_KEY, max_size=_MAX_INDEX_BYTES)
    except NotFoundError:
        return None, None
    return raw, info.etag


def _parse(store: ObjectStore, raw: bytes) -> ReplicaMetadata:
    try:
        metadata = ReplicaMetadata.model_validate_json(raw)
    except ValidationError as exc:
        raise CorruptObjectError(
            f"{METADATA_KEY} in {store.location} is not a valid index ({exc.error_count()} problem(s)): "
            "'walship status --rebuild-index' rebuilds it from a listing"
        ) from exc
    if metadata.format_version > METADATA_FORMAT_VERSION:
        raise NewerIndexError(
            f"{METADATA_KEY} in {store.location} has format {metadata.format_version}; "
            f"this walship reads up to {METADATA_FORMAT_VERSION}: upgrade walship"
        )
    return metadata


def current_snapshots(store: ObjectStore) -> list[SnapshotInfo]:
    """The snapshots a listing shows, described by the index where it can (one LIST)."""
    return list_snapshots(store, known=indexed_snapshots(store))


def indexed_snapshots(store: ObjectStore) -> list[SnapshotInfo]:
    """The index's snapshot descriptions, to spare HEADs; none when it is missing or unreadable."""
    metadata = readable_index(store)
    return metadata.snapshots if metadata else []


def readable_index(store: ObjectStore) -> ReplicaMetadata | None:
    """The index, or None when it is missing or unreadable (status and verify report which)."""
    try:
        metadata, _ = read_index(store)
    except CorruptObjectError as exc:
        log.warning("%s; describing snapshots from the objects instead", exc)
        return None
    return metadata


def rebuild_index(store: ObjectStore) -> ReplicaMetadata:
    """Derive the index from the objects themselves (one LIST, a HEAD per snapshot)."""
    listing = list(store.list(GENERATIONS_PREFIX))
    metadata = ReplicaMetadata()
    for snapshot in list_snapshots(store, listing=listing):
        metadata = _with_snapshot(metadata, _with_checksum(store, snapshot))
    # The newest shipped segment of the current generation, as record_wal_position would have it.
    sequences = [
        p.sequence for o in listing if (p := parse_segment_key(o.key)) and p.generation == metadata.current_generation
    ]
    if sequences:
        metadata = metadata.model_copy(
            update={"latest_wal_sequence": max(*sequences, metadata.latest_wal_sequence or 0)}
        )
    return metadata


def _with_checksum(store: ObjectStore, snapshot: SnapshotInfo) -> SnapshotInfo:
    """A streamed snapshot's SHA-256 read from its end; left unknown (restore reads it) when that fails."""
    try:
        return snapshot.model_copy(update={"sha256": read_trailer_sha256(store, snapshot)})
    except CorruptObjectError as exc:
        log.warning("%s (its checksum stays unknown in the index)", exc)
        return snapshot


def update_index(store: ObjectStore, change: Callable[[ReplicaMetadata], ReplicaMetadata]) -> ReplicaMetadata:
    """Apply ``change`` to the current index with a conditional write; retry on conflict."""
    for attempt in range(_MAX_ATTEMPTS):
        raw, etag = _read_raw(store)
        current = None
        if raw is not None:
            try:
                current = _parse(store, raw)
            except NewerIndexError:
                raise
            except CorruptObjectError as exc:
                # Replace exactly the unreadable object we read (its ETag, not
                # one fetched later): a writer that repaired it meanwhile wins,
                # and we retry on top of its index instead of overwriting it.
                log.warning("%s (rebuilding it now)", exc)
        updated = change(current if current is not None else rebuild_index(store))
        # Stamped with this walship's format: an older one refuses what it cannot read.
        updated = updated.model_copy(update={"last_modified": utcnow(), "format_version": METADATA_FORMAT_VERSION})
        body = updated.model_dump_json(indent=2).encode()
        try:
            store.put_bytes(METADATA_KEY, body, if_match=etag, if_none_match=etag is None)
            return updated
        except ConflictError:
            # Someone else wrote in between: back off a little and re-read.
            time.sleep(min(1.0, 0.01 * 2**attempt) * random.random())
    raise ConflictError(f"update {METADATA_KEY} in {store.location}: lost {_MAX_ATTEMPTS} races in a row; try again")


def add_snapshot(store: ObjectStore, snapshot: SnapshotInfo) -> ReplicaMetadata:
    """Record a newly uploaded snapshot in the index."""
    return update_index(store, lambda metadata: _with_snapshot(metadata, snapshot))


def record_wal_position(store: ObjectStore, position: WalPosition) -> ReplicaMetadata:
    """Record the newest shipped segment (once per shipping run, not per sync)."""
    return update_index(
        store,
        lambda metadata: metadata.model_copy(
            update={"latest_wal_sequence": position.sequence, "current_generation": position.generation}
        ),
    )


def forget_snapshots(store: ObjectStore, keys: Sequence[str]) -> ReplicaMetadata:
    """Drop deleted snapshots from the index (retention never deletes the newest)."""
    gone = set(keys)

    def change(metadata: ReplicaMetadata) -> ReplicaMetadata:
        kept = [s for s in metadata.snapshots if s.key not in gone]
        return metadata.model_copy(update={"snapshots": kept, "snapshot_count": len(kept)})

    return update_index(store, change)


def _with_snapshot(metadata: ReplicaMetadata, snapshot: SnapshotInfo) -> ReplicaMetadata:
    snapshots = [s for s in metadata.snapshots if s.key != snapshot.key] + [snapshot]
    snapshots.sort(key=lambda s: (s.created_at, s.key))
    newest = snapshots[-1]
    return metadata.model_copy(
        update={
            "database_id": metadata.database_id or snapshot.database_id,
            "encrypted": metadata.encrypted if metadata.encrypted is not None else snapshot.encrypted,
            "snapshots": snapshots,
            "snapshot_count": len(snapshots),
            "latest_snapshot": newest.key,
            "latest_snapshot_time": newest.created_at,
            "current_generation": newest.generation,
            # A new generation's snapshot restarts the WAL count there.
            "latest_wal_sequence": (
                newest.sequence
                if newest.generation != metadata.current_generation
                else max(metadata.latest_wal_sequence or 0, newest.sequence)
            ),
        }
    )
