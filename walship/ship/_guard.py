"""What the shipper knows about its hold on the WAL, and the thread that keeps moving it."""

import logging
import threading
from collections.abc import Callable

from walship.models import WalCursor
from walship.sqlite import WalCapture, captured_frames, covered_by

__all__ = ["Guard", "Tender"]

log = logging.getLogger(__name__)


class Guard:
    """Whether, since the cursor's point, every pin held let the WAL restart only over captured frames.

    While it holds (``guarded``), any WAL restart continues the lineage (see
    ``walship.sqlite``); once a pin that could let uncaptured frames go was
    held, restarts are judged by the strict rule until the cursor is safe again.
    """

    def __init__(self, capture: WalCapture, *, guarded: bool = False) -> None:
        self.capture = capture
        self.guarded = guarded

    def after_pin(self, cursor: WalCursor | None) -> WalCursor | None:
        """Note the pin just taken; the cursor marked ``checkpointed`` if ``seal`` allows it (else None)."""
        pin = self.capture.pin
        if cursor is None or pin is None:
            return None
        same_wal = (pin.salt1, pin.salt2) == (cursor.salt1, cursor.salt2)
        if not self.capture.pin_lets_restart or covered_by(cursor)(pin):
            # A restart from here on loses nothing; one before is judged by the next capture.
            self.guarded = self.guarded or same_wal
        else:
            self.guarded = False
        return self.seal(cursor)

    def sealable(self, cursor: WalCursor | None) -> bool:
        """Every frame of the cursor's WAL is captured and backfilled, and the pin reads the database file alone."""
        pin = self.capture.pin
        if cursor is None or pin is None or not pin.max_frame or not self.capture.pin_lets_restart:
            return False
        same_wal = (pin.salt1, pin.salt2) == (cursor.salt1, cursor.salt2)
        return same_wal and captured_frames(cursor) == pin.max_frame

    def seal(self, cursor: WalCursor | None) -> WalCursor | None:
        """The cursor marked ``checkpointed`` once its WAL can hold no frame after it (else None).

        A successor that did not overlap this run continues across exactly
        one WAL restart only from such a cursor: its WAL was all in the
        database file and captured, and nothing could follow it there
        (``WalCapture.ends_at``).
        """
        if cursor is None or cursor.checkpointed or not self.sealable(cursor):
            return None
        assert self.capture.pin is not None
        if not self.capture.ends_at(self.capture.pin):
            return None
        return cursor.model_copy(update={"checkpointed": True, "db_mtime_ns": self.capture.db_mtime_ns})


class Tender:
    """Calls ``tend`` every ``poll`` seconds in a thread of its own, whatever the caller's loop is doing.

    An application's FULL, RESTART or TRUNCATE checkpoint waits for the pin
    to move; uploads and snapshot copies must not make it wait longer.
    """

    def __init__(self, tend: Callable[[], object], poll: float, name: str) -> None:
        self._tend, self._poll, self._name = tend, poll, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="walship-pin", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self._poll):
            try:
                self._tend()
            except Exception:
                # The loop's own sync reports the same problem with context; the pin just stays.
                log.debug("tending the pin of %s failed", self._name, exc_info=True)
