"""Test helpers: the snapshot pipeline as the tasks run it, and object tampering."""

import io
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from walship import codec, index, snapshot
from walship.catalog import describe_snapshot
from walship.layout import format_snapshot_key, new_generation
from walship.models import SnapshotInfo
from walship.sqlite import consistent_pages
from walship.storage import ObjectStore

ROOT = Path(__file__).resolve().parent.parent
WALSHIP = str(Path(sys.executable).parent / "walship")


def walship(*argv: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the CLI as an operator would, to completion."""
    return subprocess.run(
        [WALSHIP, *argv],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def take_and_upload(store: ObjectStore, database: Path, database_id: str = "app.db") -> SnapshotInfo:
    """The snapshot flow's steps, without Prefect: check, streamed snapshot, record."""
    snapshot.check_database_id(store, database_id)
    info = snapshot.stream_snapshot(store, database, database_id=database_id, level=codec.DEFAULT_LEVEL)
    index.add_snapshot(store, info)
    return info


def rewrite_object(store: ObjectStore, key: str, change: str) -> None:
    """Damage a stored object in place, keeping its metadata: 'flip' one byte or 'truncate' it."""
    metadata = store.head(key).metadata
    with store.open(key) as stream:
        data = bytearray(stream.read())
    if change == "flip":
        data[len(data) // 2] ^= 0x40
    else:
        del data[len(data) // 2 :]
    store.put_stream(key, io.BytesIO(bytes(data)), metadata=metadata)


def described_snapshot(generation: str, sequence: int, created_at: datetime, *, size: int, sha256: str) -> SnapshotInfo:
    """A snapshot description with no object behind it (for index and retention logic)."""
    return SnapshotInfo(
        key=format_snapshot_key(generation, sequence),
        generation=generation,
        sequence=sequence,
        created_at=created_at,
        raw_size=4096,
        compressed_size=size,
        sha256=sha256,
        page_size=4096,
        page_count=1,
        level=3,
        database_id="app.db",
    )


def single_stream_snapshot(store: ObjectStore, database: Path, *, level: int = 3) -> SnapshotInfo:
    """A streamed snapshot as walship wrote them before framed snapshots: one zstd frame, then its SHA-256 in a
    trailer (walship.trailer); such objects must go on restoring."""
    with consistent_pages(database) as pages:
        generation = new_generation(pages.taken_at)
        info = SnapshotInfo(
            key=format_snapshot_key(generation, 0),
            generation=generation,
            sequence=0,
            created_at=pages.taken_at,
            raw_size=pages.size,
            compressed_size=0,
            sha256="",
            sha256_at_end=True,
            page_size=pages.page_size,
            page_count=pages.page_count,
            level=level,
            database_id=database.name,
            envelope="zstd",
        )
        totals = codec.StreamTotals()
        chunks = codec.compress_blocks(pages.blocks(), totals, size=pages.size, level=level, trailer=True)
        stored = store.put_chunks(info.key, chunks, metadata=describe_snapshot(info))
    return info.model_copy(update={"compressed_size": stored.size, "sha256": totals.sha256})
