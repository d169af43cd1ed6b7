"""What a replica holds, read from the objects themselves.

Every snapshot object carries its own description in user metadata, so a
listing plus one HEAD per object rebuilds everything the index says: restore
never depends on ``metadata.json`` alone. A streamed snapshot's SHA-256 is
at the object's end instead (``walship.trailer``): one small ranged read,
when the object is not encrypted.
"""

import itertools
from collections.abc import Iterable, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, ValidationError

from walship.errors import ChecksumMismatchError, CorruptObjectError, NotFoundError, WalshipError
from walship.frames import ENVELOPE as ZSTD_FRAMES
from walship.frames import read_layout
from walship.layout import GENERATIONS_PREFIX, format_snapshot_key, is_replica_key, parse_snapshot_key
from walship.models import ObjectInfo, SnapshotInfo, WalPosition
from walship.storage import ObjectStore, versions_of
from walship.trailer import TRAILER_SIZE, parse_trailer

__all__ = [
    "UnusableSnapshot",
    "describe_snapshot",
    "from_metadata",
    "has_walship_metadata",
    "list_snapshot_keys",
    "list_snapshots",
    "lost_metadata",
    "read_indexed_snapshot",
    "read_snapshot_info",
    "read_trailer_sha256",
    "require_replica",
    "scan_snapshots",
    "select_snapshot",
    "snapshot_or_unusable",
    "to_metadata",
]

_PREFIX = "walship-"


class UnusableSnapshot(BaseModel):
    """An object at a snapshot key that no restore can start from.

    ``stray``: it carries no walship metadata at all, so walship did not
    write it (reported, never fatal to a restore that does not need it).
    Otherwise walship's own description of it is damaged.
    """

    model_config = ConfigDict(frozen=True)

    key: str
    stray: bool
    reason: str


def describe_snapshot(info: SnapshotInfo) -> dict[str, str]:
    """User metadata stored with a snapshot object (S3 keeps it lowercase).

    A compressed size of 0 or an empty SHA-256 means not known yet, and is
    left out: a streamed snapshot gives its metadata before its first byte
    (S3 takes metadata when an upload starts), so its size is the object's
    own and its SHA-256 is at its end (``walship.trailer``), checked by restore.
    """
    unknown = {"compressed_size"} if info.compressed_size == 0 else set()
    if not info.sha256:
        unknown.add("sha256")
    if not info.sha256_at_end:
        unknown.add("sha256_at_end")  # objects stay as older walships wrote them
    if not info.bridge:
        unknown.add("bridge")
    metadata = to_metadata(info, exclude={"key", "wal_position", *unknown})
    if info.wal_position is not None:
        metadata[f"{_PREFIX}wal-position"] = f"{info.wal_position.generation}/{info.wal_position.sequence}"
    return metadata


def to_metadata(model: BaseModel, exclude: set[str]) -> dict[str, str]:
    """A flat model as ``walship-field-name: value`` user metadata."""
    fields = model.model_dump(mode="json", exclude=exclude)
    return {f"{_PREFIX}{name.replace('_', '-')}": str(value) for name, value in fields.items()}


def from_metadata(metadata: dict[str, str], skip: frozenset[str] = frozenset()) -> dict[str, object]:
    """The inverse of ``to_metadata``: field values, as strings pydantic will parse."""
    return {
        name[len(_PREFIX) :].replace("-", "_"): value
        for name, value in metadata.items()
        if name.startswith(_PREFIX) and name not in skip
    }


def read_snapshot_info(store: ObjectStore, key: str) -> SnapshotInfo:
    """Describe one snapshot object from its own metadata (one HEAD)."""
    try:
        obj = store.head(key)
    except NotFoundError:
        raise NotFoundError(f"snapshot {key} is not in the replica: run 'walship status' to list snapshots") from None
    return _from_object(obj)


def read_indexed_snapshot(store: ObjectStore, indexed: SnapshotInfo) -> SnapshotInfo:
    """The snapshot the index describes as ``indexed``, from its own metadata (one HEAD), which must agree
    with the index; its ``sha256`` is the one to verify against (the index's, for one recorded at its end)."""
    stored = read_snapshot_info(store, indexed.key)
    sha256 = indexed.sha256 if stored.sha256_at_end else stored.sha256
    if sha256 != indexed.sha256 or stored.raw_size != indexed.raw_size:
        own = f"SHA-256 {stored.sha256}" if stored.sha256 else "its SHA-256 at its end"
        raise ChecksumMismatchError.index_disagrees(
            indexed.key, f"{own} of {stored.raw_size} bytes", f"SHA-256 {indexed.sha256} of {indexed.raw_size} bytes"
        )
    return stored.model_copy(update={"sha256": sha256})


