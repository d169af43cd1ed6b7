"""Verify flow: a restore drill whose failure turns the run red and emits an event."""

from pathlib import Path
from typing import Annotated

from prefect import flow
from prefect.runtime import flow_run

from flows._events import emit
from flows._failure import on_crashed, on_failure
from flows._params import BLOCK_NAME, DATABASE_ID, REPLICA, UNSET, optional, plain_refusals, titled
from flows._report import publish, run_name
from flows._subject import database_of
from tasks import check_index, check_lock, restore_drill, with_retry_policy
from walship.models import RetryPolicy
from walship.verify import VerifyReport, run_verify

PASSED_EVENT = "walship.verify.passed"


@plain_refusals
@flow(
    name="verify",
    description="Restore drill: restore into a temporary directory and check every checksum, the chain and integrity.",
    flow_run_name=run_name,
    on_failure=[on_failure],
    on_crashed=[on_crashed],
    log_prints=True,
)
def verify_flow(
    replica: Annotated[str, titled("Replica URL", schema={"pattern": REPLICA})],
    database_id: Annotated[str | None, titled("Expected database id"), optional("string", pattern=DATABASE_ID)] = UNSET,
    older: Annotated[bool, titled("Also an older point")] = False,
    workdir: Annotated[Path | None, titled("Work directory"), optional("string")] = UNSET,
    credentials_block: Annotated[
        str | None, titled("Credentials block"), optional("string", pattern=BLOCK_NAME)
    ] = UNSET,
    age_identity_block: Annotated[
        str | None, titled("age identity Secret block"), optional("string", pattern=BLOCK_NAME)
    ] = UNSET,
    age_identity_file: Annotated[Path | None, titled("age identity file"), optional("string")] = UNSET,
    require_lock_days: Annotated[
        int | None, titled("Required object lock (days)"), optional("integer", minimum=0)
    ] = UNSET,
    retry: Annotated[RetryPolicy, titled("Retries")] = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
) -> VerifyReport:
    """Restore drill of ``replica``, and the index checked against the objects.

    Args:
        replica: The replica to drill: file:///absolute/dir or s3://bucket/prefix[?endpoint=URL].
        database_id: Fail if the replica holds another database than this one; empty: no check.
        older: Also restore a random older point, not only the newest.
        workdir: Directory for the temporary restores; empty: the system's temporary directory.
        credentials_block: Name of a prefect-aws AWS Credentials block; empty: the worker's environment.
        age_identity_block: Name of a Secret block holding the age identity that opens encrypted objects.
        age_identity_file: Path of an age identity file on the worker's host (when no block is named).
        require_lock_days: Fail unless the newest point's objects stay locked this many more days; empty: no check.
        retry: How storage tasks retry transient errors (attempts, backoff, jitter).

    Every checksum, the chain and ``PRAGMA integrity_check`` are verified. A
    failed drill, or storage unreachable after retries (no proof either way),
    emits ``walship.verify.failed`` (the failure hook) and fails the run."""
    subject = database_of(flow_run.get_parameters())
    report = run_verify(
        _TaskSteps(replica, retry, credentials_block, age_identity_block, age_identity_file),
        database_id=database_id,
        older=older,
        workdir=workdir,
        require_lock_days=require_lock_days,
        publish=lambda drilled: _publish(subject, drilled),
    )
    emit(PASSED_EVENT, subject, replica, {"checks": len(report.checks), "points": len(report.points)})
    return report


class _TaskSteps:
    """``VerifySteps`` as task runs with the flow's retry policy."""

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

    def restore_drill(
        self, *, database_id: str | None, older: bool, seed: int | None, workdir: Path | None
    ) -> VerifyReport:
        return with_retry_policy(restore_drill, self.retry)(
            self.replica, database_id, older, workdir, self.block, self.identity_block, self.identity_file, seed
        )

    def check_index(self) -> VerifyReport:
        return with_retry_policy(check_index, self.retry)(self.replica, self.block)

    def check_lock(self, days: int) -> VerifyReport:
        return with_retry_policy(check_lock, self.retry)(self.replica, days, self.block)


def _publish(subject: str, report: VerifyReport) -> None:
    """The run's artifact: every check and restored point, passed or not."""
    publish(
        "verify",
        f"Restore drill of {subject}: {'passed' if report.passed else 'FAILED'}",
        [
            *((check.name, f"{_verdict(check.verdict)}: {_cell(check.detail)}") for check in report.checks),
            *(
                (
                    f"restored ({point.role})",
                    f"`{point.snapshot}` + {point.segments_applied} segments in {point.duration_seconds:.2f} s",
                )
                for point in report.points
            ),
            ("duration", f"{report.duration_seconds:.2f} s"),
        ],
    )


def _cell(text: str) -> str:
    """Markdown table cells end at a pipe."""
    return text.replace("|", "\\|")


def _verdict(verdict: str) -> str:
    return verdict if verdict == "ok" else f"**{verdict}**"
