"""Restore flow: pick a snapshot, download, verify, place atomically; or bring a kept copy up to date (``delta``)."""

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from prefect import flow

from flows._failure import on_crashed, on_failure
from flows._params import (
    BLOCK_NAME,
    DATABASE_ID,
    GENERATION,
    REPLICA,
    SNAPSHOT_KEY,
    TIMESTAMP,
    UNSET,
    optional,
    plain_refusals,
    real_time,
    titled,
)
from flows._report import human_bytes, publish, run_name
from tasks import (
    catch_up_copy,
    describe_generations,
    finish_progress,
    read_snapshot,
    restore_original,
    restore_snapshot,
    start_progress,
    with_retry_policy,
)
from walship.errors import UsageError
from walship.generations import ReplicaGenerations
from walship.models import RestoreResult, RestoreTarget, RetryPolicy, SnapshotInfo
from walship.original import OriginalRestoreResult
from walship.restore import point_in_time, run_restore
from walship.standby import CaughtUp


@plain_refusals
@flow(
    name="restore",
    description="Restore a replica to a new file: the newest data, a point in time, or a WAL sequence.",
    flow_run_name=run_name,
    on_failure=[on_failure],
    on_crashed=[on_crashed],
    log_prints=True,
)
def restore_flow(
    replica: Annotated[str, titled("Replica URL", schema={"pattern": REPLICA})],
    output: Annotated[Path, titled("Output file")],
    timestamp: Annotated[
        datetime | None, titled("Restore to time"), optional("string", pattern=TIMESTAMP), real_time("timestamp")
    ] = UNSET,
    snapshot_key: Annotated[str | None, titled("Snapshot key"), optional("string", pattern=SNAPSHOT_KEY)] = UNSET,
    sequence: Annotated[int | None, titled("WAL sequence"), optional("integer", minimum=0)] = UNSET,
    generation: Annotated[str | None, titled("Generation"), optional("string", pattern=GENERATION)] = UNSET,
    force: Annotated[bool, titled("Replace an existing file")] = False,
    delta: Annotated[bool, titled("Update the copy at the output")] = False,
    database_id: Annotated[str | None, titled("Expected database id"), optional("string", pattern=DATABASE_ID)] = UNSET,
    credentials_block: Annotated[
        str | None, titled("Credentials block"), optional("string", pattern=BLOCK_NAME)
    ] = UNSET,
    age_identity_block: Annotated[
        str | None, titled("age identity Secret block"), optional("string", pattern=BLOCK_NAME)
    ] = UNSET,
    age_identity_file: Annotated[Path | None, titled("age identity file"), optional("string")] = UNSET,
    retry: Annotated[RetryPolicy, titled("Retries")] = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
) -> RestoreResult | OriginalRestoreResult | CaughtUp:
    """Restore ``replica`` to ``output``.

    Args:
        replica: The replica to restore from: file:///absolute/dir or s3://bucket/prefix[?endpoint=URL].
        output: Path of the new database file on the worker's host.
        timestamp: Restore the state at this time (ISO 8601, e.g. 2026-11-29T14:16:00Z); empty: the newest data.
        snapshot_key: Restore this one snapshot alone, no WAL (its key, as 'walship status' lists it).
        sequence: Restore up to this WAL sequence of the generation (0 or more).
        generation: The generation of the sequence; empty: the one with the newest data.
        force: Replace the output file if it exists.
        delta: The output is a copy walship restored or keeps: download and apply only what changed since.
        database_id: Refuse a replica of another database than this one; empty: no check.
        credentials_block: Name of a prefect-aws AWS Credentials block; empty: the worker's environment.
        age_identity_block: Name of a Secret block holding the age identity that opens encrypted objects.
        age_identity_file: Path of an age identity file on the worker's host (when no block is named).
        retry: How storage tasks retry transient errors (attempts, backoff, jitter).

    With nothing chosen it restores the newest data, failing (with the ways to
    an older point) when that cannot be restored. With ``delta``, an output
    that is no walship copy of this replica is refused, and one changed
    locally is rebuilt from the pages that differ (the table says which)."""
    if delta and output.exists():
        return _catch_up(
            replica,
            output,
            timestamp,
            snapshot_key,
            sequence,
            generation,
            force,
            retry,
            credentials_block,
            age_identity_block,
            age_identity_file,
        )
    steps = _TaskSteps(replica, retry, credentials_block, age_identity_block, age_identity_file)
    result = run_restore(
        steps,
        output,
        timestamp=timestamp,
        snapshot_key=snapshot_key,
        sequence=sequence,
        generation=generation,
        force=force,
        database_id=database_id,
    )
    if isinstance(result, OriginalRestoreResult):
        publish("restore", f"Restore of the original layout's snapshot to {output}", result.report_rows())
        return result
    chosen = result.snapshot
    publish(
        "restore",
        f"Restore of {chosen.database_id} to {output}",
        [
            ("snapshot", f"`{chosen.key}`"),
            ("position", str(result.position)),
            ("segments applied", str(result.segments_applied)),
            *_point_in_time_rows(result),
            ("taken at", chosen.created_at.isoformat()),
            ("size", f"{human_bytes(chosen.compressed_size)} -> {human_bytes(result.size)}"),
            ("sha256", f"`{chosen.sha256}` (verified)"),
            ("integrity_check", result.integrity),
            ("duration", f"{result.duration_seconds:.2f} s"),
        ],
    )
    return result


