"""A restore run, composed once for both runners: find where to start, then restore from there.

The CLI's direct mode and the Prefect flow differ only in how each step runs
(retried on the core, or as a task run): they hand ``run_restore`` their
``RestoreSteps``, so both choose the same snapshot and stop at the same point.
"""

from datetime import datetime
from pathlib import Path
from typing import Protocol

from walship.catalog import read_snapshot_info
from walship.envelope import Keyring
from walship.errors import UsageError
from walship.generations import ReplicaGenerations, choose_start, describe_replica
from walship.layout import parse_snapshot_key
from walship.models import RestoreResult, RestoreTarget, RetryPolicy, SnapshotInfo
from walship.original import OriginalRestoreResult, restore_original
from walship.restore._apply import restore_snapshot
from walship.steps import BoundSteps, ShowProgress, no_progress
from walship.storage import ObjectStore

__all__ = ["RestoreSteps", "StoreRestoreSteps", "run_restore"]


class RestoreSteps(Protocol):
    """The storage steps of a restore from one replica, each retried on transient storage errors."""

    def read_snapshot(self, key: str) -> SnapshotInfo: ...

    def describe_generations(self) -> ReplicaGenerations: ...

    def restore_original(
        self, output: Path, *, force: bool, before: datetime | None, key: str | None, database_id: str | None
    ) -> OriginalRestoreResult: ...

    def restore_snapshot(
        self, snapshot: SnapshotInfo, output: Path, *, force: bool, target: RestoreTarget
    ) -> RestoreResult: ...


class StoreRestoreSteps(BoundSteps):
    """``RestoreSteps`` on an opened store; ``keys`` open encrypted objects, ``show_progress`` shows the download."""

    def __init__(
        self,
        store: ObjectStore,
        keys: Keyring | None = None,
        policy: RetryPolicy | None = None,
        show_progress: ShowProgress = no_progress,
    ) -> None:
        super().__init__(store, policy)
        self.keys, self.show_progress = keys, show_progress

    def read_snapshot(self, key: str) -> SnapshotInfo:
        return self._retried(lambda: read_snapshot_info(self.store, key))

    def describe_generations(self) -> ReplicaGenerations:
        return self._retried(lambda: describe_replica(self.store))

    def restore_original(
        self, output: Path, *, force: bool, before: datetime | None, key: str | None, database_id: str | None
    ) -> OriginalRestoreResult:
        return self._retried(
            lambda: restore_original(
                self.store, output, force=force, before=before, key=key, expected_database_id=database_id
            )
        )

    def restore_snapshot(
        self, snapshot: SnapshotInfo, output: Path, *, force: bool, target: RestoreTarget
    ) -> RestoreResult:
        with self.show_progress(f"restore of {snapshot.database_id}") as progress:
            return self._retried(
                lambda: restore_snapshot(
                    self.store,
                    snapshot,
                    output,
                    force=force,
                    expected_database_id=target.database_id,
                    segments=target.segments,
                    until_sequence=target.until_sequence,
                    until_time=target.until_time,
                    progress=progress,
                    keys=self.keys,
                )
            )


def run_restore(
    steps: RestoreSteps,
    output: Path,
    *,
    timestamp: datetime | None = None,
    snapshot_key: str | None = None,
    sequence: int | None = None,
    generation: str | None = None,
    force: bool = False,
    database_id: str | None = None,
) -> RestoreResult | OriginalRestoreResult:
    """Restore the replica of ``steps`` to ``output``: the newest data, a point in time, a sequence or one snapshot.

    With nothing chosen it restores the newest data, failing (with the ways
    to an older point) when that cannot be restored. A prefix without
    walship's layout may hold the original design's, whose newest snapshot
    (at or before ``timestamp``) is restored instead.
    """
    if sequence is not None and sequence < 0:
        raise UsageError(f"--sequence {sequence}: a WAL sequence is 0 or more ('walship status' shows them)")
    until_sequence = sequence
    if snapshot_key is not None and parse_snapshot_key(snapshot_key) is not None:
        # Described from its own object: nothing else the prefix holds can stand in the way.
        chosen = steps.read_snapshot(snapshot_key)
    else:
        generations = steps.describe_generations()
        if not generations.generations and sequence is None and generation is None:
            # No walship data: the prefix may hold the original design's layout (docs/FORMAT.md).
            return steps.restore_original(
                output, force=force, before=timestamp, key=snapshot_key, database_id=database_id
            )
        chosen, until_sequence = choose_start(
            generations, snapshot_key=snapshot_key, before=timestamp, generation=generation, sequence=sequence
        )
    target = RestoreTarget(
        segments=snapshot_key is None, until_time=timestamp, until_sequence=until_sequence, database_id=database_id
    )
    return steps.restore_snapshot(chosen, output, force=force, target=target)
