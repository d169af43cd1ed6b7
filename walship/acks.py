"""Which spooled entries each replica still needs, when one spool serves several replicas.

With one replica an entry leaves the spool the moment storage confirms it:
its upload is its acknowledgement. With several, every replica has its own
uploader, each storing entries in spool order, so one mark per replica says
what it holds (``replicas/<id>/stored.json``); an entry leaves the spool when
every replica that needs it has stored it.

A replica that cannot keep up (down past what the spool may hold) is marked
*behind*: entries are no longer held for it, so the others go on. The last
entry it misses is remembered; when it answers again it resumes at a
snapshot spooled after that entry (``resume``), taken for it alone if none
is. Its generation then has a gap before that snapshot, which a restore of
the newest data never crosses.

Marks are written after storage confirmed an entry; a mark lost in a crash
only makes the entries after it go up again, with the same content.
"""

import threading
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ValidationError

from walship.models import WalPosition, utcnow
from walship.spool import EntryOrder, PendingEntry, Spool

__all__ = ["ReplicaAcks", "ReplicaMark"]

_MARK = "stored.json"


class ReplicaMark(BaseModel):
    """How far one replica of a spool has stored, and whether it is behind."""

    replica: str  # its location, for people reading the spool
    stored: EntryOrder | None = None  # entries up to here are not needed
    behind_since: datetime | None = None
    behind_reason: str = ""
    # The newest entry removed from the spool that this replica had not stored: it resumes after it.
    missed: EntryOrder | None = None
    # The snapshot taken for it to resume at, until it stores it: nothing after it goes up before it.
    bridge: EntryOrder | None = None


