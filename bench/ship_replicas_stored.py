"""What each replica of bench.ship_replicas holds, and since when: the markers, the raw WAL, the generations.

When an object was complete in storage: an S3 replica's from the bench's moto server (its response
written, as in bench.ship_lag); a file:// replica's from its ctime, set by the rename that puts it in place.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from bench.ship_lag_s3 import RecordingS3
from bench.ship_lag_writer import TOKEN_PATTERN

__all__ = ["Replica", "received"]

_ZSTD = b"\x28\xb5\x2f\xfd"


@dataclass
class Replica:
    name: str
    url: str
    path: Path | None = None  # a file:// replica's directory
    bucket: str = ""  # an S3 replica's bucket and prefix on the bench's moto server
    prefix: str = ""

    def objects(self, server: RecordingS3) -> list[tuple[int, str, Callable[[], bytes]]]:
        """Each object under generations/ (each PUT, retries too): when it was complete in storage, its key,
        its bytes."""
        if self.path is not None:
            # The kernel's coarse clock sets ctime: up to a tick (4 ms) before the rename returned.
            found = [(p.stat().st_ctime_ns, p, p.read_bytes) for p in (self.path / "generations").rglob("*.zst")]
            return [(ns, p.relative_to(self.path).as_posix(), read) for ns, p, read in found]
        under = f"{self.prefix}/generations/"
        stored = [o for o in server.objects(self.bucket) if o.key.startswith(under)]
        return [(o.done_ns, o.key.removeprefix(f"{self.prefix}/"), o.read) for o in stored]

    def snapshotted(self, server: RecordingS3) -> bool:
        if self.path is not None:
            return any((self.path / "generations").glob("*/snapshots/*.zst"))
        return any(o.key.startswith(f"{self.prefix}/generations/") and "/snapshots/" in o.key for o in server.log)


def received(replica: Replica, server: RecordingS3) -> dict[str, Any]:
    """What ``replica`` holds: when each marker was first in storage, the raw WAL bytes its segments hold
    (each key once), its generations."""
    durable: dict[str, int] = {}
    keys: set[str] = set()
    wal_bytes = 0
    for done_ns, key, read in sorted(replica.objects(server), key=lambda o: o[0]):
        data = read()
        if data[:4] == _ZSTD:  # the body is the first frame; the description after it is a skippable frame
            data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        if key.endswith(".wal.zst") and key not in keys:
            wal_bytes += len(data)
        keys.add(key)
        for token in re.findall(TOKEN_PATTERN, data):
            durable.setdefault(token.decode(), done_ns)
    generations = sorted({key.split("/")[1] for key in keys})
    return {"durable": durable, "wal_bytes": wal_bytes, "objects": len(keys), "generations": generations}
