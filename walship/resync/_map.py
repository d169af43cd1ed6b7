"""The page digest map: every page's digest as the replica holds it at the spool's cursor.

On disk, in the spool's ``pages/`` directory:

    base      a header line (JSON: generation, sequence, page size, page
              count, the body's BLAKE2b) and the digests of pages 1..N
    journal   one record per sequence since the base: its ``PageChanges``,
              closed by a BLAKE2b of the record

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
from pathlib import Path

from walship._fs import fsync_dir
from walship.resync._digest import DIGEST_SIZE, PageChanges, state_digest, zero_digest

__all__ = ["MapUnusableError", "PageMap", "PageMapStore"]

_RECORD_HEAD = struct.Struct(">4sQIII")  # magic, sequence, page count, low water, changes
_RECORD_MAGIC = b"WSPJ"
_CHANGE = struct.Struct(">I")
_SEAL = 16
# The journal is folded into the base once it is this many times the base's size (and past a floor).
_COMPACT_RATIO = 2
_COMPACT_FLOOR = 4 << 20


class MapUnusableError(Exception):
    """The map on disk cannot say what the replica holds at the cursor; the message says why."""


class PageMap:
    """Every page's digest of the state after ``sequence`` of ``generation``."""

    def __init__(self, generation: str, sequence: int, page_size: int, digests: bytearray) -> None:
        self.generation, self.sequence, self.page_size = generation, sequence, page_size
        self.digests = digests

    @property
    def page_count(self) -> int:
        return len(self.digests) // DIGEST_SIZE

    def digest(self, page: int) -> bytes | None:
        if not 1 <= page <= self.page_count:
            return None
        return bytes(self.digests[(page - 1) * DIGEST_SIZE : page * DIGEST_SIZE])

    def state(self) -> str:
        return state_digest(self.page_size, self.digests)

    def apply(self, sequence: int, changes: PageChanges) -> None:
        """Replay one sequence's changes (see ``PageChanges``)."""
        if sequence != self.sequence + 1:
            raise MapUnusableError(f"the map is at sequence {self.sequence}, not {sequence - 1}")
        del self.digests[changes.low_water * DIGEST_SIZE :]
        if changes.page_count > self.page_count:
            self.digests += zero_digest(self.page_size) * (changes.page_count - self.page_count)
        for page, digest in changes.digests.items():
            if page <= changes.page_count:
                self.digests[(page - 1) * DIGEST_SIZE : page * DIGEST_SIZE] = digest
        del self.digests[changes.page_count * DIGEST_SIZE :]
        self.sequence = sequence


class PageMapStore:
    """The map of one spool, kept on disk beside its cursor."""

    def __init__(self, spool_root: Path) -> None:
        self.root = spool_root / "pages"
        self._base = self.root / "base"
        self._journal = self.root / "journal"
        self._journal_bytes = 0

    def load(self, generation: str, sequence: int) -> PageMap:
        """The map at ``sequence`` of ``generation``; journal records past it are dropped."""
        try:
            raw = self._base.read_bytes()
        except FileNotFoundError:
            raise MapUnusableError("the spool has no page digest map (first run of this walship version?)") from None
        head, _, body = raw.partition(b"\n")
        try:
            meta = json.loads(head)
            page_map = PageMap(meta["generation"], int(meta["sequence"]), int(meta["page_size"]), bytearray(body))
            sealed = meta["body"]
        except (ValueError, KeyError, TypeError):
            raise MapUnusableError("the page digest map's header is damaged") from None
        if hashlib.blake2b(body, digest_size=_SEAL).hexdigest() != sealed or len(body) % DIGEST_SIZE:
            raise MapUnusableError("the page digest map is damaged (its checksum does not match)")
        if page_map.generation != generation:
            raise MapUnusableError(f"the page digest map describes generation {page_map.generation}, not {generation}")
        kept = self._replay(page_map, sequence)
        if page_map.sequence != sequence:
            raise MapUnusableError(
                f"the page digest map reaches sequence {page_map.sequence}, the cursor {sequence} (a crash?)"
            )
        with self._journal.open("r+b") if self._journal.exists() else self._journal.open("wb") as journal:
            journal.truncate(kept)
        self._journal_bytes = kept
        return page_map

    def reset(self, page_map: PageMap) -> None:
        """Write ``page_map`` as the new base, durably, and start an empty journal."""
        self.root.mkdir(exist_ok=True)
        body = bytes(page_map.digests)
        meta = {
            "generation": page_map.generation,
            "sequence": page_map.sequence,
            "page_size": page_map.page_size,
            "page_count": page_map.page_count,
            "body": hashlib.blake2b(body, digest_size=_SEAL).hexdigest(),
        }
        temp = self.root / "base.tmp"
        with temp.open("wb") as out:
            out.write(json.dumps(meta).encode() + b"\n")
            out.write(body)
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
        self.root.mkdir(exist_ok=True)
        with self._journal.open("ab") as journal:
            journal.write(record)
        self._journal_bytes += len(record)
        if self._journal_bytes > max(_COMPACT_FLOOR, _COMPACT_RATIO * len(page_map.digests)):
            self.reset(page_map)

    def sync(self) -> None:
        """Make the journal durable."""
        if self._journal.exists():
            with self._journal.open("ab") as journal:
                os.fsync(journal.fileno())

    def _replay(self, page_map: PageMap, sequence: int) -> int:
        """Apply the journal's records up to ``sequence``; the byte length of what was applied."""
        try:
            data = self._journal.read_bytes()
        except FileNotFoundError:
            return 0
        at = 0
        while at + _RECORD_HEAD.size <= len(data):
            magic, seq, page_count, low_water, count = _RECORD_HEAD.unpack_from(data, at)
            end = at + _RECORD_HEAD.size + count * (_CHANGE.size + DIGEST_SIZE)
            if magic != _RECORD_MAGIC or end + _SEAL > len(data):
                break  # torn: a crash while appending
            if hashlib.blake2b(data[at:end], digest_size=_SEAL).digest() != data[end : end + _SEAL]:
                break
            if seq > sequence or seq != page_map.sequence + 1:
                break  # past the cursor (it never moved there), or not this base's
            digests = {}
            for n in range(count):
                offset = at + _RECORD_HEAD.size + n * (_CHANGE.size + DIGEST_SIZE)
                (page,) = _CHANGE.unpack_from(data, offset)
                digests[page] = data[offset + _CHANGE.size : offset + _CHANGE.size + DIGEST_SIZE]
            page_map.apply(seq, PageChanges(page_count, low_water, digests))
            at = end + _SEAL
        return at