class ReplicaAcks:
    """The acknowledgements of the replicas a spool serves; safe to share between uploader threads.

    ``replicas`` are the serving run's locations; None reads them from the
    spool (a final drain's step, which runs apart from the run's threads).
    """

    def __init__(self, spool: Spool, replicas: Sequence[str] | None = None) -> None:
        self.spool = spool
        self._lock = threading.Lock()
        if replicas is not None:
            spool.save_served(list(replicas))
        self.replicas = list(replicas) if replicas is not None else spool.load_served()
        self._marks = {replica: self._load(replica) for replica in self.replicas}
        if replicas is not None:
            with self._lock:
                self._sweep()

    def reload(self) -> None:
        """Read the marks again: a drain run apart (the run's final steps) stored entries through its own."""
        with self._lock:
            self._marks = {replica: self._load(replica) for replica in self.replicas}

    @property
    def several(self) -> bool:
        return len(self.replicas) > 1

    def wants(self, replica: str, entry: PendingEntry) -> bool:
        """Whether ``replica`` still needs ``entry`` (a replica the spool does not serve: every entry)."""
        mark = self._marks.get(replica)
        if mark is None:
            return True
        if mark.behind_since is not None or (entry.only_for and replica not in entry.only_for):
            return False
        return mark.stored is None or entry.order > mark.stored

    def stored(self, replica: str, entry: PendingEntry) -> None:
        """Storage confirmed ``entry`` on ``replica``: mark it, and remove it once no replica needs it."""
        if not self.several:
            self.spool.remove(entry)
            return
        with self._lock:
            mark = self._marks[replica]
            bridge = None if mark.bridge == entry.order else mark.bridge
            self._save(mark.model_copy(update={"stored": entry.order, "bridge": bridge}))
            if not any(self.wants(other, entry) for other in self.replicas):
                self._remove(entry)

    def mark(self, replica: str) -> ReplicaMark:
        return self._marks.get(replica) or ReplicaMark(replica=replica)

    def behind(self, replica: str) -> bool:
        mark = self._marks.get(replica)
        return mark is not None and mark.behind_since is not None

    def fall_behind(self, replica: str, reason: str) -> None:
        """Hold nothing more for ``replica``: what only it still needed leaves the spool."""
        with self._lock:
            mark = self._marks[replica]
            self._save(mark.model_copy(update={"behind_since": utcnow(), "behind_reason": reason}))
            self._sweep()

    def resume(self, replica: str) -> PendingEntry | None:
        """``replica`` answers again: it needs entries from here on, from a snapshot past what it missed.

        Returns the snapshot it resumes at (None when it missed nothing and
        simply continues); raises ``LookupError`` when no such snapshot is
        spooled yet (the caller has one taken for it alone).
        """
        with self._lock:
            mark = self._marks[replica]
            if mark.behind_since is None:
                return None
            resumed = mark.model_copy(update={"behind_since": None, "behind_reason": ""})
            if mark.missed is None:
                self._save(resumed)
                return None
            bridge = self._bridge(replica, mark.missed)
            if bridge is None:
                raise LookupError(replica)
            just_before = EntryOrder(bridge.generation, bridge.sequence, False)
            # Its bridge, even when the shipper took it for every replica: this replica's copy says so.
            self._save(resumed.model_copy(update={"stored": just_before, "missed": None, "bridge": bridge.order}))
            return bridge

    def new_to_generation(self, replica: str, position: WalPosition, reason: str) -> None:
        """``replica`` holds nothing of the generation the capture continues (it was added to this spool after
        the generation began): behind from the start, having missed everything up to ``position``, so that it
        resumes at a snapshot, never at segments nothing there restores."""
        with self._lock:
            missed = EntryOrder(position.generation, position.sequence, False)
            self._save(
                self._marks[replica].model_copy(
                    update={"behind_since": utcnow(), "behind_reason": reason, "missed": missed, "stored": None}
                )
            )
            self._sweep()

    def expect_bridge(self, replica: str, position: WalPosition) -> None:
        """A snapshot for ``replica`` alone now holds ``position`` (spooled once copied): it resumes there, so
        everything captured after it is held for it from this moment."""
        with self._lock:
            bridge = EntryOrder(position.generation, position.sequence, True)
            just_before = EntryOrder(position.generation, position.sequence, False)
            self._save(
                self._marks[replica].model_copy(
                    update={
                        "behind_since": None,
                        "behind_reason": "",
                        "missed": None,
                        "stored": just_before,
                        "bridge": bridge,
                    }
                )
            )

    def resumes_at(self, replica: str, entry: PendingEntry) -> bool:
        """Whether ``entry`` is the snapshot ``replica`` resumes at after it was behind: its copy there is a
        bridge (``SnapshotInfo.bridge``), which ends the gap before it."""
        mark = self._marks.get(replica)
        return mark is not None and entry.kind == "snapshot" and mark.bridge == entry.order

    def waits_for_bridge(self, replica: str) -> bool:
        """Whether the snapshot ``replica`` is to resume at is not spooled yet: nothing may go up before it."""
        with self._lock:
            mark = self._marks.get(replica)
            return mark is not None and mark.bridge is not None and self._entry(mark.bridge) is None

    def _entry(self, order: EntryOrder) -> PendingEntry | None:
        return next((entry for entry in self.spool.pending() if entry.order == order), None)

    def bridge_failed(self, replica: str, reason: str) -> None:
        """The snapshot it was to resume at was never spooled (the spool full, the copy failed): behind again,
        having missed everything up to it."""
        with self._lock:
            mark = self._marks[replica]
            self._save(
                mark.model_copy(
                    update={"behind_since": utcnow(), "behind_reason": reason, "missed": mark.stored, "bridge": None}
                )
            )
            self._sweep()

    def bridge_spooled(self, replica: str) -> bool:
        """Whether a snapshot ``replica`` may resume at is spooled already."""
        with self._lock:
            missed = self._marks[replica].missed
            return missed is None or self._bridge(replica, missed) is not None

    def _bridge(self, replica: str, missed: EntryOrder) -> PendingEntry | None:
        for entry in self.spool.pending():
            if entry.kind == "snapshot" and entry.order > missed and (not entry.only_for or replica in entry.only_for):
                return entry
        return None

    def _sweep(self) -> None:
        """Remove the entries no replica needs any more (a replica fell behind, or the served set changed)."""
        for entry in self.spool.pending():
            if not any(self.wants(replica, entry) for replica in self.replicas) and not self._bridges(entry):
                self._remove(entry)

    def _bridges(self, entry: PendingEntry) -> bool:
        """Whether ``entry`` is a snapshot a replica behind is to resume at."""
        marks = [self._marks[r] for r in entry.only_for if r in self._marks]
        return any(m.behind_since is not None and (m.missed is None or entry.order > m.missed) for m in marks)

    def _remove(self, entry: PendingEntry) -> None:
        """Remove an entry no replica needs now, remembered as missed by each replica behind that would have."""
        for mark in list(self._marks.values()):
            if mark.behind_since is not None and _would_want(mark, entry):
                self._save(mark.model_copy(update={"missed": max(mark.missed or entry.order, entry.order)}))
        self.spool.remove(entry)

    def _load(self, replica: str) -> ReplicaMark:
        try:
            return ReplicaMark.model_validate_json(self.spool.replica_file(replica, _MARK).read_bytes())
        except (FileNotFoundError, ValidationError):
            # None or damaged: everything spooled goes up to it (again, at worst).
            return ReplicaMark(replica=replica)

    def _save(self, mark: ReplicaMark) -> None:
        self.spool.save_replica_file(mark.replica, _MARK, mark.model_dump_json().encode())
        self._marks[mark.replica] = mark


def _would_want(mark: ReplicaMark, entry: PendingEntry) -> bool:
    """Whether a replica behind would need ``entry`` had it kept up."""
    if entry.only_for and mark.replica not in entry.only_for:
        return False
    return mark.stored is None or entry.order > mark.stored
