"""``follow``: a kept copy held at its replica's newest point, one atomic apply per shipped segment.

Each round asks the replica only for the copy's next segment (one narrow
listing, which finds a WAL or a resync segment alike). A wide look, the
replica's generations from one listing, comes first and again whenever
nothing new came for ``WIDE_LOOK_SECONDS``: it finds a new generation, which
the copy takes by the pages that differ, and a chain the copy cannot follow.
"""

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from walship.chain import list_segment_objects
from walship.copies import CopyRecord, read_copy_record
from walship.envelope import Keyring
from walship.errors import StandbyUnsettledError, TransientStorageError
from walship.generations import choose_start, describe_generations
from walship.layout import parse_segment_key, segment_prefix
from walship.models import ObjectInfo, utcnow
from walship.restore import restore_snapshot
from walship.sqlite import integrity_check
from walship.standby._catch_up import CaughtUp, require_same_database, update
from walship.standby._copy import KeptCopy, Segments
from walship.storage import ObjectStore

__all__ = ["WIDE_LOOK_SECONDS", "follow"]

log = logging.getLogger(__name__)

WIDE_LOOK_SECONDS = 10.0
# A follower that fell behind takes at most this many segments in one commit, then looks again.
_BATCH_MAX = 64


def follow(
    store: ObjectStore,
    output: Path,
    *,
    interval: float,
    stop: threading.Event,
    keys: Keyring | None = None,
    report: Callable[[CaughtUp], None] = lambda _: None,
    unreached: Callable[[float, str], None] = lambda _seconds, _why: None,
) -> CopyRecord:
    """Keep the copy at ``output`` at the replica's newest point, looking every ``interval`` s until ``stop``.

    The copy is restored whole first when there is none. ``report`` hears
    each update; ``unreached`` hears, after every round, for how long no
    round could look at the replica (0 once one could) and why. Returns
    the record the copy was sealed with at the end (its WAL checkpointed when
    readers let it, its pages' digest taken); ``integrity_check`` has passed.
    """
    output = output.absolute()
    if read_copy_record(output) is None and not output.exists():
        chosen, until = choose_start(describe_generations(store))
        restore_snapshot(store, chosen, output, until_sequence=until, keys=keys)
    with KeptCopy(store, output, keys=keys) as copy:
        rounds = _Rounds(copy, report)
        looked = time.monotonic()
        while not stop.is_set():
            began = time.monotonic()
            try:
                rounds.once()
            except (StandbyUnsettledError, TransientStorageError) as exc:
                log.warning("follow %s: %s; trying again in %g s", output, exc, interval)
                unreached(time.monotonic() - looked, str(exc))
            else:
                looked = time.monotonic()
                unreached(0.0, "")
            stop.wait(max(0.0, interval - (time.monotonic() - began)))
        record = copy.seal(digest=True)
    integrity_check(output, live=True)
    return record


class _Rounds:
    def __init__(self, copy: KeptCopy, report: Callable[[CaughtUp], None]) -> None:
        self.copy, self.report = copy, report
        self._wide_at = 0.0

    def once(self) -> None:
        if time.monotonic() >= self._wide_at:
            self._wide()
        elif not self._next():
            return
        self._wide_at = time.monotonic() + WIDE_LOOK_SECONDS

    def _wide(self) -> None:
        """The replica's newest point, from its generations; an update when the copy is not there."""
        copy = self.copy
        chosen, until = choose_start(describe_generations(copy.store))
        require_same_database(copy.record, chosen, copy.output)
        newest = until if until is not None else chosen.sequence
        if (copy.record.generation, copy.record.sequence) == (chosen.generation, newest):
            return
        copy.downloaded = 0
        segments = list_segment_objects(copy.store, chosen.generation)
        self.report(update(copy, chosen, segments, until, None, seal=False))

    def _next(self) -> bool:
        """Apply the copy's next segments, those the replica has now, as one commit; whether there were any."""
        copy = self.copy
        copy.downloaded = 0
        found: Segments = {}
        sequence = copy.record.sequence + 1
        while len(found) < _BATCH_MAX and (next_one := self._find(copy.record.generation, sequence)):
            found[sequence] = next_one
            sequence += 1
        applied = copy.advance(found) if found else 0
        if applied:
            record = copy.record
            lag = (utcnow() - record.captured_at).total_seconds() if record.captured_at is not None else None
            self.report(
                CaughtUp(
                    output=copy.output,
                    record=record,
                    segments_applied=applied,
                    downloaded=copy.downloaded,
                    lag_seconds=lag,
                )
            )
        return applied > 0

    def _find(self, generation: str, sequence: int) -> ObjectInfo | None:
        for found in self.copy.store.list(segment_prefix(generation, sequence)):
            parsed = parse_segment_key(found.key)
            if parsed is not None and (parsed.generation, parsed.sequence) == (generation, sequence):
                return found
        return None
