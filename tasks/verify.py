"""Verify tasks: the restore drill, and the index checked against the objects."""

from pathlib import Path

from tasks._keys import load_keys
from tasks._retry import walship_task
from tasks._storage import open_replica
from walship import verify
from walship.verify import VerifyReport

__all__ = ["check_index", "check_lock", "restore_drill"]


@walship_task
def restore_drill(
    replica: str,
    database_id: str | None,
    older: bool,
    workdir: Path | None,
    credentials_block: str | None = None,
    identity_block: str | None = None,
    identity_file: Path | None = None,
    seed: int | None = None,
) -> VerifyReport:
    """Restore the newest point (and a random older one) into a temporary directory, verifying everything;
    encrypted objects open with the identity of ``identity_block`` (a Secret block) or ``identity_file``."""
    return verify.restore_drill(
        open_replica(replica, credentials_block),
        database_id=database_id,
        older=older,
        seed=seed,
        workdir=workdir,
        keys=load_keys(identity_block, identity_file),
    )


@walship_task
def check_index(replica: str, credentials_block: str | None = None) -> VerifyReport:
    """Check that metadata.json agrees with the objects it describes."""
    return verify.check_index(open_replica(replica, credentials_block))


@walship_task
def check_lock(replica: str, days: int, credentials_block: str | None = None) -> VerifyReport:
    """Check that every object of the newest restorable point stays under object lock ``days`` more days."""
    return verify.check_lock(open_replica(replica, credentials_block), days)
