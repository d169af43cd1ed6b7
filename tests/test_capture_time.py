"""Issue 21: ``restore --timestamp C`` holds every commit made before C.

A segment's ``captured_at`` promises that every commit before it is in that
segment or an earlier one. The application may commit at any moment of a
capture; here it commits at the worst one, right after the WAL scan that
decides what the segment holds, from another process as an application
would. No clock is compared with a duration: only the order of events.
"""

import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.test_restore_cli import commit
from walship.chain import read_segment_info
from walship.layout import format_segment_key
from walship.lease import holder_for
from walship.models import RestoreResult, utcnow
from walship.ship import ShipConfig, Shipper
from walship.spool import Spool
from walship.sqlite import WalCapture, WalScan
from walship.storage import ObjectStore, open_store
from walship.upload import upload_pending
from walship_cli import _direct


class CommitAfterScan(WalCapture):
    """The live database, where the application commits once right after the next WAL scan ends."""

    after_scan: Callable[[], None] | None = None

    def scan(self, *args: Any, **kwargs: Any) -> WalScan:
        scanned = super().scan(*args, **kwargs)
        hook, self.after_scan = self.after_scan, None
        if hook is not None:
            hook()
        return scanned


def tags(database: Path) -> set[str]:
    connection = sqlite3.connect(database)
    try:
        return {row[0] for row in connection.execute("SELECT DISTINCT tag FROM notes")}
    finally:
        connection.close()


def upload(store: ObjectStore, spool: Spool, database: Path) -> None:
    upload_pending(store, spool, holder=holder_for(database))


def test_a_commit_during_the_capture_is_before_or_after_the_capture_time(database: Path, tmp_path: Path) -> None:
    replica = f"file://{tmp_path / 'replica'}"
    store = open_store(replica)
    spool = Spool(tmp_path / "spool")
    capture = CommitAfterScan(database)
    shipper = Shipper(database, spool, ShipConfig(database_id="app.db"), capture=capture)
    generation = shipper.open().new_generation
    assert generation is not None
    upload(store, spool, database)
    commit(database, "before", 10)
    late: list[datetime] = []

    def late_commit() -> None:
        commit(database, "late", 1)
        late.append(utcnow())  # the commit returned before this moment

    capture.after_scan = late_commit
    shipper.sync()
    assert late, "the application did not commit during the capture"
    assert shipper.cursor is not None
    upload(store, spool, database)
    first = read_segment_info(store, format_segment_key(generation, shipper.cursor.sequence))
    shipper.sync()  # the late commit's segment
    upload(store, spool, database)
    shipper.finish()
    upload(store, spool, database)
    shipper.close()
    spool.close()

    output = tmp_path / "at-capture.db"
    result = _direct.restore(
        replica,
        output,
        timestamp=first.captured_at,
        snapshot_key=None,
        sequence=None,
        generation=None,
        force=False,
        database_id=None,
    )
    assert isinstance(result, RestoreResult)
    assert result.complete_until is not None
    restored = tags(output)
    assert "before" in restored
    if late[0] <= result.complete_until:
        assert "late" in restored, f"a commit before {result.complete_until} is missing from the restore"
    else:
        assert "late" not in restored, "the segment holds a commit it says came after its capture"
