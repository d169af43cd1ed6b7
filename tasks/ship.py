"""WAL-shipping tasks: upload what the spool holds, record the position, lease."""

from pathlib import Path

from tasks._retry import walship_task
from tasks._storage import open_replica
from walship import index, upload
from walship.models import ReplicaMetadata, WalPosition
from walship.ship import drain_spool, let_lease_go, take_lease

__all__ = ["acquire_lease", "record_position", "release_lease", "upload_spool"]


@walship_task
def acquire_lease(replica: str, spool_dir: Path, holder: str, credentials_block: str | None = None) -> None:
    """Take the replica's lease for this run (``host:/db#run``), or fail if another shipper holds it."""
    take_lease(open_replica(replica, credentials_block), spool_dir, holder)


@walship_task
def upload_spool(
    replica: str, spool_dir: Path, holder: str, credentials_block: str | None = None
) -> upload.UploadResult:
    """Upload the spooled snapshot and segments in order (the run's final drain, with the full retry policy)."""
    return drain_spool(open_replica(replica, credentials_block), spool_dir, holder)


@walship_task
def record_position(replica: str, position: WalPosition, credentials_block: str | None = None) -> ReplicaMetadata:
    """Record the newest shipped segment in metadata.json."""
    return index.record_wal_position(open_replica(replica, credentials_block), position)


@walship_task
def release_lease(replica: str, spool_dir: Path, credentials_block: str | None = None) -> None:
    """Let the lease go at the end of a run so a successor need not wait for it to expire."""
    let_lease_go(open_replica(replica, credentials_block), spool_dir)