def read_trailer_sha256(store: ObjectStore, info: SnapshotInfo) -> str:
    """The SHA-256 ``info``'s object records: in its metadata, or at its end (one ranged read).

    An encrypted object's end is readable only with its identity: "" then,
    and restore checks it there. ``CorruptObjectError`` when the end is not a checksum.
    """
    if not info.sha256_at_end or info.envelope not in ("zstd", ZSTD_FRAMES):
        return info.sha256
    if info.envelope == ZSTD_FRAMES:
        return read_layout(store, info.key, info.compressed_size).sha256
    start = max(0, info.compressed_size - TRAILER_SIZE)
    with store.open(info.key, start=start, length=info.compressed_size - start) as stream:
        return parse_trailer(stream.read(), info.key)


def list_snapshot_keys(store: ObjectStore, listing: Iterable[ObjectInfo] | None = None) -> list[str]:
    """Snapshot keys, oldest generation first (one LIST, or none given a ``listing`` already made)."""
    objects = store.list(GENERATIONS_PREFIX) if listing is None else listing
    keys = [o.key for o in objects if parse_snapshot_key(o.key) is not None]
    return sorted(keys, key=lambda k: parse_snapshot_key(k) or ("", 0))


def list_snapshots(
    store: ObjectStore, known: Sequence[SnapshotInfo] = (), listing: Iterable[ObjectInfo] | None = None
) -> list[SnapshotInfo]:
    """Every snapshot a listing shows, oldest first; strays are left out, damaged descriptions raise.

    Descriptions in ``known`` (the index) spare a HEAD for the keys they
    cover; a key the index lacks is described from its object. A key the
    index has but the listing does not is left out: the listing is the truth.
    ``listing`` reuses a listing the caller already made.
    """
    snapshots, unusable = scan_snapshots(store, known, listing)
    damaged = [u for u in unusable if not u.stray]
    if damaged:
        raise CorruptObjectError(damaged[0].reason)
    return snapshots


def scan_snapshots(
    store: ObjectStore, known: Sequence[SnapshotInfo] = (), listing: Iterable[ObjectInfo] | None = None
) -> tuple[list[SnapshotInfo], list[UnusableSnapshot]]:
    """Like ``list_snapshots``, but every key it cannot use is collected instead of raised."""
    by_key = {s.key: s for s in known}
    snapshots: list[SnapshotInfo] = []
    unusable: list[UnusableSnapshot] = []
    for key in list_snapshot_keys(store, listing):
        if key in by_key:
            snapshots.append(by_key[key])
            continue
        try:
            obj = store.head(key)
        except NotFoundError:
            continue  # deleted since the listing (retention): the newer truth
        described = snapshot_or_unusable(obj)
        if isinstance(described, UnusableSnapshot):
            unusable.append(described)
        else:
            snapshots.append(described)
    # Generation names order by the second; two snapshots within one second
    # order by their recorded time, as the index orders them.
    return sorted(snapshots, key=lambda s: (s.created_at, s.key)), unusable


def has_walship_metadata(obj: ObjectInfo) -> bool:
    """Whether a HEAD shows user metadata walship wrote."""
    return any(name.startswith(_PREFIX) for name in obj.metadata)


def snapshot_or_unusable(obj: ObjectInfo) -> SnapshotInfo | UnusableSnapshot:
    """The snapshot a HEAD describes, or why it cannot be used: not walship's (a stray) or damaged."""
    if not has_walship_metadata(obj):
        return UnusableSnapshot(
            key=obj.key, stray=True, reason=f"{obj.key} has no walship metadata: walship did not write it"
        )
    try:
        return _from_object(obj)
    except CorruptObjectError as exc:
        return UnusableSnapshot(key=obj.key, stray=False, reason=str(exc))


