"""A ``file://`` replica the operating system refuses: one plain line naming the path, never a raw OSError.

Real refusals, made for each test: a read-only and a full tmpfs mounted for
it (skipped, saying why, when the test cannot mount), and a directory this
user may not write, the CLI run without the capabilities that let root write
anywhere. A replica path under a regular file is bad input (exit 2:
tests/test_exit_status.py); these are the storage's failures (exit 1).
"""

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import WALSHIP, walship
from tests.test_cli import assert_plain_error

DIRECT = {"PREFECT_API_URL": ""}


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=False, capture_output=True, text=True, timeout=60)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``tmpfs(options)``: a small tmpfs mounted for this test alone, unmounted after it."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        tried = _run("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point))
        if tried.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {tried.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        if _run("umount", str(point)).returncode != 0:
            _run("umount", "-l", str(point))


def _fill(disk: Path) -> None:
    """Write to ``disk`` until it has not one byte left."""
    fd = os.open(disk / "ballast", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\xa5" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("command", ["snapshot", "ship"])
def test_a_read_only_replica_is_a_storage_failure(command: str, database: Path, tmpfs: Callable[[str], Path]) -> None:
    replica = tmpfs("ro,size=1m") / "replica"
    argv = [command, str(database), "--replica", f"file://{replica}", *(["--once"] if command == "ship" else [])]
    result = walship(*argv, env=DIRECT)
    assert_plain_error(result, 1, "read-only file system")
    assert str(replica) in result.stderr


@pytest.mark.parametrize("command", ["snapshot", "ship"])
def test_a_full_replica_disk_is_a_storage_failure(command: str, database: Path, tmpfs: Callable[[str], Path]) -> None:
    disk = tmpfs("size=256k")
    _fill(disk)
    replica = disk / "replica"
    argv = [command, str(database), "--replica", f"file://{replica}", *(["--once"] if command == "ship" else [])]
    result = walship(*argv, env=DIRECT)
    assert_plain_error(result, 1, "no space left")
    assert str(replica) in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["snapshot", "{database}", "--replica", "{replica}"],
        ["ship", "{database}", "--replica", "{replica}", "--once"],
        ["status", "--replica", "{replica}"],
        ["retention", "--replica", "{replica}", "--keep-last", "1"],
    ],
    ids=["snapshot", "ship", "status", "retention"],
)
def test_a_replica_this_user_may_not_use_is_a_storage_failure(argv: list[str], database: Path, tmp_path: Path) -> None:
    if shutil.which("capsh") is None:
        pytest.skip("capsh is not installed: root cannot be made to respect a directory's permissions")
    good = tmp_path / "good"
    assert walship("snapshot", str(database), "--replica", f"file://{good}", env=DIRECT).returncode == 0
    locked = tmp_path / "locked"
    good.rename(locked)
    locked.chmod(0o000)
    filled = [a.format(database=database, replica=f"file://{locked}") for a in argv]
    try:
        # Without these two capabilities root is held to the permissions like any user.
        result = subprocess.run(
            ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", '"$@"', "walship", WALSHIP, *filled],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **DIRECT},
        )
    finally:
        locked.chmod(0o755)
    assert_plain_error(result, 1, "permission denied")
    assert str(locked) in result.stderr
