"""What a replica holds, for ``walship status``: from the index, checked against a listing."""

import logging
from datetime import datetime

from pydantic import BaseModel

from walship.catalog import list_snapshots
from walship.chain import list_segment_sequences
from walship.errors import CorruptObjectError
from walship.index import read_index
from walship.models import SnapshotInfo
from walship.storage import ObjectStore

__all__ = ["ReplicaStatus", "replica_status"]

log = logging.getLogger(__name__)


class ReplicaStatus(BaseModel):
    """A replica at a glance."""

    replica: str
    database_id: str | None
    index: str  # "ok", "missing", "stale" or "corrupt": whether metadata.json agreed with the listing
    current_generation: str | None
    snapshot_count: int
    snapshot_bytes: int
    newest: SnapshotInfo | None
    oldest: SnapshotInfo | None
    snapshots: list[SnapshotInfo]
    segments_in_generation: int
    newest_segment_sequence: int | None
    last_modified: datetime | None

    def render(self) -> str:
        lines = [
            f"replica:      {self.replica}",
            f"database id:  {self.database_id or '-'}",
            f"index:        {self.index}",
            f"generation:   {self.current_generation or '-'}",
            f"segments:     {self.segments_in_generation} in the current generation, "
            f"newest sequence {self.newest_segment_sequence if self.newest_segment_sequence is not None else '-'}",
            f"snapshots:    {self.snapshot_count} ({self.snapshot_bytes} bytes stored)",
        ]
        for snapshot in self.snapshots:
            lines.append(
                f"  {snapshot.created_at:%Y-%m-%d %H:%M:%S}Z  {snapshot.raw_size:>14} -> "
                f"{snapshot.compressed_size:>14} bytes  {snapshot.key}"
            )
        if not self.snapshots:
            lines.append("  (none: run 'walship snapshot DB --replica URL')")
        return "\n".join(lines)


def replica_status(store: ObjectStore) -> ReplicaStatus:
    """Read the index; describe snapshots from the objects where the index is missing or stale."""
    try:
        metadata, _ = read_index(store)
        state = "ok" if metadata is not None else "missing"
    except CorruptObjectError as exc:
        log.warning("%s", exc)
        metadata, state = None, "corrupt"
    snapshots = list_snapshots(store, known=metadata.snapshots if metadata else ())
    if metadata is not None and {s.key for s in metadata.snapshots} != {s.key for s in snapshots}:
        state = "stale"
    sequences = list_segment_sequences(store, snapshots[-1].generation) if snapshots else []
    return ReplicaStatus(
        replica=store.location,
        database_id=(metadata.database_id if metadata else None) or (snapshots[-1].database_id if snapshots else None),
        index=state,
        current_generation=snapshots[-1].generation if snapshots else None,
        snapshot_count=len(snapshots),
        snapshot_bytes=sum(s.compressed_size for s in snapshots),
        newest=snapshots[-1] if snapshots else None,
        oldest=snapshots[0] if snapshots else None,
        snapshots=snapshots,
        segments_in_generation=len(sequences),
        newest_segment_sequence=sequences[-1] if sequences else None,
        last_modified=metadata.last_modified if metadata else None,
    )
