"""A tiny threaded TCP proxy for simulating storage outages in tests.

``stop()`` closes the listener and resets every live connection, so clients
see refused and reset connections, as in a real outage; ``restart()`` listens
again on the same port. ``stall()`` holds every byte until ``resume()``, as
a storage that hangs. Each connection has one thread that owns both of its
sockets, so no socket is ever closed under another thread's feet.
"""

import contextlib
import select
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

__all__ = ["TcpProxy"]

_POLL_SECONDS = 0.1  # how soon threads notice stop()
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on with 0 s: close() sends RST


class TcpProxy:
    """Forwards 127.0.0.1:``port`` (free port if 0) to ``target_host``:``target_port``."""

    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self._stopping = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(_POLL_SECONDS)
        self.port = listener.getsockname()[1]
        self._stopping = threading.Event()
        self._spawn(self._accept, listener, self._stopping)

    def stop(self) -> None:
        """Stop listening and reset every live connection; returns once all are gone."""
        self._stopping.set()
        with self._threads_lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=10)

    def stall(self) -> None:
        """Stop passing bytes on, connections left open: a storage that hangs instead of refusing."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def restart(self) -> None:
        self.stop()
        self.start()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._threads_lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket, stopping: threading.Event) -> None:
        with listener:
            while not stopping.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                self._spawn(self._forward, client, stopping)

    def _forward(self, client: socket.socket, stopping: threading.Event) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        peers = {client: upstream, upstream: client}
        open_reads = {client, upstream}
        try:
            while open_reads and not stopping.is_set():
                if not self._flowing.wait(_POLL_SECONDS):
                    continue
                readable, _, _ = select.select(list(open_reads), [], [], _POLL_SECONDS)
                for sock in readable:
                    data = sock.recv(65536)
                    if data:
                        peers[sock].sendall(data)
                    else:  # half-close: pass the FIN on
                        open_reads.discard(sock)
                        peers[sock].shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            if open_reads:  # stopped or broken mid-conversation: a reset, as in an outage
                _reset(client)
                _reset(upstream)
            else:
                client.close()
                upstream.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()
