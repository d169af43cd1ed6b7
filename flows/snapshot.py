"""Snapshot flow: copy the live database, compress, upload, record."""

import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

from prefect import flow
from pydantic import Field

from flows._events import emit
from flows._report import artifact_key, human_bytes, publish, run_name
from tasks import (
    check_replica,
    compress,
    finish_progress,
    start_progress,
    take_snapshot,
    update_metadata,
    upload,
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
    name); ``workdir`` holds the temporary copy (default: the system's).
    """
    started = time.monotonic()
    database_id = database_id or database.name
    check_replica(replica, database_id)
    progress = start_progress(artifact_key("snapshot-progress", database_id), f"Snapshot of {database_id}")
    scratch = Path(tempfile.mkdtemp(prefix="walship-snapshot-", dir=workdir))
    try:
        source = take_snapshot(database, scratch / "snapshot.db")
        compressed = compress(source.path, scratch / "snapshot.db.zst", level, progress)
        info = with_retry_policy(upload, retry)(replica, source, compressed, database_id)
        metadata = with_retry_policy(update_metadata, retry)(replica, info)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
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
