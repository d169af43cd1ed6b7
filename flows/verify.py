"""Verify flow: a restore drill whose failure turns the run red and emits an event."""

from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from flows._events import emit
from flows._report import publish
from tasks import check_index, restore_drill, with_retry_policy
from walship.errors import UsageError, WalshipError
from walship.models import RetryPolicy
from walship.storage import parse_replica_url
from walship.verify import VerificationFailedError, VerifyReport

FAILED_EVENT = "walship.verify.failed"
PASSED_EVENT = "walship.verify.passed"


def _subject(replica: str, database_id: str | None) -> str:
    """The database's name, else the replica's last path segment."""
    if database_id:
        return database_id
    url = parse_replica_url(replica)
    if url.path is not None:
        return url.path.name
    return url.prefix.rstrip("/").rsplit("/", 1)[-1] or str(url.bucket)


def _run_name() -> str:
    parameters = flow_run.parameters
    subject = _subject(str(parameters.get("replica", "")), parameters.get("database_id"))
    return f"verify-{subject}-{datetime.now(UTC):%Y%m%dT%H%M}"


@flow(name="verify", flow_run_name=_run_name, log_prints=True)
def verify_flow(
    replica: str,
    database_id: str | None = None,
    older: bool = False,
    workdir: Path | None = None,
    retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
) -> VerifyReport:
    """Restore drill of ``replica``: restore the newest point (and with ``older`` a random
    older one) into a temporary directory under ``workdir``, verify every checksum, the
    chain and ``PRAGMA integrity_check``, and check the index against the objects.
    A failed drill emits ``walship.verify.failed`` and fails the run."""
    subject = _subject(replica, database_id)
    try:
        drill = with_retry_policy(restore_drill, retry)(replica, database_id, older, workdir)
        report = drill.merge(with_retry_policy(check_index, retry)(replica))
    except UsageError:
        raise
    except WalshipError as exc:
        # Storage unreachable after retries: no verdict on the data, but no proof
        # either, so automations hear of it as a failed drill too.
        emit(FAILED_EVENT, database_id or subject, replica, {"failed": [{"name": "storage", "detail": str(exc)}]})
        raise
    subject = report.database_id or subject
    publish(
        "verify",
        subject,
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
    if not report.passed:
        failed = [{"name": check.name, "detail": check.detail} for check in report.failed]
        emit(FAILED_EVENT, subject, replica, {"failed": failed, "checks": len(report.checks)})
        raise VerificationFailedError(report)
    emit(PASSED_EVENT, subject, replica, {"checks": len(report.checks), "points": len(report.points)})
    return report


def _cell(text: str) -> str:
    """Markdown table cells end at a pipe."""
    return text.replace("|", "\\|")


def _verdict(verdict: str) -> str:
    return verdict if verdict == "ok" else f"**{verdict}**"
