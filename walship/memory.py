"""What a long-running shipper asks of glibc's malloc: one arena, and the freed heap handed back.

Elsewhere (musl, macOS) there is nothing to ask, and both calls do nothing.
"""

import ctypes

__all__ = ["GLIBC", "one_arena", "release_free_memory"]

# glibc's malloc.h: the mallopt parameter that caps the number of arenas.
_M_ARENA_MAX = -8


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


_LIBC = _glibc()
# Whether there is anything to ask (glibc's malloc); elsewhere both calls do nothing.
GLIBC = _LIBC is not None


def one_arena() -> None:
    """Ask glibc for one malloc arena; call it before the shipper's threads start.

    Each thread that allocates gets an arena of its own, and glibc keeps what
    it holds: a shipper running for days with its pin-tending thread measured
    about 10 MiB less resident with one arena (bench/ship_lag.py, 74 -> 64 MiB
    through the load), at no cost in CPU it could measure.
    """
    if _LIBC is not None:
        _LIBC.mallopt(_M_ARENA_MAX, 1)


def release_free_memory() -> bool:
    """Hand the free pages of malloc's heap back to the OS (``malloc_trim(0)``); whether there was any.

    A sync's buffers (WAL read, compressed, uploaded) are freed when it ends,
    but glibc keeps them: it raises its trim threshold to the largest buffer
    freed so far, and cannot shrink the heap under a chunk still in use. A
    shipper between syncs held 7 MiB of free heap (bench/ship_lag.py). One
    call between syncs costs about 40 us when there is nothing to give back;
    fixing the thresholds instead (``mallopt``) gave the same memory back but
    made every large buffer a fresh ``mmap``: 30% more CPU under load.
    """
    return bool(_LIBC.malloc_trim(0)) if _LIBC is not None else False
