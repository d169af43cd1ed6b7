"""One snapshot and the segments after it, downloaded, verified and placed whole (``walship.placement``)."""

import time
from datetime import UTC, datetime
from pathlib import Path

from walship.catalog import read_indexed_snapshot
from walship.chain import apply_segments
from walship.codec import Progress
from walship.copies import CopyRecord, file_mark, save_copy_record
from walship.envelope import ZSTD_FRAMES, Keyring, open_to_file, require_keys
from walship.errors import CorruptObjectError, UsageError
from walship.frames import Seed, fetch_framed
from walship.models import RestoreResult, SnapshotInfo, WalPosition, utcnow
from walship.placement import check_output, staged_output
from walship.segment import ResyncSegment, WalSegment
from walship.sqlite import read_header
from walship.storage import ObjectStore

__all__ = ["MISSING_MARGIN_SECONDS", "point_in_time", "restore_snapshot"]

# A point-in-time restore warns when the asked time is later than the newest
# point its state is known to hold by more than this: a 1 s sync interval
# plus room for a slow upload (docs/FORMAT.md, "Point in time").
MISSING_MARGIN_SECONDS = 5.0


def restore_snapshot(
    store: ObjectStore,
    snapshot: SnapshotInfo,
    output: Path,
    *,
    force: bool = False,
    expected_database_id: str | None = None,
    segments: bool = True,
    until_sequence: int | None = None,
    until_time: datetime | None = None,
    progress: Progress | None = None,
    keys: Keyring | None = None,
    seed: Seed | None = None,
) -> RestoreResult:
    """Restore ``snapshot`` plus the segments after it to ``output``, verifying everything.

    ``until_sequence`` / ``until_time`` stop at a point in time (a segment
    boundary); ``segments=False`` restores the snapshot alone. ``progress``
    hears the snapshot's bytes as they are decompressed. ``keys`` open
    objects encrypted with age; without them such a replica fails at once.
    ``seed`` reads a file likely holding much of the snapshot (a delta
    restore's copy): a framed snapshot's frames it holds are not fetched.
    """
    started = time.monotonic()
    output = check_output(output, force=force)
    # The object's own metadata is the authority, not the index we were given. A streamed snapshot's own
    # checksum is at its end: the index's, when it has one, must equal it (open_to_file compares them).
    stored = read_indexed_snapshot(store, snapshot)
    if expected_database_id is not None and stored.database_id != expected_database_id:
        raise UsageError(
            f"replica {store.location} holds database {stored.database_id!r}, not {expected_database_id!r}: "
            "check the replica URL"
        )
    require_keys(stored.envelope, keys, stored.key)
    with staged_output(output, force=force) as tmp:
        verified, fetched = _download(store, stored, tmp, keys, progress, seed)
        stored = stored.model_copy(update={"sha256": verified})
        applied: list[WalSegment | ResyncSegment] = []
        stopped_before: WalSegment | ResyncSegment | None = None
        if segments:
            with tmp.open("r+b") as database:
                applied, stopped_before = apply_segments(
                    store,
                    database,
                    stored.generation,
                    stored.sequence,
                    until_sequence=until_sequence,
                    until_time=until_time,
                    scratch=output.parent,
                    keys=keys,
                )
        header = read_header(tmp)
        pages = applied[-1].db_size_pages if applied else stored.page_count
        if (header.page_size, header.page_count) != (stored.page_size, pages):
            raise CorruptObjectError(
                f"verify {applied[-1].key if applied else stored.key}: restored {header.page_count} pages "
                f"of {header.page_size} bytes, recorded {pages} of {stored.page_size}"
            )
    sequence = applied[-1].sequence if applied else stored.sequence
    complete_until = _complete_until(stored, applied, stopped_before, until_time)
    save_copy_record(
        output,
        CopyRecord(
            database_id=stored.database_id,
            generation=stored.generation,
            sequence=sequence,
            page_size=stored.page_size,
            page_count=pages,
            updated_at=utcnow(),
            captured_at=complete_until,
            file=file_mark(output),
        ),
    )
    return RestoreResult(
        output=output,
        snapshot=stored,
        size=output.stat().st_size,
        duration_seconds=time.monotonic() - started,
        position=WalPosition(generation=stored.generation, sequence=sequence),
        segments_applied=len(applied),
        asked_time=until_time,
        complete_until=complete_until,
        next_sequence=stopped_before.sequence if stopped_before else None,
        snapshot_bytes_fetched=fetched,
    )


def _download(
    store: ObjectStore,
    stored: SnapshotInfo,
    tmp: Path,
    keys: Keyring | None,
    progress: Progress | None,
    seed: Seed | None,
) -> tuple[str, int]:
    """The snapshot's database into ``tmp``, verified against ``stored.sha256`` (when known); the SHA-256 it
    was verified against, and the bytes of the object read."""
    with tmp.open("w+b") as out:
        if stored.envelope == ZSTD_FRAMES:
            fetched = fetch_framed(
                store,
                stored.key,
                stored.compressed_size,
                out,
                expected_sha256=stored.sha256,
                expected_size=stored.raw_size,
                progress=progress,
                seed=seed,
            )
            return fetched.sha256, fetched.fetched
        with store.open(stored.key) as stream:
            _, verified = open_to_file(
                stream,
                out,
                envelope=stored.envelope,
                keys=keys,
                expected_sha256=stored.sha256,
                expected_size=stored.raw_size,
                name=stored.key,
                progress=progress,
                trailer=stored.sha256_at_end,
            )
        return verified, stored.compressed_size


def _complete_until(
    snapshot: SnapshotInfo,
    applied: list[WalSegment | ResyncSegment],
    stopped_before: WalSegment | ResyncSegment | None,
    asked: datetime | None,
) -> datetime:
    """The newest time up to which the restored state holds every commit.

    The last applied segment holds every commit before its capture. The
    segment left out holds only commits after its ``committed_after``, so
    nothing was committed between the two; past the asked time we do not look.
    """
    known = applied[-1].captured_at if applied else snapshot.created_at
    if stopped_before is not None and asked is not None:
        known = max(known, min(stopped_before.committed_after, asked))
    return known


def point_in_time(result: RestoreResult) -> tuple[str, str | None]:
    """What a point-in-time restore holds (one line), and a warning line when it may lack commits."""
    if result.asked_time is None or result.complete_until is None:
        return "", None
    asked, complete = _when(result.asked_time), _when(result.complete_until)
    line = f"asked for {asked}; the restored state holds every commit up to {complete}"
    if not result.missing_window(MISSING_MARGIN_SECONDS):
        return line, None
    if result.next_sequence is not None:
        fix = (
            f"restore up to --sequence {result.next_sequence} (or a later --timestamp) "
            f"to include them, with commits up to its capture"
        )
    else:
        fix = f"the replica holds nothing later in generation {result.position.generation}"
    return line, f"warning: the restore may be missing commits made between {complete} and {asked}: {fix}"


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%f}"[:-3] + "Z"
