"""The page digest map: every page's digest as the replica holds it at the spool's cursor.

On disk, in the spool's ``pages/`` directory:

    base      a header line (JSON: generation, sequence, page size, page
              count, the body's BLAKE2b) and the digests of pages 1..N
    journal   one record per sequence since the base: its ``PageChanges``,
              closed by a BLAKE2b of the record
    work      the map at the cursor, rebuilt from the two at every load: the
              one the shipper reads and writes (16 bytes a page, in a file so
              that memory stays flat whatever the database's size)

Why a journal: rewriting a 1 GiB database's map (4 MiB) every second would
cost more than the segment it describes; a record is a few kilobytes. It is
appended before the cursor moves and not fsynced: a killed process loses
nothing the page cache holds, and after a power loss a short journal shows
as a map behind the cursor (a full snapshot, with that reason), never as a
wrong one. Records past the cursor (a crash between the two) are dropped
when the map is loaded, so the map and the cursor always describe one state.
"""

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from walship._fs import fsync_dir
from walship.errors import MapUnusableError
from walship.resync._digest import DIGEST_SIZE, PageChanges, zero_digest

__all__ = ["PageMap", "PageMapStore"]

_RECORD_HEAD = struct.Struct(">4sQIII")  # magic, sequence, page count, low water, changes
_RECORD_MAGIC = b"WSPJ"
_CHANGE = struct.Struct(">I")
_CHANGE_SIZE = _CHANGE.size + DIGEST_SIZE
_SEAL = 16
_CHUNK = 1 << 20
# The journal is folded into the base once it is this many times the base's size (and past a floor).
_COMPACT_RATIO = 2
_COMPACT_FLOOR = 4 << 20


class PageMap:
    """Every page's digest of the state after ``sequence`` of ``generation``, kept in a file."""

    def __init__(self, path: Path, generation: str, sequence: int, page_size: int) -> None:
        """Open the map in ``path`` (16 bytes a page, page 1 first)."""
        self.path, self.generation, self.sequence, self.page_size = path, generation, sequence, page_size
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.page_count = os.fstat(self._fd).st_size // DIGEST_SIZE

    @classmethod
    def build(
        cls, path: Path, generation: str, sequence: int, page_size: int, digests: Iterable[bytes | bytearray]
    ) -> "PageMap":
        """A new map in ``path`` from page digests in page order (in chunks of any size)."""
        path.parent.mkdir(exist_ok=True)
        with path.open("wb") as out:
            for chunk in digests:
                out.write(chunk)
        return cls(path, generation, sequence, page_size)

    def close(self) -> None:
        os.close(self._fd)

    def digest(self, page: int) -> bytes | None:
        if not 1 <= page <= self.page_count:
            return None
        return os.pread(self._fd, DIGEST_SIZE, (page - 1) * DIGEST_SIZE)

    def read(self, first: int, count: int) -> bytes:
        """The digests of pages ``first``.. (``count`` of them, fewer past the end)."""
        return os.pread(self._fd, count * DIGEST_SIZE, (first - 1) * DIGEST_SIZE)

    def blocks(self) -> Iterator[bytes]:
        """Every digest in page order, a chunk at a time."""
        per_chunk = _CHUNK // DIGEST_SIZE
        for first in range(1, self.page_count + 1, per_chunk):
            yield self.read(first, per_chunk)

    def set(self, page: int, digest: bytes) -> None:
        os.pwrite(self._fd, digest, (page - 1) * DIGEST_SIZE)

    def apply(self, sequence: int, changes: PageChanges) -> None:
        """Replay one sequence's changes (see ``PageChanges``)."""
        if sequence != self.sequence + 1:
            raise MapUnusableError(f"the map is at sequence {self.sequence}, not {sequence - 1}")
        if changes.low_water < self.page_count:
            os.ftruncate(self._fd, changes.low_water * DIGEST_SIZE)
            self.page_count = changes.low_water
        if changes.page_count > self.page_count:
            zero, per_chunk = zero_digest(self.page_size), _CHUNK // DIGEST_SIZE
            for first in range(self.page_count + 1, changes.page_count + 1, per_chunk):
                count = min(per_chunk, changes.page_count + 1 - first)
                os.pwrite(self._fd, zero * count, (first - 1) * DIGEST_SIZE)
        for page, digest in changes.digests.items():
            if page <= changes.page_count:
                self.set(page, digest)
        os.ftruncate(self._fd, changes.page_count * DIGEST_SIZE)
        self.page_count = changes.page_count
        self.sequence = sequence


