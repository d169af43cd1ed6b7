"""Snapshot flow: copy, compress and upload the live database in one pass, then record it."""

from pathlib import Path
from typing import Annotated
from uuid import UUID

from prefect import flow

from flows._events import emit
from flows._failure import on_crashed, on_failure
from flows._params import BLOCK_NAME, DATABASE_ID, REPLICA, UNSET, optional, plain_refusals, titled
from flows._report import human_bytes, publish, run_name
from tasks import (
    check_replica,
    finish_progress,
    start_progress,
    stream_snapshot,
    update_metadata,
    with_retry_policy,
)
from walship.codec import DEFAULT_LEVEL, MAX_LEVEL, MIN_LEVEL
from walship.models import ReplicaMetadata, RetryPolicy, SnapshotInfo
from walship.snapshot import run_snapshot


@plain_refusals
@flow(
    name="snapshot",
    description="Consistent zstd snapshot of a live SQLite database, uploaded to its replica.",
    flow_run_name=run_name,
    on_failure=[on_failure],
    on_crashed=[on_crashed],
    log_prints=True,
)
def snapshot_flow(
    database: Annotated[Path, titled("Database file")],
    replica: Annotated[str, titled("Replica URL", schema={"pattern": REPLICA})],
    level: Annotated[int, titled("Compression level", ge=MIN_LEVEL, le=MAX_LEVEL)] = DEFAULT_LEVEL,
    database_id: Annotated[str | None, titled("Database id"), optional("string", pattern=DATABASE_ID)] = UNSET,
    workdir: Annotated[Path | None, titled("Work directory"), optional("string")] = UNSET,
    credentials_block: Annotated[
        str | None, titled("Credentials block"), optional("string", pattern=BLOCK_NAME)
    ] = UNSET,
    age_recipients: Annotated[list[str], titled("age recipients")] = [],  # noqa: B006 - never mutated
    retry: Annotated[RetryPolicy, titled("Retries")] = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
) -> SnapshotInfo:
    """Take a consistent snapshot of ``database`` and upload it to ``replica``.

    Args:
        database: Path of the live SQLite database on the worker's host.
        replica: Where the snapshot goes: file:///absolute/dir or s3://bucket/prefix[?endpoint=URL].
        level: zstd compression level, 1 (fastest) to 22 (smallest).
        database_id: Name of the database in the replica; empty: the database's file name.
        workdir: Accepted and unused: the snapshot streams, nothing is written to local disk.
        credentials_block: Name of a prefect-aws AWS Credentials block; empty: the worker's environment.
        age_recipients: age public keys (age1...) to encrypt objects for; empty: not encrypted.
        retry: How storage tasks retry transient errors (attempts, backoff, jitter).
    """
    steps = _TaskSteps(replica, retry, credentials_block)
    report = run_snapshot(
        steps, database, level=level, database_id=database_id, workdir=workdir, recipients=tuple(age_recipients)
    )
    info, elapsed = report.info, report.duration_seconds
    database_id = info.database_id
    publish(
        "snapshot",
        f"Snapshot of {database_id}",
        [
            ("database", str(database)),
            ("key", f"`{info.key}`"),
            ("size", f"{human_bytes(info.raw_size)} -> {human_bytes(info.compressed_size)}"),
            ("compression ratio", f"{info.raw_size / max(info.compressed_size, 1):.2f} (zstd level {info.level})"),
            ("pages", f"{info.page_count} x {info.page_size} B"),
            ("sha256", f"`{info.sha256}`"),
            ("duration", f"{elapsed:.2f} s ({info.raw_size / 1e6 / max(elapsed, 1e-9):.1f} MB/s)"),
            ("snapshots in replica", str(report.metadata.snapshot_count)),
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


class _TaskSteps:
    """``SnapshotSteps`` as task runs with the flow's retry policy; the upload and the record move the run's
    progress artifact."""

    def __init__(self, replica: str, retry: RetryPolicy, credentials_block: str | None) -> None:
        self.replica, self.retry, self.block = replica, retry, credentials_block
        self.progress: UUID | None = None

    def check_replica(self, database_id: str) -> None:
        check_replica(self.replica, database_id, self.block)

    def stream_snapshot(
        self, database: Path, *, database_id: str, level: int, workdir: Path | None, recipients: tuple[str, ...]
    ) -> SnapshotInfo:
        self.progress = start_progress(None, f"Snapshot of {database_id}")
        return with_retry_policy(stream_snapshot, self.retry)(
            self.replica, database, database_id, level, workdir, self.progress, self.block, recipients
        )

    def update_metadata(self, info: SnapshotInfo) -> ReplicaMetadata:
        metadata = with_retry_policy(update_metadata, self.retry)(self.replica, info, self.block)
        if self.progress is not None:
            finish_progress(self.progress)
        return metadata
