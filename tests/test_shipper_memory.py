"""What keeps a shipper small for days: freed heap handed back between syncs (glibc), age loaded only to encrypt."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from walship import memory

glibc = pytest.mark.skipif(not memory.GLIBC, reason="glibc's malloc only")

# In a fresh process: 32 MiB of heap freed under a chunk still in use, which
# free() alone never gives back; RSS (MiB) before and after ``RELEASE``.
_FRAGMENTED = """
import json, sys
from pathlib import Path
from walship.memory import one_arena, release_free_memory
one_arena()
SETUP
def rss():
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024
chunks = [bytearray(4096) for _ in range(8192)]
kept = bytearray(4096)
del chunks
before = rss()
RELEASE
print(json.dumps([before, rss()]))
"""


def _rss_around(setup: str, release: str, cwd: Path) -> tuple[float, float]:
    code = _FRAGMENTED.replace("SETUP", setup).replace("RELEASE", release)
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, check=True, capture_output=True, text=True).stdout
    before, after = json.loads(out)
    return before, after


@glibc
def test_release_free_memory_gives_back_freed_heap(tmp_path: Path) -> None:
    before, after = _rss_around("", "assert release_free_memory()", tmp_path)
    assert before - after > 24
    kept_before, kept_after = _rss_around("", "pass", tmp_path)
    assert kept_before - kept_after < 1  # without the call glibc keeps it


@glibc
def test_the_shipper_releases_before_it_waits_for_commits(database: Path, tmp_path: Path) -> None:
    setup = f"""
import time
from walship.ship import ShipConfig, Shipper
from walship.spool import Spool
shipper = Shipper(Path({str(database)!r}), Spool(Path({str(tmp_path / "spool")!r})), ShipConfig(database_id="app.db"))
shipper.open()
"""
    before, after = _rss_around(setup, "shipper.wait_for_commits(0.0, time.monotonic())", tmp_path)
    assert before - after > 24


def test_a_shipper_without_recipients_never_loads_age(database: Path, tmp_path: Path) -> None:
    code = f"""
import sys
from pathlib import Path
from walship.ship import ShipConfig, Shipper
from walship.spool import Spool
shipper = Shipper(Path({str(database)!r}), Spool(Path({str(tmp_path / "spool")!r})), ShipConfig(database_id="app.db"))
shipper.open()
shipper.sync()
shipper.close()
print("pyrage" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"
