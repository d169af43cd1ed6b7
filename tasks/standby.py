"""Kept-copy tasks: bring a copy to a point of its replica, downloading only what changed (``restore --delta``)."""

from datetime import datetime
from pathlib import Path

from prefect.runtime import flow_run

from tasks._keys import load_keys
from tasks._retry import walship_task
from tasks._storage import open_replica
from walship.standby import CaughtUp, FollowerIdentity, catch_up_alone

__all__ = ["catch_up_copy"]


@walship_task
def catch_up_copy(
    replica: str,
    output: Path,
    timestamp: datetime | None = None,
    sequence: int | None = None,
    generation: str | None = None,
    credentials_block: str | None = None,
    identity_block: str | None = None,
    identity_file: Path | None = None,
) -> CaughtUp:
    """Apply the segments after the copy's point (or the pages that differ) up to the point asked, holding the
    copy's lock (refused while a follower keeps it); a retry continues from what the copy then holds."""
    return catch_up_alone(
        open_replica(replica, credentials_block),
        output,
        FollowerIdentity.this_process(str(flow_run.get_id() or "catch-up"), replica),
        timestamp=timestamp,
        sequence=sequence,
        generation=generation,
        keys=load_keys(identity_block, identity_file),
    )
