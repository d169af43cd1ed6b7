"""SQLite's WAL checksum (file format, section 4.2) as linear algebra over 32-bit words.

One step over a pair of words ``x = (x0, x1)`` maps the running pair
``s = (s0, s1)`` to ``M·s + A·x`` (mod 2**32), with ``M = ((1, 1), (1, 2))``
and ``A = ((1, 0), (1, 1))``: ``s0 += x0 + s1; s1 += x1 + s0``. Over n pairs
that is ``M**n·s`` plus a weighted sum of the words, each word's weight fixed
by its position. So a frame's checksum is its predecessor's times one matrix
plus the frame's own *share*, and the shares of every frame in a batch are
one matrix product (numpy, in wrapping 32-bit arithmetic, as the checksum
itself is). A Python loop over words managed some 25 µs a 4 KiB page, which
was most of a restore's time and a follower's CPU.
"""

import functools
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["FrameShares", "frame_checksum", "wal_checksum"]

_MASK = 0xFFFFFFFF
_Matrix = tuple[tuple[int, int], tuple[int, int]]
_STEP: _Matrix = ((1, 1), (1, 2))
_MIX: _Matrix = ((1, 0), (1, 1))
_IDENTITY: _Matrix = ((1, 0), (0, 1))
# The frame header's first two words (page number, commit size) are checksummed, then the page.
_HEADER_WORDS = 6
_CHECKSUMMED_HEADER_WORDS = 2
# Below this many bytes the plain loop is cheaper than setting up arrays.
_SHORT = 256


def wal_checksum(data: bytes | bytearray | memoryview, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    """Continue SQLite's WAL checksum from ``(s0, s1)`` over ``data`` (a multiple of 8 bytes)."""
    view = memoryview(data).cast("B")
    if len(view) % 8:
        raise ValueError(f"the WAL checksum covers whole 8-byte pairs of words, not {len(view)} bytes")
    if len(view) < _SHORT:
        words = struct.unpack(f"{'>' if big_endian else '<'}{len(view) // 4}I", view)
        pairs = iter(words)
        for x0, x1 in zip(pairs, pairs, strict=True):
            s0 = (s0 + x0 + s1) & _MASK
            s1 = (s1 + x1 + s0) & _MASK
        return s0, s1
    import numpy as np  # noqa: PLC0415 - only commands that checksum pages pay for numpy's import

    length = len(view) // 8
    a, b = (np.frombuffer(view, dtype=_word_type(big_endian)) @ _weights(length)).tolist()
    return _advance(_jump(length), (s0, s1), (a, b))


def frame_checksum(raw: bytes | memoryview, seed: tuple[int, int], big_endian: bool) -> tuple[int, int]:
    """The checksum a whole frame (header and page) carries, given the running checksum before it."""
    view = memoryview(raw)
    checksum = wal_checksum(view[: _CHECKSUMMED_HEADER_WORDS * 4], *seed, big_endian)
    return wal_checksum(view[_HEADER_WORDS * 4 :], *checksum, big_endian)


class FrameShares:
    """Every whole frame's share of its checksum, for a batch of consecutive frames.

    ``after(i, checksum)`` is frame i's checksum given the one before it: a
    chain check costs two multiplications per frame once the shares are in.
    """

    def __init__(self, frames: bytes | bytearray | memoryview, frame_size: int, big_endian: bool) -> None:
        import numpy as np  # noqa: PLC0415 - see wal_checksum

        count = len(frames) // frame_size
        words = np.frombuffer(frames, dtype=_word_type(big_endian), count=count * frame_size // 4)
        words = words.reshape(count, frame_size // 4)
        pairs = (frame_size // 4 - _HEADER_WORDS + _CHECKSUMMED_HEADER_WORDS) // 2
        weights = _weights(pairs)
        head = words[:, :_CHECKSUMMED_HEADER_WORDS] @ weights[:_CHECKSUMMED_HEADER_WORDS]
        shares = head + words[:, _HEADER_WORDS:] @ weights[_CHECKSUMMED_HEADER_WORDS:]
        self._array = shares
        self._jump = _jump(pairs)

    def __len__(self) -> int:
        return len(self._array)

    @functools.cached_property
    def _shares(self) -> list[list[int]]:
        """The shares as Python ints, for ``after``; a chain checked at once (``chained``) never needs them."""
        shares: list[list[int]] = self._array.tolist()
        return shares

    def after(self, index: int, checksum: tuple[int, int]) -> tuple[int, int]:
        # _advance, inlined: this runs once per frame read or written.
        (j00, j01), (j10, j11) = self._jump
        a, b = self._shares[index]
        s0, s1 = checksum
        return (j00 * s0 + j01 * s1 + a) & _MASK, (j10 * s0 + j11 * s1 + b) & _MASK

    def chained(self, seed: tuple[int, int], stored: "npt.NDArray[np.uint32]") -> int:
        """How many frames, from the first, carry the checksum the chain from ``seed`` gives them.

        ``stored`` holds each frame's two checksum words. Frame i is checked
        against frame i-1's stored checksum, so every frame is checked at once:
        up to the first mismatch, stored and computed chains are the same.
        """
        import numpy as np  # noqa: PLC0415 - see wal_checksum

        count = len(self._array)
        before = np.empty((count, 2), dtype=np.uint32)
        before[0] = seed
        before[1:] = stored[: count - 1]
        # Wrapping 32-bit arithmetic is the checksum's own.
        jump = np.array(self._jump, dtype=np.uint32)
        expected = before @ jump.T + self._array
        matches = (expected == stored[:count]).all(axis=1)
        return count if matches.all() else int(np.argmin(matches))


def _advance(jump: _Matrix, checksum: tuple[int, int], share: tuple[int, int]) -> tuple[int, int]:
    (j00, j01), (j10, j11) = jump
    s0, s1 = checksum
    return (j00 * s0 + j01 * s1 + share[0]) & _MASK, (j10 * s0 + j11 * s1 + share[1]) & _MASK


def _word_type(big_endian: bool) -> str:
    return ">u4" if big_endian else "<u4"


# One entry per checksummed length: in practice a page size or two, and the frame's header.
@functools.lru_cache(maxsize=16)
def _weights(pairs: int) -> "npt.NDArray[np.uint32]":
    """Word i's weights (row i: its share of s0, of s1) over ``pairs`` pairs: pair k of n is weighted M**(n-k)·A."""
    import numpy as np  # noqa: PLC0415 - see wal_checksum

    weights = np.zeros((2 * pairs, 2), dtype=np.uint32)
    power = _IDENTITY  # M**(n-k), from the last pair back to the first
    for k in reversed(range(pairs)):
        (w00, w01), (w10, w11) = _multiply(power, _MIX)
        weights[2 * k] = (w00, w10)
        weights[2 * k + 1] = (w01, w11)
        power = _multiply(power, _STEP)
    return weights


@functools.lru_cache(maxsize=16)
def _jump(pairs: int) -> _Matrix:
    """M**pairs: what a stretch of that many pairs does to the checksum it continues."""
    result, m, exponent = _IDENTITY, _STEP, pairs
    while exponent:
        if exponent & 1:
            result = _multiply(result, m)
        m = _multiply(m, m)
        exponent >>= 1
    return result


def _multiply(a: _Matrix, b: _Matrix) -> _Matrix:
    (a00, a01), (a10, a11) = a
    (b00, b01), (b10, b11) = b
    return (
        ((a00 * b00 + a01 * b10) & _MASK, (a00 * b01 + a01 * b11) & _MASK),
        ((a10 * b00 + a11 * b10) & _MASK, (a10 * b01 + a11 * b11) & _MASK),
    )
