"""What a restore drill found: every check, every restored point."""

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from walship.chain import list_segment_sequences
from walship.errors import TransientStorageError, WalshipError
from walship.models import WalPosition
from walship.storage import ObjectStore

__all__ = ["Drill", "RestoredPoint", "VerifyCheck", "VerifyReport"]


class VerifyCheck(BaseModel):
    """One check of a drill: its name, whether it passed, and what it found."""

    model_config = ConfigDict(frozen=True)

    name: str
    ok: bool
    detail: str
    # Passed, but something deserves a look (objects walship did not write).
    warning: bool = False

    @property
    def verdict(self) -> str:
        return "warn" if self.ok and self.warning else "ok" if self.ok else "FAILED"


class RestoredPoint(BaseModel):
    """A state the drill restored and verified."""

    model_config = ConfigDict(frozen=True)

    role: str  # "newest", "older" or "state" (rebuilt to compare with a later snapshot)
    snapshot: str
    position: WalPosition
    segments_applied: int
    size: int
    duration_seconds: float


class VerifyReport(BaseModel):
    """Every check of a drill and every point it restored."""

    replica: str
    database_id: str | None = None
    checks: list[VerifyCheck] = []
    points: list[RestoredPoint] = []
    duration_seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """True when there was something to check and every check passed."""
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[VerifyCheck]:
        return [check for check in self.checks if not check.ok]

    def merge(self, other: "VerifyReport") -> "VerifyReport":
        """This report followed by ``other``'s checks and points."""
        return VerifyReport(
            replica=self.replica,
            database_id=self.database_id or other.database_id,
            checks=[*self.checks, *other.checks],
            points=[*self.points, *other.points],
            duration_seconds=self.duration_seconds + other.duration_seconds,
        )

    def failure_message(self) -> str:
        """What ``VerificationFailedError`` says: the first failed check, and how many failed."""
        first = self.failed[0] if self.failed else VerifyCheck(name="checks", ok=False, detail="none ran")
        return (
            f"verify {self.replica}: {first.name} failed: {first.detail}\n"
            f"{len(self.failed)} of {len(self.checks)} checks failed; each says what to do"
        )

    def summary(self) -> str:
        if self.passed:
            return f"verify passed: {len(self.checks)} checks ok, {len(self.points)} points restored"
        return f"verify failed: {len(self.failed)} of {len(self.checks)} checks failed"


@dataclass
class Drill:
    """Collects checks; a failing step becomes a failed check, not an exception."""

    store: ObjectStore
    checks: list[VerifyCheck] = field(default_factory=list)
    points: list[RestoredPoint] = field(default_factory=list)
    _sequences: dict[str, list[int]] = field(default_factory=dict)

    def add(self, name: str, ok: bool, detail: str, *, warning: bool = False) -> None:
        self.checks.append(VerifyCheck(name=name, ok=ok, detail=" ".join(detail.split()), warning=warning))

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        try:
            yield
        except TransientStorageError:
            raise  # worth a retry of the whole task, not a verdict on the replica
        except WalshipError as exc:
            self.add(name, False, str(exc))

    def known_sequences(self, generation: str, sequences: list[int]) -> None:
        self._sequences[generation] = sequences

    def sequences(self, generation: str) -> list[int]:
        if generation not in self._sequences:
            self._sequences[generation] = list_segment_sequences(self.store, generation)
        return self._sequences[generation]

    def report(self, started: float, database_id: str | None = None) -> VerifyReport:
        return VerifyReport(
            replica=self.store.location,
            database_id=database_id,
            checks=self.checks,
            points=self.points,
            duration_seconds=time.monotonic() - started,
        )
