"""Test helpers: the snapshot pipeline as the tasks run it, and object tampering."""

import io
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from walship import codec, index, snapshot
from walship.layout import format_snapshot_key
from walship.models import SnapshotInfo
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
