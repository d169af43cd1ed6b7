"""The original design's layout: recognise it, describe it, restore its newest snapshot.

The replicator walship grows from (docs/FORMAT.md, "The original layout")
wrote under a prefix ``snapshots/<YYYYmmdd_HHMMSS>.sqlite.zst`` (one zstd
frame of the database file, named by the UTC second its upload began),
``wal/<seq:020>.wal.zst`` and a ``metadata.json`` of six fields. It recorded
no checksum or size of a snapshot anywhere: what can be verified is zstd's
own frame checksum, if the encoder wrote one, then the database itself.

Its WAL objects are not applied. They hold whatever its local cache entry
held, a format it never documented and that records no salts, offsets or
checksums to prove a chain with: applying them could produce a silently
wrong database, which is exactly what walship must never do.
"""

import json
import os
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Literal, cast

import zstandard
from pydantic import BaseModel, ConfigDict, ValidationError

from walship.catalog import require_replica
from walship.codec import PrefixedReader, Readable, decompress_stream
from walship.errors import CorruptObjectError, NotFoundError, UsageError
from walship.layout import METADATA_KEY, parse_original_snapshot_key, parse_original_wal_key
from walship.models import ObjectInfo
from walship.placement import check_output, staged_output
from walship.sqlite import read_header
from walship.storage import ObjectStore

__all__ = [
    "WAL_NOT_APPLIED",
    "OriginalLayout",
    "OriginalMetadata",
    "OriginalRestoreResult",
    "OriginalSnapshot",
    "describe_original",
    "original_snapshots",
    "read_original_metadata",
    "restore_original",
    "select_original",
]

