"""Verify tasks: the restore drill, and the index checked against the objects."""

from pathlib import Path

from tasks._retry import walship_task
from tasks._storage import open_replica
from walship import verify
from walship.verify import VerifyReport

__all__ = ["check_index", "restore_drill"]


@walship_task
def restore_drill(
    replica: str, database_id: str | None, older: bool, workdir: Path | None, credentials_block: str | None = None
) -> VerifyReport:
    """Restore the newest point (and a random older one) into a temporary directory, verifying everything."""
    return verify.restore_drill(
        open_replica(replica, credentials_block), database_id=database_id, older=older, workdir=workdir
    )


@walship_task
def check_index(replica: str, credentials_block: str | None = None) -> VerifyReport:
    """Check that metadata.json agrees with the objects it describes."""
    return verify.check_index(open_replica(replica, credentials_block))
