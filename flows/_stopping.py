"""SIGTERM ends a shipping window the way its time would, in a flow run as on the direct CLI.

A worker's cancellation, ``systemctl stop`` and a supervisor all send SIGTERM.
Prefect's own handler would abort the run mid-capture and mark it Crashed;
ending the window instead lets the final capture, drain and report run, so
the run exits 0 having shipped everything committed before the signal.
"""

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

__all__ = ["sigterm_ends_window"]


@contextlib.contextmanager
def sigterm_ends_window(stop: Callable[[], None]) -> Iterator[None]:
    """Within the block, SIGTERM calls ``stop``; Prefect's own handler is back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; there Prefect's handling stays
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
