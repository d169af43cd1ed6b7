"""Snapshot flow: copy, compress and upload the live database in one pass, then record it."""

import time
from pathlib import Path
from typing import Annotated

from prefect import flow
from pydantic import Field

from flows._events import emit
from flows._report import artifact_key, human_bytes, publish, run_name
from tasks import (
    check_replica,
    finish_progress,
    start_progress,
    stream_snapshot,
    update_metadata,
    with_retry_policy,
)
from walship.codec import DEFAULT_LEVEL, MAX_LEVEL, MIN_LEVEL
from walship.models import RetryPolicy, SnapshotInfo


@flow(name="snapshot", flow_run_name=lambda: run_name("snapshot", "database"), log_prints=True)
def snapshot_flow(
    database: Path,
    replica: str,
    level: Annotated[int, Field(ge=MIN_LEVEL, le=MAX_LEVEL)] = DEFAULT_LEVEL,
    database_id: str | None = None,
    workdir: Path | None = None,
    retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
) -> SnapshotInfo:
    """Take a consistent snapshot of ``database`` and upload it to ``replica``.

    ``database_id`` names the database in the replica (default: its file
    name); ``workdir`` is accepted and unused (the snapshot streams: nothing
    is written to local disk).
    """
    started = time.monotonic()
    database_id = database_id or database.name
    check_replica(replica, database_id)
    progress = start_progress(artifact_key("snapshot-progress", database_id), f"Snapshot of {database_id}")
    # A retry takes a fresh snapshot (a new generation): a failed one left nothing behind.
    info = with_retry_policy(stream_snapshot, retry)(replica, database, database_id, level, workdir, progress)
    metadata = with_retry_policy(update_metadata, retry)(replica, info)
    elapsed = time.monotonic() - started
    finish_progress(progress)
    publish(
        "snapshot",
        database_id,
        f"Snapshot of {database_id}",
        [
            ("database", str(database)),
            ("key", f"`{info.key}`"),
            ("size", f"{human_bytes(info.raw_size)} -> {human_bytes(info.compressed_size)}"),
            ("compression ratio", f"{info.raw_size / max(info.compressed_size, 1):.2f} (zstd level {info.level})"),
            ("pages", f"{info.page_count} x {info.page_size} B"),
            ("sha256", f"`{info.sha256}`"),
            ("duration", f"{elapsed:.2f} s ({info.raw_size / 1e6 / max(elapsed, 1e-9):.1f} MB/s)"),
            ("snapshots in replica", str(metadata.snapshot_count)),
        ],
    )
    emit(
        "walship.snapshot.completed",
        database_id,
        replica,
        {
            "key": info.key,
            "generation": info.generation,
            "raw_size": info.raw_size,
            "compressed_size": info.compressed_size,
            "sha256": info.sha256,
            "duration_seconds": round(elapsed, 3),
        },
    )
    return info