def _catch_up(
    replica: str,
    output: Path,
    timestamp: datetime | None,
    snapshot_key: str | None,
    sequence: int | None,
    generation: str | None,
    force: bool,
    retry: RetryPolicy,
    *blocks: Any,
) -> CaughtUp:
    if snapshot_key is not None or force:
        raise UsageError("delta brings a copy to a point in time: give no snapshot key, and leave force off")
    result = with_retry_policy(catch_up_copy, retry)(replica, output, timestamp, sequence, generation, *blocks)
    how = (
        f"{result.segments_applied} segments applied"
        if result.pages_rewritten is None
        else f"rebuilt, {result.pages_rewritten} pages rewritten: {result.rebuilt_because}"
    )
    publish(
        "restore",
        f"Catch-up of {output}",
        [
            ("position", result.record.position),
            ("how", how.replace("|", "/")),
            (
                "downloaded",
                f"{human_bytes(result.downloaded)}"
                + (
                    f" (a full restore: {human_bytes(result.full_restore_bytes)})"
                    if result.full_restore_bytes is not None
                    else ""
                ),
            ),
            (
                "lag (from the capture of its newest commit)",
                "-" if result.lag_seconds is None else f"{result.lag_seconds:.2f} s",
            ),
            ("integrity_check", "ok"),
        ],
    )
    return result


class _TaskSteps:
    """``RestoreSteps`` as task runs with the flow's retry policy; the download moves the run's progress artifact."""

    def __init__(
        self,
        replica: str,
        retry: RetryPolicy,
        credentials_block: str | None,
        identity_block: str | None,
        identity_file: Path | None,
    ) -> None:
        self.replica, self.retry, self.block = replica, retry, credentials_block
        self.identity_block, self.identity_file = identity_block, identity_file

    def read_snapshot(self, key: str) -> SnapshotInfo:
        return with_retry_policy(read_snapshot, self.retry)(self.replica, key, self.block)

    def describe_generations(self) -> ReplicaGenerations:
        return with_retry_policy(describe_generations, self.retry)(self.replica, self.block)

    def restore_original(
        self, output: Path, *, force: bool, before: datetime | None, key: str | None, database_id: str | None
    ) -> OriginalRestoreResult:
        return with_retry_policy(restore_original, self.retry)(
            self.replica, output, force, before, key, database_id, self.block
        )

    def restore_snapshot(
        self, snapshot: SnapshotInfo, output: Path, *, force: bool, target: RestoreTarget
    ) -> RestoreResult:
        progress = start_progress(None, f"Restore of {snapshot.database_id}")
        result = with_retry_policy(restore_snapshot, self.retry)(
            self.replica,
            snapshot,
            output,
            force,
            target,
            progress,
            self.block,
            self.identity_block,
            self.identity_file,
        )
        finish_progress(progress)
        return result


def _point_in_time_rows(result: RestoreResult) -> list[tuple[str, str]]:
    line, warning = point_in_time(result)
    if not line:
        return []
    rows = [
        ("asked time", str(result.asked_time)),
        ("holds every commit up to", str(result.complete_until)),
    ]
    return [*rows, ("**warning**", warning)] if warning else rows
