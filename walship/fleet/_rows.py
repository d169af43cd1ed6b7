"""What a fleet's run reports: a row per database (its state, replicas, position, lag, last error), and its failure."""

from enum import StrEnum

from pydantic import BaseModel, Field

__all__ = ["FleetReport", "FleetRow", "RowState"]


class RowState(StrEnum):
    SHIPPING = "shipping"  # in the window now
    DONE = "done"  # shipped to the end of the window, spool drained, lease let go
    FAILED = "failed"  # stopped early or could not start; last_error says why
    SKIPPED = "skipped"  # matched a pattern but is not a SQLite database: nothing to back up
    REMOVED = "removed"  # deleted during the window: shipped what it had, then let go
    PARKED = "parked"  # idle in the window now: shipped to its last change, then closed until the next
    IDLE = "idle"  # unchanged since a run shipped all of it: not opened in this window


class FleetRow(BaseModel):
    """One database of the fleet."""

    database: str
    replica: str  # its first replica (events name it)
    more_replicas: list[str] = Field(default_factory=list)  # the others, one per further template
    # With several replicas, those its run could not finish at its end (down, or behind): the failure names them.
    failed_replicas: list[str] = Field(default_factory=list)
    state: RowState = RowState.SHIPPING
    position: str | None = None
    max_lag_seconds: float = 0.0
    segments_uploaded: int = 0
    syncs: int = 0
    generations: list[str] = Field(default_factory=list)
    pending: int = 0
    upload_failures: int = 0
    last_error: str | None = None

    @property
    def replicas(self) -> list[str]:
        return [self.replica, *self.more_replicas]


class FleetReport(BaseModel):
    """The window's rows and what they add up to."""

    rows: list[FleetRow]
    seconds: float = 0.0

    @property
    def failed(self) -> list[FleetRow]:
        return [r for r in self.rows if r.state == RowState.FAILED]

    def failure_message(self) -> str:
        """What ``FleetFailedError`` says: how many failed, and the first few by name."""
        failed = self.failed
        names = ", ".join(_failed_name(row) for row in failed[:5]) + (", ..." if len(failed) > 5 else "")
        return f"{len(failed)} of {len(self.rows)} databases failed ({names}): each one's row says why"

    def summary(self) -> str:
        counts = {state: sum(r.state == state for r in self.rows) for state in RowState}
        shown = ", ".join(f"{n} {state.value}" for state, n in counts.items() if n)
        segments = sum(r.segments_uploaded for r in self.rows)
        return f"{len(self.rows)} databases in {self.seconds:.0f} s: {shown}; {segments} segments uploaded"

    def table(self) -> list[tuple[str, str, str, str, str, list[str]]]:
        """(database, state, position, max lag, last error, replicas) per row, for a terminal or an artifact;
        replicas only for a database with several (one template: where it goes is the template's)."""
        return [
            (
                r.database,
                r.state.value,
                r.position or "-",
                f"{r.max_lag_seconds:.2f} s",
                " ".join((r.last_error or "").split()),
                r.replicas if r.more_replicas else [],
            )
            for r in self.rows
        ]


def _failed_name(row: FleetRow) -> str:
    return f"{row.database} to {', '.join(row.failed_replicas)}" if row.failed_replicas else row.database
