"""age's stream cipher as a writer (sealing) and a reader (opening), over pyrage's blocking calls.

pyrage offers ``encrypt_io(reader, writer)`` and ``decrypt_io``: each runs to
the end of its input. walship's pipelines push (a writer handed chunks) and
pull (zstd reading its source), so each call runs in a thread of its own,
fed through a bounded queue: memory stays at a few chunks.
"""

import contextlib
import io
import queue
import threading
from collections.abc import Callable, Sequence
from typing import BinaryIO, Protocol

import pyrage

from walship.errors import CorruptObjectError, IdentityMismatchError, WalshipError

__all__ = ["AgeReader", "AgeWriter", "Sink"]

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
            _put(self._input.queue, bytes(data), self._thread.is_alive)
        return len(data)

    def finish(self) -> None:
        with contextlib.suppress(_StoppedError):
            _put(self._input.queue, None, self._thread.is_alive)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop the cipher's thread (the caller failed); nothing it wrote is to be used."""
        self._cancelled.set()
        self._thread.join()

    def _run(self, recipients: list[object]) -> None:
        try:
            pyrage.encrypt_io(self._input, _Counting(self), recipients)
        except _StoppedError:
            pass
        except BaseException as exc:  # re-raised by finish() in the caller's thread
            self._error = exc if isinstance(exc, WalshipError) else CorruptObjectError(f"age encryption failed: {exc}")


class _Counting:
    def __init__(self, writer: AgeWriter) -> None:
        self._writer = writer

    def write(self, data: bytes) -> int:
        self._writer._target.write(bytes(data))
        self._writer.stored += len(data)
        return len(data)

    def flush(self) -> None:
        pass


class AgeReader:
    """The plaintext of the age file ``source`` holds, read by its consumer (zstd) as it decrypts.

    A wrong identity fails at the first read, before any plaintext exists;
    damage fails where it is found (age authenticates each 64 KiB chunk and
    the last one).
    """

    def __init__(self, source: BinaryIO, identities: Sequence[object], name: str) -> None:
        self._name = name
        self._output: queue.Queue[bytes | None] = queue.Queue(maxsize=_DEPTH)
        self._closed = threading.Event()
        self._error: BaseException | None = None
        self._chunk = b""
        self._ended = False
        self._thread = threading.Thread(
            target=self._run, args=(source, list(identities)), name="walship-age-open", daemon=True
        )
        self._thread.start()

    def read(self, size: int = -1, /) -> bytes:
        while not self._chunk and not self._ended:
            item = self._output.get()
            if item is None:
                self._ended = True
                if self._error is not None:
                    raise self._error
            else:
                self._chunk = item
        if size < 0 or size >= len(self._chunk):
            data, self._chunk = self._chunk, b""
        else:
            data, self._chunk = self._chunk[:size], self._chunk[size:]
        return data

    def close(self) -> None:
        self._closed.set()
        self._thread.join()

    def __enter__(self) -> "AgeReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, source: BinaryIO, identities: list[object]) -> None:
        try:
            pyrage.decrypt_io(_Reading(source), _Output(self), identities)
        except _StoppedError:
            pass
        except pyrage.DecryptError as exc:
            if "no matching keys" in str(exc).lower():
                self._error = IdentityMismatchError(
                    f"{self._name}: none of the age identities given opens it: "
                    "give the identity whose recipient sealed it (--age-identity)"
                )
            else:
                self._error = CorruptObjectError(f"decrypt {self._name}: not a readable age file ({exc})")
        except BaseException as exc:  # OSError from pyrage: a damaged or truncated age stream
            self._error = CorruptObjectError(f"decrypt {self._name}: the object is corrupt ({exc})")
        finally:
            with contextlib.suppress(_StoppedError):
                _put(self._output, None, self._alive)

    def _alive(self) -> bool:
        return not self._closed.is_set()


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


class _Output:
    def __init__(self, reader: AgeReader) -> None:
        self._reader = reader

    def write(self, data: bytes) -> int:
        _put(self._reader._output, bytes(data), self._reader._alive)
        return len(data)

    def flush(self) -> None:
        pass
