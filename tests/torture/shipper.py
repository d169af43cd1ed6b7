"""One ``walship ship`` (or ``ship-many``) process of a torture run: its output in a file, and how it ended."""

import contextlib
import signal
import subprocess
import time
from pathlib import Path

from tests.helpers import ROOT

__all__ = ["HungError", "Shipper"]

# How long a shipper may take to end once told (a run ending with a replica down retries it for some 60 s).
ENDS_WITHIN = 120.0

# What walship prints on stderr when a SIGTERM begins the end of its window (not a failure).
_FINISHING = "walship: SIGTERM"


class Shipper:
    """One ``walship ship`` (or ``ship-many``) process, its output in a file, and how it ended."""

    def __init__(self, number: int, command: list[str], log: Path, env: dict[str, str]) -> None:
        self.number = number
        self.log = log
        self.started = time.time()
        with log.open("w") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        self.signal: str | None = None
        self.signalled_at: float | None = None
        self.ended_at: float | None = None
        self.successor: Shipper | None = None  # the shipper it handed the database over to

    def end(self, how: signal.Signals) -> int:
        self.signal, self.signalled_at = how.name, time.time()
        self.process.send_signal(how)
        return self.wait()

    def wait(self) -> int:
        """Its exit status, once it ended; ``HungError`` when it does not end in time (its threads' stacks are then in
        its log: the run sets PYTHONFAULTHANDLER, and SIGABRT makes it print them)."""
        try:
            code = self.process.wait(timeout=ENDS_WITHIN)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            raise HungError(self) from None
        self.ended_at = self.ended_at or time.time()
        return code

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def failure(self) -> str:
        """The line walship printed last to say why it failed ("walship: ..."; empty when none)."""
        lines = [line for line in self.output.splitlines() if line.startswith("walship: ")]
        lines = [line for line in lines if not line.startswith(_FINISHING)]
        return lines[-1] if lines else ""


class HungError(Exception):
    """A shipper that did not end within ``ENDS_WITHIN`` seconds (of its start, or of its signal)."""

    def __init__(self, shipper: Shipper) -> None:
        told = f"its {shipper.signal}" if shipper.signal else "its start"
        super().__init__(
            f"shipper {shipper.number} did not end within {ENDS_WITHIN:.0f} s of {told}: its threads' stacks "
            f"(SIGABRT) are at the end of {shipper.log}"
        )
