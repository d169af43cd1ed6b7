"""age's stream cipher as a writer (sealing) and a decryption into a writer (opening), over pyrage.

pyrage offers ``encrypt_io(reader, writer)`` and ``decrypt_io``: each runs to
the end of its input. Sealing is pushed to (a writer handed chunks), so
``encrypt_io`` runs in a thread of its own, fed through a bounded queue:
memory stays at a few chunks. Opening runs ``decrypt_io`` on the caller's
thread, pushing into zstd. pyrage is imported on first use (see
``walship.envelope._keys``).
"""

import contextlib
import io
import queue
import threading
from collections.abc import Callable, Sequence
from typing import BinaryIO, Protocol

from walship.errors import CorruptObjectError, IdentityMismatchError, WalshipError

__all__ = ["AgeWriter", "Sink", "decrypt_into"]

_DEPTH = 8
_READ_SIZE = 256 << 10
# A consumer that went away is noticed within this long by the thread waiting on it.
_POLL = 0.2


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _StoppedError(Exception):
    """The other side of a queue went away; ends pyrage's call early."""


class _QueueInput(io.RawIOBase):
    """What pyrage reads: chunks put in a queue, ``None`` for the end."""

    def __init__(self, cancelled: threading.Event) -> None:
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_DEPTH)
        self._cancelled = cancelled
        self._chunk = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._chunk:
            if self._done:
                return 0
            chunk = _get(self.queue, self._cancelled)
            if chunk is None:
                self._done = True
                return 0
            self._chunk = memoryview(chunk)
        n = min(len(buffer), len(self._chunk))
        buffer[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        return n


def _get(q: "queue.Queue[bytes | None]", cancelled: threading.Event) -> bytes | None:
    while True:
        if cancelled.is_set():
            raise _StoppedError
        try:
            return q.get(timeout=_POLL)
        except queue.Empty:
            continue


def _put(q: "queue.Queue[bytes | None]", item: bytes | None, alive: Callable[[], bool]) -> None:
    while True:
        if not alive():
            raise _StoppedError
        try:
            q.put(item, timeout=_POLL)
            return
        except queue.Full:
            continue


class AgeWriter:
    """Encrypts what is written to it for ``recipients`` into ``target``, as one standard age file.

    ``target.write`` is called from the cipher's thread; ``finish`` waits for
    the last bytes (age's final chunk and tag) and raises what went wrong.
    """

    def __init__(self, target: Sink, recipients: Sequence[object]) -> None:
        self.stored = 0
        self._target = target
        self._cancelled = threading.Event()
        self._input = _QueueInput(self._cancelled)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(list(recipients),), name="walship-age-seal", daemon=True
        )
        self._thread.start()

    def write(self, data: bytes) -> int:
        if data:
            try:
                _put(self._input.queue, bytes(data), self._thread.is_alive)
            except _StoppedError:
                self._raise()  # the cipher's thread ended early: its error, not ours
        return len(data)

    def finish(self) -> None:
        with contextlib.suppress(_StoppedError):
            _put(self._input.queue, None, self._thread.is_alive)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _raise(self) -> None:
        self._thread.join()
        raise self._error or CorruptObjectError("age encryption ended early")

    def abort(self) -> None:
        """Stop the cipher's thread (the caller failed); nothing it wrote is to be used."""
        self._cancelled.set()
        self._thread.join()

    def _run(self, recipients: list[object]) -> None:
        import pyrage  # noqa: PLC0415 - see the module docstring

        output = _Counting(self)
        try:
            pyrage.encrypt_io(self._input, output, recipients)
        except BaseException as exc:  # re-raised by write() or finish() in the caller's thread
            if output.error is not None:
                # The target's own error (a full spool disk): pyrage would have made it an anonymous I/O error.
                self._error = output.error
            elif not self._cancelled.is_set():
                self._error = exc if isinstance(exc, WalshipError) else CorruptObjectError(f"age encryption: {exc}")


class _Counting:
    def __init__(self, writer: AgeWriter) -> None:
        self._writer = writer
        self.error: BaseException | None = None

    def write(self, data: bytes) -> int:
        try:
            self._writer._target.write(bytes(data))
        except BaseException as exc:
            self.error = exc
            raise
        self._writer.stored += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def decrypt_into(source: BinaryIO, writer: Sink, identities: Sequence[object], name: str) -> None:
    """Decrypt the age file ``source`` holds into ``writer``, on this thread.

    pyrage pushes plaintext as it authenticates it (64 KiB chunks); zstd takes
    it pushed (``codec.DecompressingWriter``), so no thread and no hand-over
    is needed here. A wrong identity fails before any plaintext exists;
    damage fails where it is found (age authenticates every chunk and the
    last one). An error of ``writer`` (corrupt zstd, a full disk) is raised
    as itself.
    """
    import pyrage  # noqa: PLC0415 - see the module docstring

    guarded = _Guarded(writer)
    try:
        pyrage.decrypt_io(_Reading(source), guarded, list(identities))
    except pyrage.DecryptError as exc:
        if guarded.error is not None:
            raise guarded.error from None
        if "no matching keys" in str(exc).lower():
            raise IdentityMismatchError(
                f"{name}: none of the age identities given opens it: "
                "give the identity whose recipient sealed it (--age-identity)"
            ) from None
        raise CorruptObjectError(f"decrypt {name}: not a readable age file ({exc})") from None
    except Exception as exc:  # pyrage's OSError: a damaged or truncated age stream
        if guarded.error is not None:
            raise guarded.error from None
        raise CorruptObjectError(f"decrypt {name}: the object is corrupt ({exc})") from None
    if guarded.error is not None:
        raise guarded.error


class _Guarded:
    """Keeps the writer's own error: pyrage would turn it into an anonymous I/O error."""

    def __init__(self, writer: Sink) -> None:
        self._writer = writer
        self.error: BaseException | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._writer.write(bytes(data))
        except BaseException as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        pass


class _Reading(io.RawIOBase):
    """pyrage reads 8 KiB at a time; the object's body is read in larger pieces."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._chunk = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._chunk:
            self._chunk = memoryview(self._source.read(_READ_SIZE))
        n = min(len(buffer), len(self._chunk))
        buffer[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        return n
