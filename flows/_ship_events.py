"""The WAL-ship flow's events: shipped batches, new generations, lag crossings.

A busy database ships a segment every second; an event for each would bury
the event feed and every automation's evaluation, so uploads are summed
into one ``walship.segment.shipped`` event per ``SHIPPED_EVERY`` seconds
(and one at the end of the run). ``walship.lag.exceeded`` fires when the lag
crosses the threshold, not for every second it stays above it.
"""

import time
from datetime import datetime
from typing import Any

from flows._events import emit
from walship.models import utcnow
from walship.ship import SyncResult
from walship.spool import PendingEntry
from walship.upload import UploadResult

__all__ = ["SHIPPED_EVERY", "LagWatch", "ShipEvents", "ShippedBatch"]

# Seconds between two walship.segment.shipped events of one shipper.
SHIPPED_EVERY = 30.0


class ShippedBatch:
    """Uploads summed until the window passes; ``add`` and ``flush`` return an event payload or None."""

    def __init__(self, every: float = SHIPPED_EVERY) -> None:
        self.every = every
        self._payload: dict[str, Any] | None = None
        self._opened_at = 0.0

    def add(self, segments: list[PendingEntry], size: int, lag: float, now: float) -> dict[str, Any] | None:
        """Count one upload of ``segments`` (the spool's segment entries it drained):
        ``size`` compressed bytes, ``lag`` the longest capture-to-storage time among them."""
        if not segments:
            return None
        first, last = segments[0], segments[-1]
        if self._payload is None:
            self._opened_at = now
            self._payload = {
                "count": 0,
                "bytes": 0,
                "first_generation": first.generation,
                "first_sequence": first.sequence,
                "max_lag_seconds": 0.0,
            }
        payload = self._payload
        payload["count"] += len(segments)
        payload["bytes"] += size
        payload["last_generation"], payload["last_sequence"] = last.generation, last.sequence
        payload["max_lag_seconds"] = max(payload["max_lag_seconds"], round(lag, 3))
        return self.flush() if now - self._opened_at >= self.every else None

    def flush(self) -> dict[str, Any] | None:
        payload, self._payload = self._payload, None
        return payload


class LagWatch:
    """Reports the moments the lag rises above ``threshold``: once per crossing."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.above = False

    def observe(self, lag: float) -> bool:
        crossed = lag > self.threshold and not self.above
        self.above = lag > self.threshold
        return crossed


class ShipEvents:
    """Emits one shipper's events about ``database_id``."""

    def __init__(self, database_id: str, replica: str, lag_threshold: float) -> None:
        self.database_id, self.replica = database_id, replica
        self.batch = ShippedBatch()
        self.lag = LagWatch(lag_threshold)
        self._upload_lag = 0.0

    def synced(self, result: SyncResult) -> SyncResult:
        if result.new_generation:
            self._emit("walship.generation.started", {"generation": result.new_generation, "reason": result.reason})
        if result.resync:
            self._emit("walship.generation.resynced", result.resync.model_dump())
        return result

    def uploaded(self, pending: list[PendingEntry], uploaded: UploadResult) -> None:
        """Count an upload of ``pending`` (the spool's entries before it)."""
        segments = [entry for entry in pending if entry.kind == "segment"]
        # The upload's byte count includes the snapshots it carried; the event is about segments.
        snapshot_bytes = sum(entry.snapshot.compressed_size for entry in pending if entry.snapshot is not None)
        lag = uploaded.oldest_captured_at_lag_seconds or 0.0
        payload = self.batch.add(segments, uploaded.bytes - snapshot_bytes, lag, time.monotonic())
        if payload is not None:
            self._emit("walship.segment.shipped", payload)
        self._upload_lag = max(self._upload_lag, uploaded.oldest_captured_at_lag_seconds or 0.0)

    def check_lag(self, pending: list[PendingEntry]) -> None:
        """Once per sync: the larger of this sync's capture-to-storage lag and the age
        of the oldest entry still spooled (storage down or slow) against the threshold."""
        oldest: datetime | None = min((entry.cached_at for entry in pending), default=None)
        backlog = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
        lag, self._upload_lag = max(self._upload_lag, backlog), 0.0
        if self.lag.observe(lag):
            self._emit(
                "walship.lag.exceeded",
                {
                    "lag_seconds": round(lag, 3),
                    "threshold_seconds": self.lag.threshold,
                    "measure": "spool backlog age" if backlog >= lag else "capture-to-storage lag",
                    "spooled_entries": len(pending),
                },
            )

    def replica_behind(self, reason: str) -> None:
        """This replica stopped holding the spool back: it resumes at a snapshot of its own."""
        self._emit("walship.replica.behind", {"reason": reason})

    def replica_caught_up(self, detail: str) -> None:
        self._emit("walship.replica.caught-up", {"detail": detail})

    def completed(self, segments: int, position: str) -> None:
        """The run ended with everything uploaded."""
        self._emit("walship.ship.completed", {"segments_uploaded": segments, "position": position})

    def close(self) -> None:
        payload = self.batch.flush()
        if payload is not None:
            self._emit("walship.segment.shipped", payload)

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        emit(event, self.database_id, self.replica, payload)