class PageMapStore:
    """The map of one spool, kept on disk beside its cursor."""

    def __init__(self, spool_root: Path) -> None:
        self.root = spool_root / "pages"
        self.work = self.root / "work"
        self._base = self.root / "base"
        self._journal = self.root / "journal"
        self._journal_bytes = 0

    def load(self, generation: str, sequence: int) -> PageMap:
        """The map at ``sequence`` of ``generation``; journal records past it are dropped."""
        try:
            base = self._base.open("rb")
        except FileNotFoundError:
            raise MapUnusableError("the spool has no page digest map (first run of this walship version?)") from None
        with base:
            try:
                meta = json.loads(base.readline())
                page_size, sealed, named = int(meta["page_size"]), str(meta["body"]), str(meta["generation"])
                base_sequence = int(meta["sequence"])
            except (ValueError, KeyError, TypeError):
                raise MapUnusableError("the page digest map's header is damaged") from None
            if named != generation:
                raise MapUnusableError(f"the page digest map describes generation {named}, not {generation}")
            page_map = PageMap.build(self.work, generation, base_sequence, page_size, self._checked_body(base, sealed))
        try:
            kept = self._replay(page_map, sequence)
            if page_map.sequence != sequence:
                raise MapUnusableError(
                    f"the page digest map reaches sequence {page_map.sequence}, the cursor {sequence} (a crash?)"
                )
        except BaseException:
            page_map.close()
            raise
        if self._journal.exists():
            os.truncate(self._journal, kept)
        self._journal_bytes = kept
        return page_map

    def reset(self, page_map: PageMap) -> None:
        """Write ``page_map`` as the new base, durably, and start an empty journal."""
        self.root.mkdir(exist_ok=True)
        sealed = hashlib.blake2b(digest_size=_SEAL)
        for chunk in page_map.blocks():
            sealed.update(chunk)
        meta = {
            "generation": page_map.generation,
            "sequence": page_map.sequence,
            "page_size": page_map.page_size,
            "page_count": page_map.page_count,
            "body": sealed.hexdigest(),
        }
        temp = self.root / "base.tmp"
        with temp.open("wb") as out:
            out.write(json.dumps(meta).encode() + b"\n")
            for chunk in page_map.blocks():
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        # The journal goes first: records of the old base must never follow the new one.
        self._journal.unlink(missing_ok=True)
        os.replace(temp, self._base)
        fsync_dir(self.root)
        self._journal_bytes = 0

    def record(self, page_map: PageMap, sequence: int, changes: PageChanges) -> None:
        """Apply one sequence's changes to ``page_map`` and journal them (before the cursor moves)."""
        page_map.apply(sequence, changes)
        record = bytearray(
            _RECORD_HEAD.pack(_RECORD_MAGIC, sequence, changes.page_count, changes.low_water, len(changes.digests))
        )
        for page, digest in sorted(changes.digests.items()):
            record += _CHANGE.pack(page) + digest
        record += hashlib.blake2b(record, digest_size=_SEAL).digest()
        with self._journal.open("ab") as journal:
            journal.write(record)
        self._journal_bytes += len(record)
        if self._journal_bytes > max(_COMPACT_FLOOR, _COMPACT_RATIO * page_map.page_count * DIGEST_SIZE):
            self.reset(page_map)

    def sync(self) -> None:
        """Make the journal durable."""
        if self._journal.exists():
            with self._journal.open("ab") as journal:
                os.fsync(journal.fileno())

    @staticmethod
    def _checked_body(base: BinaryIO, sealed: str) -> Iterator[bytes]:
        """The base's digests, a chunk at a time; raises once the last chunk shows the body damaged."""
        check = hashlib.blake2b(digest_size=_SEAL)
        size = 0
        while chunk := base.read(_CHUNK):
            check.update(chunk)
            size += len(chunk)
            yield chunk
        if check.hexdigest() != sealed or size % DIGEST_SIZE:
            raise MapUnusableError("the page digest map is damaged (its checksum does not match)")

    def _replay(self, page_map: PageMap, sequence: int) -> int:
        """Apply the journal's records up to ``sequence``, one at a time; the byte length applied."""
        try:
            journal = self._journal.open("rb")
        except FileNotFoundError:
            return 0
        at = 0
        with journal:
            while len(head := journal.read(_RECORD_HEAD.size)) == _RECORD_HEAD.size:
                magic, seq, page_count, low_water, count = _RECORD_HEAD.unpack(head)
                if magic != _RECORD_MAGIC:
                    break
                rest = journal.read(count * _CHANGE_SIZE + _SEAL)
                if len(rest) != count * _CHANGE_SIZE + _SEAL:
                    break  # torn: a crash while appending
                body, seal = head + rest[:-_SEAL], rest[-_SEAL:]
                if hashlib.blake2b(body, digest_size=_SEAL).digest() != seal:
                    break
                if seq > sequence or seq != page_map.sequence + 1:
                    break  # past the cursor (it never moved there), or not this base's
                digests = {}
                for n in range(count):
                    offset = _RECORD_HEAD.size + n * _CHANGE_SIZE
                    (page,) = _CHANGE.unpack_from(body, offset)
                    digests[page] = bytes(body[offset + _CHANGE.size : offset + _CHANGE_SIZE])
                page_map.apply(seq, PageChanges(page_count, low_water, digests))
                at += len(body) + _SEAL
        return at
