"""Whether ``metadata.json`` tells the truth: it may lag behind the objects, never claim more."""

import time
from collections.abc import Callable

from walship.catalog import list_snapshot_keys, read_snapshot_info, read_trailer_sha256, snapshot_or_unusable
from walship.chain import missing_segment
from walship.errors import CorruptObjectError, NotFoundError, TransientStorageError, WalshipError
from walship.index import read_index
from walship.layout import format_resync_key, format_segment_key, parse_snapshot_key
from walship.models import ReplicaMetadata, SnapshotInfo
from walship.storage import ObjectStore
from walship.verify._report import Drill, VerifyReport

__all__ = ["check_index"]

# Fields the index records for a snapshot that must equal the object's own.
_COMPARED = (
    "raw_size",
    "compressed_size",
    "sha256",
    "sha256_at_end",
    "page_size",
    "page_count",
    "database_id",
    "wal_position",
)
_REBUILD = "rebuild it with 'walship status --rebuild-index'"


def check_index(store: ObjectStore) -> VerifyReport:
    """Compare ``metadata.json`` with the objects: it may lag behind them, never claim more."""
    started = time.monotonic()
    drill = Drill(store)
    metadata: ReplicaMetadata | None = None
    with drill.step("index"):
        # The listing first: whatever the index read after it lists was
        # uploaded before it, so a race with a writer cannot look like a lie.
        listed, strays = _readable_snapshots(store)
        metadata, _ = read_index(store)
        # Walship wrote what its index records: without its metadata it is damaged (the drill names it).
        listed.update(dict.fromkeys(strays & {s.key for s in metadata.snapshots} if metadata else (), None))
        if metadata is None:
            fix = _REBUILD if listed else "the first snapshot writes it"
            drill.add("index", False, f"the replica has no metadata.json: {fix}")
            return drill.report(started)
        ids = {s.database_id for s in listed.values() if s is not None}
        if metadata.database_id is not None and ids - {metadata.database_id}:
            drill.add("index", False, f"the index names database {metadata.database_id!r}, the snapshots {sorted(ids)}")
        else:
            drill.add("index", True, f"metadata.json is readable (format {metadata.format_version})")
        _check_index_snapshots(drill, metadata, listed)
        _check_index_complete(drill, metadata, listed, reread=lambda: read_index(store)[0])
        _check_index_position(drill, metadata, listed)
    return drill.report(started, metadata.database_id if metadata else None)


def _readable_snapshots(store: ObjectStore) -> tuple[dict[str, SnapshotInfo | None], set[str]]:
    """Listed snapshots by key, None where the object's own description is bad (the drill reports that);
    and the keys of strays, objects without walship metadata."""
    found: dict[str, SnapshotInfo | None] = {}
    strays: set[str] = set()
    for key in list_snapshot_keys(store):
        try:
            described = snapshot_or_unusable(store.head(key))
        except NotFoundError:
            continue  # deleted since the listing
        if isinstance(described, SnapshotInfo):
            found[key] = described
        elif described.stray:  # not walship's: the index rightly omits it
            strays.add(key)
        else:
            found[key] = None
    return found, strays


