"""A verify run, composed once for both runners: the drill, the index, then the verdict.

The CLI's direct mode and the Prefect flow differ only in how each step
runs (retried on the core, or as a task run): they hand ``run_verify`` their
``VerifySteps``, so neither can forget a check or return a failed drill as
a success.
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from walship.envelope import Keyring
from walship.errors import VerificationFailedError
from walship.locks import require_lock
from walship.models import RetryPolicy, utcnow
from walship.steps import BoundSteps
from walship.storage import ObjectStore
from walship.verify._drill import restore_drill
from walship.verify._index import check_index
from walship.verify._report import VerifyCheck, VerifyReport

__all__ = ["StoreSteps", "VerifySteps", "check_lock", "run_verify", "verify_replica"]


class VerifySteps(Protocol):
    """The two parts of a verify run on one replica, each retried on transient storage errors."""

    def restore_drill(
        self, *, database_id: str | None, older: bool, seed: int | None, workdir: Path | None
    ) -> VerifyReport: ...

    def check_index(self) -> VerifyReport: ...

    def check_lock(self, days: int) -> VerifyReport: ...


class StoreSteps(BoundSteps):
    """``VerifySteps`` on an opened store; with a ``policy``, each step is retried by it."""

    def __init__(self, store: ObjectStore, keys: Keyring | None = None, policy: RetryPolicy | None = None) -> None:
        super().__init__(store, policy)
        self.keys = keys

    def restore_drill(
        self, *, database_id: str | None, older: bool, seed: int | None, workdir: Path | None
    ) -> VerifyReport:
        return self._retried(
            lambda: restore_drill(
                self.store, database_id=database_id, older=older, seed=seed, workdir=workdir, keys=self.keys
            )
        )

    def check_index(self) -> VerifyReport:
        return self._retried(lambda: check_index(self.store))

    def check_lock(self, days: int) -> VerifyReport:
        return self._retried(lambda: check_lock(self.store, days))


def check_lock(store: ObjectStore, days: int) -> VerifyReport:
    """Whether every object of the newest restorable point stays under object lock ``days`` more days."""
    started = time.monotonic()
    ok, detail = require_lock(store, days, utcnow())
    return VerifyReport(
        replica=store.location,
        checks=[VerifyCheck(name="object lock", ok=ok, detail=detail)],
        duration_seconds=time.monotonic() - started,
    )


def run_verify(
    steps: VerifySteps,
    *,
    database_id: str | None = None,
    older: bool = False,
    seed: int | None = None,
    workdir: Path | None = None,
    require_lock_days: int | None = None,
    publish: Callable[[VerifyReport], None] | None = None,
) -> VerifyReport:
    """The restore drill, then the index against the objects, then (``require_lock_days``) the newest point's
    object lock; a failed check raises.

    ``publish`` sees the whole report before the verdict, passed or not.
    Raises ``VerificationFailedError`` (holding the report) when any check
    failed; ``NotFoundError`` when the location holds no replica at all.
    """
    drill = steps.restore_drill(database_id=database_id, older=older, seed=seed, workdir=workdir)
    report = drill.merge(steps.check_index())
    if require_lock_days is not None:
        report = report.merge(steps.check_lock(require_lock_days))
    if publish is not None:
        publish(report)
    if not report.passed:
        raise VerificationFailedError(report)
    return report


def verify_replica(
    store: ObjectStore,
    *,
    database_id: str | None = None,
    older: bool = False,
    seed: int | None = None,
    workdir: Path | None = None,
    keys: Keyring | None = None,
) -> VerifyReport:
    """The whole run on ``store``, its report returned whatever the verdict (for callers that read the checks)."""
    try:
        return run_verify(StoreSteps(store, keys), database_id=database_id, older=older, seed=seed, workdir=workdir)
    except VerificationFailedError as failed:
        report: VerifyReport = failed.report
        return report
