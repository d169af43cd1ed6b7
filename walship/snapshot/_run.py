"""A snapshot run, composed once for both runners: check the replica, stream the snapshot, record it.

The CLI's direct mode and the Prefect flow differ only in how each step runs
(retried on the core, or as a task run): they hand ``run_snapshot`` their
``SnapshotSteps``.
"""

import time
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from walship import index
from walship.models import ReplicaMetadata, RetryPolicy, SnapshotInfo
from walship.snapshot._stream import check_database_id, check_not_shipped, stream_snapshot
from walship.steps import BoundSteps, ShowProgress, no_progress
from walship.storage import ObjectStore

__all__ = ["SnapshotReport", "SnapshotSteps", "StoreSnapshotSteps", "run_snapshot"]


class SnapshotReport(BaseModel):
    """The snapshot a run took, and the replica's index once it was recorded."""

    model_config = ConfigDict(frozen=True)

    info: SnapshotInfo
    metadata: ReplicaMetadata
    duration_seconds: float


class SnapshotSteps(Protocol):
    """The storage steps of a standalone snapshot into one replica; the upload and the record are retried."""

    def check_replica(self, database_id: str) -> None:
        """Refuse a replica of another database, or one that a shipper feeds, before anything is copied."""

    def stream_snapshot(
        self, database: Path, *, database_id: str, level: int, workdir: Path | None, recipients: tuple[str, ...]
    ) -> SnapshotInfo: ...

    def update_metadata(self, info: SnapshotInfo) -> ReplicaMetadata: ...


class StoreSnapshotSteps(BoundSteps):
    """``SnapshotSteps`` on an opened store; ``show_progress`` shows the upload."""

    def __init__(
        self, store: ObjectStore, policy: RetryPolicy | None = None, show_progress: ShowProgress = no_progress
    ) -> None:
        super().__init__(store, policy)
        self.show_progress = show_progress

    def check_replica(self, database_id: str) -> None:
        check_database_id(self.store, database_id)
        check_not_shipped(self.store)

    def stream_snapshot(
        self, database: Path, *, database_id: str, level: int, workdir: Path | None, recipients: tuple[str, ...]
    ) -> SnapshotInfo:
        with self.show_progress(f"snapshot of {database_id}") as progress:
            return self._retried(
                lambda: stream_snapshot(
                    self.store,
                    database,
                    database_id=database_id,
                    level=level,
                    workdir=workdir,
                    progress=progress,
                    recipients=recipients,
                )
            )

    def update_metadata(self, info: SnapshotInfo) -> ReplicaMetadata:
        return self._retried(lambda: index.add_snapshot(self.store, info))


def run_snapshot(
    steps: SnapshotSteps,
    database: Path,
    *,
    level: int,
    database_id: str | None = None,
    workdir: Path | None = None,
    recipients: tuple[str, ...] = (),
) -> SnapshotReport:
    """Snapshot ``database`` (named ``database_id``, else its file name) into the replica of ``steps``.

    A retry of the upload takes a fresh snapshot (a new generation): a failed
    one left nothing behind.
    """
    started = time.monotonic()
    database_id = database_id or database.name
    steps.check_replica(database_id)
    info = steps.stream_snapshot(database, database_id=database_id, level=level, workdir=workdir, recipients=recipients)
    metadata = steps.update_metadata(info)
    return SnapshotReport(info=info, metadata=metadata, duration_seconds=time.monotonic() - started)