_MAX_METADATA_BYTES = 1 << 20
# A zstd frame header is at most 18 bytes (RFC 8878, section 3.1.1.1).
_FRAME_HEADER_MAX = 18
WAL_NOT_APPLIED = "its WAL objects are not applied (an undocumented format with no chain to verify)"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class OriginalMetadata(_Frozen):
    """The original ``metadata.json`` (its ``ReplicationMetadata``); chrono's nanoseconds parse fine."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    latest_snapshot: str | None = None  # the full key, bucket prefix included
    latest_snapshot_time: datetime | None = None
    latest_wal_sequence: int | None = None
    snapshot_count: int = 0
    db_identifier: str | None = None
    last_modified: datetime | None = None


class OriginalSnapshot(_Frozen):
    key: str
    taken_at: datetime  # from the key: when the upload began, to the second
    size: int  # compressed, as listed


class OriginalLayout(_Frozen):
    """What an original-layout prefix holds, from one listing and one GET of ``metadata.json``."""

    snapshot_count: int
    snapshot_bytes: int
    newest: OriginalSnapshot | None
    oldest: OriginalSnapshot | None
    wal_count: int
    wal_bytes: int
    newest_wal_sequence: int | None
    # "original": metadata.json is the original's; "walship": walship's index
    # replaced it; "missing" or "unreadable" otherwise.
    metadata_state: Literal["original", "walship", "missing", "unreadable"]
    metadata: OriginalMetadata | None

    def render(self) -> list[str]:
        lines = [
            f"original layout: {self.snapshot_count} snapshots ({self.snapshot_bytes} bytes), "
            f"{self.wal_count} WAL objects ({self.wal_bytes} bytes"
            + (f", newest sequence {self.newest_wal_sequence})" if self.newest_wal_sequence is not None else ")"),
        ]
        for label, snapshot in (("newest", self.newest), ("oldest", self.oldest)):
            if snapshot is not None and (label == "newest" or self.snapshot_count > 1):
                lines.append(
                    f"  {label}: {snapshot.taken_at:%Y-%m-%d %H:%M:%S}Z  {snapshot.size:>14} bytes  {snapshot.key}"
                )
        if self.metadata is not None:
            sequence = self.metadata.latest_wal_sequence
            lines.append(
                f"  metadata.json (the original's): db_identifier {self.metadata.db_identifier or '-'}, "
                f"latest_wal_sequence {sequence if sequence is not None else '-'}"
            )
        if self.snapshot_count:
            lines.append("  'walship restore' restores its newest snapshot (or the newest at or before --timestamp);")
            lines.append(f"  {WAL_NOT_APPLIED}.")
        else:
            lines.append("  no snapshot to restore; " + WAL_NOT_APPLIED + ".")
        return lines


class OriginalRestoreResult(_Frozen):
    """What a restore of an original-layout snapshot placed where, and what it could verify."""

    output: Path
    key: str
    taken_at: datetime
    compressed_size: int
    size: int
    sha256: str  # computed while restoring: the original recorded none to compare with
    checksum: str  # what was verified beyond PRAGMA integrity_check, or that nothing was recorded
    integrity: Literal["ok"] = "ok"
    database_id: str | None
    wal_objects_not_applied: int
    duration_seconds: float

    def summary(self) -> str:
        return (
            f"restored {self.output} from the original layout's {self.key} "
            f"(taken {self.taken_at:%Y-%m-%d %H:%M:%S}Z, {self.size} bytes, integrity ok)\n"
            f"checksum: {self.checksum}\n"
            f"{self.wal_objects_not_applied} WAL objects not applied: the database is the snapshot's state"
        )

    def report_rows(self) -> list[tuple[str, str]]:
        return [
            ("layout", "original (snapshots/, wal/, metadata.json)"),
            ("snapshot", f"`{self.key}`"),
            ("taken at", self.taken_at.isoformat()),
            ("size", f"{self.compressed_size} -> {self.size} bytes"),
            ("checksum", self.checksum),
            ("sha256 (computed)", f"`{self.sha256}`"),
            ("integrity_check", self.integrity),
            ("WAL objects not applied", str(self.wal_objects_not_applied)),
            ("duration", f"{self.duration_seconds:.2f} s"),
        ]


def original_snapshots(listing: Sequence[ObjectInfo]) -> list[OriginalSnapshot]:
    """Original-layout snapshots in a listing of the prefix, oldest first."""
    found = [
        OriginalSnapshot(key=o.key, taken_at=taken_at, size=o.size)
        for o in listing
        if (taken_at := parse_original_snapshot_key(o.key)) is not None
    ]
    return sorted(found, key=lambda s: (s.taken_at, s.key))


def read_original_metadata(store: ObjectStore) -> tuple[str, OriginalMetadata | None]:
    """Whose ``metadata.json`` this is (one GET) and, if the original's, its fields."""
    try:
        raw, _ = store.get_bytes(METADATA_KEY, max_size=_MAX_METADATA_BYTES)
    except (NotFoundError, CorruptObjectError):
        return ("missing", None)
    try:
        document = json.loads(raw)
    except ValueError:
        return ("unreadable", None)
    if not isinstance(document, dict):
        return ("unreadable", None)
    # walship's index always carries format_version; the original's never did.
    if "format_version" in document:
        return ("walship", None)
    try:
        return ("original", OriginalMetadata.model_validate(document))
    except ValidationError:
        return ("unreadable", None)


def describe_original(store: ObjectStore, listing: Sequence[ObjectInfo]) -> OriginalLayout | None:
    """The original layout under this prefix, or None when the listing shows none of its objects."""
    snapshots = original_snapshots(listing)
    wal = [(sequence, o.size) for o in listing if (sequence := parse_original_wal_key(o.key)) is not None]
    if not snapshots and not wal:
        return None
    state, metadata = read_original_metadata(store)
    return OriginalLayout(
        snapshot_count=len(snapshots),
        snapshot_bytes=sum(s.size for s in snapshots),
        newest=snapshots[-1] if snapshots else None,
        oldest=snapshots[0] if snapshots else None,
        wal_count=len(wal),
        wal_bytes=sum(size for _, size in wal),
        newest_wal_sequence=max(sequence for sequence, _ in wal) if wal else None,
        metadata_state=cast(Literal["original", "walship", "missing", "unreadable"], state),
        metadata=metadata,
    )