def lost_metadata(stray: UnusableSnapshot) -> UnusableSnapshot:
    """A snapshot walship recorded whose object has no walship metadata now: damage, not a stray."""
    key = stray.key
    return UnusableSnapshot(
        key=key,
        stray=False,
        reason=(
            f"{key} has lost its walship metadata (a file:// replica keeps it in .meta/{key}.json): "
            "the index records it, but a restore trusts only the object's own description"
        ),
    )


def select_snapshot(
    snapshots: list[SnapshotInfo],
    *,
    key: str | None = None,
    before: datetime | None = None,
    generation: str | None = None,
    sequence: int | None = None,
) -> SnapshotInfo:
    """The snapshot a restore starts from.

    By ``key`` exactly; else, for WAL ``sequence``, the newest snapshot of
    ``generation`` (default: the newest generation) at or before it; else the
    newest taken at or before ``before``; else the newest.
    """
    if key is not None:
        for snapshot in snapshots:
            if snapshot.key == key:
                return snapshot
        raise NotFoundError(f"snapshot {key} is not in the replica: run 'walship status' to list snapshots")
    if (sequence is not None or generation is not None) and not snapshots:
        raise NotFoundError(
            "the replica holds no walship snapshot to replay WAL onto: run 'walship status' to see what it holds"
        )
    if sequence is not None or generation is not None:
        generation = generation or snapshots[-1].generation
        candidates = [
            s for s in snapshots if s.generation == generation and (sequence is None or s.sequence <= sequence)
        ]
        if not candidates:
            where = f" at or before sequence {sequence}" if sequence is not None else ""
            raise NotFoundError(
                f"generation {generation} has no snapshot{where}: run 'walship status' to see the generations"
            )
        return max(candidates, key=lambda s: s.sequence)
    candidates = [s for s in snapshots if before is None or s.created_at <= before]
    if not candidates:
        when = f" taken at or before {before.isoformat()}" if before else ""
        raise NotFoundError(f"the replica has no snapshot{when}: run 'walship status' to see what it holds")
    return max(candidates, key=lambda s: (s.created_at, s.key))


def _from_object(obj: ObjectInfo) -> SnapshotInfo:
    parsed = parse_snapshot_key(obj.key)
    if parsed is None:
        raise CorruptObjectError(f"{obj.key} is not a snapshot key")
    fields = from_metadata(obj.metadata, skip=frozenset({f"{_PREFIX}wal-position"}))
    position = obj.metadata.get(f"{_PREFIX}wal-position")
    if position:
        generation, _, sequence = position.rpartition("/")
        fields["wal_position"] = WalPosition(generation=generation, sequence=int(sequence))
    fields.setdefault("compressed_size", obj.size)  # a streamed snapshot's is its object's
    if str(fields.get("sha256_at_end", "")).lower() == "true":
        fields.setdefault("sha256", "")  # at the object's end: restore reads it there
    try:
        info = SnapshotInfo(key=obj.key, **fields)
    except ValidationError as exc:
        raise CorruptObjectError(
            f"snapshot {obj.key} has missing or bad metadata: {exc.error_count()} problem(s)"
        ) from exc
    if format_snapshot_key(info.generation, info.sequence) != obj.key or info.compressed_size != obj.size:
        raise CorruptObjectError(
            f"snapshot {obj.key}: its metadata describes {info.generation}/{info.sequence} "
            f"of {info.compressed_size} bytes, but the object is {obj.size} bytes"
        )
    return info


def require_replica(store: ObjectStore, listing: Iterable[ObjectInfo] | None = None) -> None:
    """Refuse a location with nothing a replica holds: most likely a wrong URL, never something to report on."""
    if not any(is_replica_key(obj.key) for obj in (store.list() if listing is None else listing)):
        if _earlier_versions(store):
            raise NotFoundError(
                f"no replica at {store.location} now, but the bucket keeps earlier versions of one there "
                "(deleted or hidden by delete markers): read it as it was with --versions-at TIME"
            )
        raise NotFoundError(
            f"no replica at {store.location}: check the URL, or ship or snapshot a database to it first"
        )


def _earlier_versions(store: ObjectStore) -> bool:
    """Whether a versioned bucket keeps versions of replica objects at this location (asked only on failure)."""
    versioned = versions_of(store)
    if versioned is None or getattr(store, "read_only", False):
        return False
    try:
        return any(is_replica_key(versions[0].key) for versions in itertools.islice(versioned.versions(), 100))
    except WalshipError:
        return False  # a credential that may not list versions: the plain message stands