def _check_index_snapshots(drill: Drill, metadata: ReplicaMetadata, listed: dict[str, SnapshotInfo | None]) -> None:
    """Every snapshot the index lists exists and is described as the object describes itself."""
    problems = []
    for entry in metadata.snapshots:
        if entry.key in listed and listed[entry.key] is None:
            continue  # a damaged object, not a lie of the index: the drill's "snapshots" check names it
        try:
            stored = listed.get(entry.key) or read_snapshot_info(drill.store, entry.key)
        except NotFoundError:
            problems.append(f"{entry.key} is in the index but not in the replica")
            continue
        except TransientStorageError:
            raise
        except WalshipError as exc:
            problems.append(str(exc))
            continue
        try:
            # A streamed snapshot's SHA-256 is at its object's end, not in its
            # description ("" when encrypted: restore compares it there).
            stored = stored.model_copy(update={"sha256": read_trailer_sha256(drill.store, stored)})
        except CorruptObjectError as exc:
            problems.append(str(exc))
            continue
        compared = [n for n in _COMPARED if stored.sha256 or n != "sha256"]
        differ = [name for name in compared if getattr(entry, name) != getattr(stored, name)]
        if differ:
            # The SHA-256 at an object's end is part of its bytes: damage there fails its restore too.
            where = " (the one at the object's end)" if "sha256" in differ and stored.sha256_at_end else ""
            problems.append(f"the index and {entry.key} disagree on {', '.join(differ)}{where}")
    if metadata.snapshot_count != len(metadata.snapshots):
        problems.append(f"snapshot_count is {metadata.snapshot_count} for {len(metadata.snapshots)} snapshots")
    if problems:
        drill.add("index-snapshots", False, f"{'; '.join(problems[:3])}: {_REBUILD}")
    else:
        drill.add("index-snapshots", True, f"all {len(metadata.snapshots)} entries match their objects")


def _check_index_complete(
    drill: Drill,
    metadata: ReplicaMetadata,
    listed: dict[str, SnapshotInfo | None],
    reread: Callable[[], ReplicaMetadata | None],
) -> None:
    """The listing holds no snapshot the index lacks."""
    missing = sorted(set(listed) - {s.key for s in metadata.snapshots})
    if missing:
        # A snapshot is uploaded before the index records it: read the index
        # once more before calling a snapshot taken during the drill a lie.
        again = reread()
        missing = sorted(set(missing) - {s.key for s in (again.snapshots if again else [])})
    if missing:
        drill.add("index-complete", False, f"the index lacks {len(missing)} snapshot(s), e.g. {missing[0]}: {_REBUILD}")
    else:
        drill.add("index-complete", True, f"the index lists all {len(listed)} snapshots in the replica")


def _check_index_position(drill: Drill, metadata: ReplicaMetadata, listed: dict[str, SnapshotInfo | None]) -> None:
    """latest_snapshot, current_generation and latest_wal_sequence claim nothing that does not exist."""
    problems = []
    fix = _REBUILD
    latest_key = metadata.latest_snapshot
    if latest_key is not None and latest_key not in listed and not _exists(drill.store, latest_key):
        problems.append(f"latest_snapshot {latest_key} does not exist")
    generation, latest = metadata.current_generation, metadata.latest_wal_sequence
    if generation is not None and latest is not None:
        parsed = [parse_snapshot_key(key) for key in listed]
        bases = [p.sequence for p in parsed if p is not None and p.generation == generation and p.sequence <= latest]
        if not bases:
            problems.append(f"generation {generation} has no snapshot at or before sequence {latest}")
        else:
            present = set(drill.sequences(generation))
            for sequence in range(max(bases) + 1, latest + 1):
                key = format_segment_key(generation, sequence)
                resync = format_resync_key(generation, sequence)
                if sequence not in present and not _exists(drill.store, key) and not _exists(drill.store, resync):
                    # Uploaded before the index recorded it: the replica lost it, the index is right.
                    missing = missing_segment(generation, sequence)
                    problems.append(f"latest_wal_sequence {latest} claims {missing}, which is not in the replica")
                    fix = (
                        f"the replica lost the data after sequence {sequence - 1} (restore-newest names the way "
                        "to the older point); rebuilding the index would only hide the loss"
                    )
                    break
    if problems:
        drill.add("index-position", False, f"{'; '.join(problems)}: {fix}")
    else:
        where = f"{generation}/{latest}" if generation is not None else "no position"
        drill.add("index-position", True, f"{where}: every claimed object exists")


def _exists(store: ObjectStore, key: str) -> bool:
    """An object written after the listing shows up on a HEAD."""
    try:
        store.head(key)
    except NotFoundError:
        return False
    return True
