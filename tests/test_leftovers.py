"""Files that killed ``file://`` uploads leave in ``<replica>/.tmp``: status counts them, retention removes those
no live upload may still write (issue 21)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.helpers import ROOT, take_and_upload, walship
from walship.models import utcnow
from walship.retention import RetentionPolicy, apply_retention, plan_replica
from walship.storage import LocalStore

DIRECT: dict[str, str] = {"PREFECT_API_URL": ""}
_HOURS = 3600.0

_KILLED_UPLOAD = """
import os, signal, sys
from pathlib import Path
from walship.storage import LocalStore

def chunks():
    yield b"x" * (1 << 20)
    yield b"y" * (1 << 20)
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-upload, as by the OOM killer or kill -9
    yield b""

LocalStore(Path(sys.argv[1])).put_chunks("generations/killed/object", chunks(), metadata={})
"""


def killed_upload(root: Path) -> Path:
    """Run an upload in a process killed half-way; the temporary file it leaves."""
    before = set((root / ".tmp").glob("put-*")) if (root / ".tmp").exists() else set()
    process = subprocess.run([sys.executable, "-c", _KILLED_UPLOAD, str(root)], cwd=ROOT, check=False)
    assert process.returncode == -signal.SIGKILL
    [left] = set((root / ".tmp").glob("put-*")) - before
    assert left.stat().st_size == 2 << 20
    return left


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


class TestLeftovers:
    def test_status_counts_and_retention_removes_old_ones(self, database: Path, tmp_path: Path) -> None:
        root = tmp_path / "replica"
        replica = f"file://{root}"
        take_and_upload(LocalStore(root), database)
        old, fresh = killed_upload(root), killed_upload(root)
        age(old, 3 * _HOURS)

        status = walship("status", "--replica", replica, env=DIRECT)
        assert status.returncode == 0, status.stderr
        assert "leftovers:    2 files of interrupted uploads (4.0 MiB)" in status.stdout, status.stdout
        document = json.loads(walship("status", "--replica", replica, "--json", env=DIRECT).stdout)
        assert (document["leftover_count"], document["leftover_bytes"]) == (2, 4 << 20)

        dry = walship("retention", "--replica", replica, "--keep-last", "1", "--dry-run", env=DIRECT)
        assert dry.returncode == 0, dry.stderr
        assert f"would delete  .tmp/{old.name}" in dry.stdout, dry.stdout
        assert fresh.name not in dry.stdout
        assert old.exists()

        applied = walship("retention", "--replica", replica, "--keep-last", "1", env=DIRECT)
        assert applied.returncode == 0, applied.stderr
        assert not old.exists()
        assert fresh.exists()  # too young: an upload may still be writing it
        assert f"deleted 1 objects, {2 << 20} bytes freed" in applied.stdout, applied.stdout

    def test_a_live_upload_is_never_removed(self, database: Path, tmp_path: Path) -> None:
        root = tmp_path / "replica"
        store = LocalStore(root)
        take_and_upload(store, database)
        stalled, go_on = threading.Event(), threading.Event()

        def chunks() -> Iterator[bytes]:
            yield b"z" * 4096
            stalled.set()
            go_on.wait(timeout=60)
            yield b"z" * 4096

        upload = threading.Thread(target=lambda: store.put_chunks("generations/live/object", chunks(), metadata={}))
        upload.start()
        try:
            assert stalled.wait(timeout=30)
            [writing] = (root / ".tmp").glob("put-*")
            age(writing, 3 * _HOURS)  # stalled for hours, yet its process still holds it
            plan = plan_replica(store, RetentionPolicy(keep_last=1), utcnow())
            result = apply_retention(store, plan)
            assert result.ok, result
            assert writing.exists()
        finally:
            go_on.set()
            upload.join(timeout=30)
        assert store.head("generations/live/object").size == 8192
        assert list((root / ".tmp").glob("put-*")) == []