def select_original(
    snapshots: Sequence[OriginalSnapshot], *, key: str | None = None, before: datetime | None = None
) -> OriginalSnapshot:
    """By ``key`` exactly, else the newest taken at or before ``before``, else the newest."""
    if key is not None:
        for snapshot in snapshots:
            if snapshot.key == key:
                return snapshot
        raise NotFoundError(f"snapshot {key} is not in the replica: run 'walship status' to see what it holds")
    candidates = [s for s in snapshots if before is None or s.taken_at <= before]
    if not candidates:
        when = f" taken at or before {before.isoformat()}" if before else ""
        raise NotFoundError(f"the replica has no snapshot{when}: run 'walship status' to see what it holds")
    return candidates[-1]


def restore_original(
    store: ObjectStore,
    output: Path,
    *,
    force: bool = False,
    before: datetime | None = None,
    key: str | None = None,
    expected_database_id: str | None = None,
) -> OriginalRestoreResult:
    """Restore an original-layout snapshot (the newest, or the newest at or before ``before``) to ``output``."""
    started = time.monotonic()
    output = check_output(output, force=force)
    listing = list(store.list())
    require_replica(store, listing)  # nothing at all is a wrong URL, not a replica without snapshots
    chosen = select_original(original_snapshots(listing), key=key, before=before)
    _, metadata = read_original_metadata(store)
    database_id = metadata.db_identifier if metadata is not None else None
    if expected_database_id is not None and database_id != expected_database_id:
        recorded = f"database {database_id!r}" if database_id else "no database identifier"
        raise UsageError(
            f"replica {store.location} (original layout) records {recorded}, not {expected_database_id!r}: "
            "check the replica URL, or drop --database-id"
        )
    with staged_output(output, force=force) as tmp:
        with tmp.open("wb") as out, store.open(chosen.key) as stream:
            size, sha256, checksum = _decompress(stream, out, name=chosen.key)
            out.flush()
            os.fsync(out.fileno())
        _check_size(tmp, size, chosen.key)
    return OriginalRestoreResult(
        output=output,
        key=chosen.key,
        taken_at=chosen.taken_at,
        compressed_size=chosen.size,
        size=size,
        sha256=sha256,
        checksum=checksum,
        database_id=database_id,
        wal_objects_not_applied=sum(1 for o in listing if parse_original_wal_key(o.key) is not None),
        duration_seconds=time.monotonic() - started,
    )


def _decompress(stream: Readable, out: BinaryIO, *, name: str) -> tuple[int, str, str]:
    """Stream-decompress into ``out``; return the size, SHA-256 and what checksum was verified."""
    head = stream.read(_FRAME_HEADER_MAX)
    try:
        frame = zstandard.get_frame_parameters(head)
    except zstandard.ZstdError as exc:
        raise CorruptObjectError(f"decompress {name}: not a zstd frame ({exc})") from exc
    # zstd verifies each frame's content checksum itself, when there is one.
    written, sha256 = decompress_stream(PrefixedReader(head, stream), out, name=name, across_frames=True)
    if frame.content_size not in (zstandard.CONTENTSIZE_UNKNOWN, written):
        raise CorruptObjectError(f"verify {name}: decompressed to {written} bytes, its frame says {frame.content_size}")
    if frame.has_checksum:
        checksum = "zstd frame checksum (XXH64) verified"
    else:
        checksum = "none recorded: the original wrote no checksum; only PRAGMA integrity_check vouches for the content"
    return written, sha256, checksum


def _check_size(path: Path, size: int, name: str) -> None:
    """A truncated or padded file: compare with the header's page count where SQLite trusts it."""
    try:
        header = read_header(path)
    except CorruptObjectError:
        raise CorruptObjectError(f"verify {name}: it does not hold a SQLite database (bad header)") from None
    if header.page_count and header.page_count_valid and header.page_count * header.page_size != size:
        raise CorruptObjectError(
            f"verify {name}: the database header says {header.page_count} pages of {header.page_size} bytes, "
            f"but {size} bytes were restored (truncated or padded)"
        )
