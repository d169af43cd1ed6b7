"""Issue 21: a read-only or full restore target, and a read-only database, are named and refused, never half done.

Tests may run as root, whom directory permissions do not stop, so the places
are real filesystems that refuse everyone: a tmpfs mounted read-only, or one
too small for the restored database. Each is mounted in a user and mount
namespace of its own (``unshare``), which an unprivileged user may create and
which takes the mount with it when the command ends. What the command left
on the mount is copied out before that, for the test to look at.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.workload import create_database
from tests.helpers import ROOT, WALSHIP, take_and_upload
from tests.test_cli import assert_plain_error
from walship.storage import open_store

DIRECT = {"PREFECT_API_URL": ""}

# Mount a tmpfs, put the seed's files on it, remount it as asked, bind a file
# from elsewhere over the one of its name on the mount, run the command, and
# copy what the mount holds out to $KEEP: the mount ends with the namespace.
_SCRIPT = """
set -e
mount -t tmpfs -o "$OPTIONS" tmpfs "$MOUNT"
cp -a "$SEED"/. "$MOUNT"/
if [ -n "$REMOUNT" ]; then mount -o "remount,$REMOUNT" "$MOUNT"; fi
if [ -n "$BIND" ]; then mount --bind "$BIND" "$MOUNT/$(basename "$BIND")"; fi
set +e
"$@"
status=$?
cp -a "$MOUNT"/. "$KEEP"/
exit $status
"""


def _namespaces_work() -> bool:
    try:
        probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], check=False)
    except FileNotFoundError:
        return False
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _namespaces_work(), reason="needs unshare and user namespaces to mount a tmpfs")


class Mount:
    """A directory that a tmpfs covers while one command runs; ``seed`` is what it holds before."""

    def __init__(self, tmp_path: Path, options: str = "size=4m", remount: str = "", bind: Path | None = None) -> None:
        self.path = tmp_path / "mount"
        self.seed = tmp_path / "seed"
        self.kept = tmp_path / "kept"
        for directory in (self.path, self.seed, self.kept):
            directory.mkdir()
        self.options, self.remount, self.bind = options, remount, bind

    def walship(self, *argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """Run the CLI with the mount in place; afterwards ``kept`` holds what the mount held."""
        variables = {
            "MOUNT": str(self.path),
            "SEED": str(self.seed),
            "KEEP": str(self.kept),
            "OPTIONS": self.options,
            "REMOUNT": self.remount,
            "BIND": str(self.bind or ""),
        }
        command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", _SCRIPT, "sh", WALSHIP, *argv]
        return subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, **variables, **env},
            timeout=300,
        )

    def left(self) -> list[str]:
        return sorted(path.name for path in self.kept.iterdir())


@pytest.fixture
def replica(database: Path, tmp_path: Path) -> str:
    url = f"file://{tmp_path / 'replica'}"
    take_and_upload(open_store(url), database)
    return url


def a_small_database(path: Path) -> None:
    create_database(path, 64 << 10, seed=3)


class TestRestoreTarget:
    """``restore --output`` on a read-only or full filesystem."""

    def test_read_only_directory(self, replica: str, tmp_path: Path) -> None:
        mount = Mount(tmp_path, remount="ro")
        result = mount.walship("restore", "--replica", replica, "--output", str(mount.path / "x.db"), env=DIRECT)
        assert_plain_error(result, 2, f"{mount.path} is not writable")
        assert mount.left() == []

    def test_read_only_directory_keeps_the_database_there(self, replica: str, tmp_path: Path) -> None:
        mount = Mount(tmp_path, remount="ro")
        a_small_database(mount.seed / "live.db")
        before = (mount.seed / "live.db").read_bytes()
        output = str(mount.path / "live.db")
        result = mount.walship("restore", "--replica", replica, "--output", output, "--force", env=DIRECT)
        assert_plain_error(result, 2, "not writable")
        assert mount.left() == ["live.db"]
        assert (mount.kept / "live.db").read_bytes() == before

    def test_full_filesystem(self, replica: str, tmp_path: Path) -> None:
        mount = Mount(tmp_path, options="size=1m")
        result = mount.walship("restore", "--replica", replica, "--output", str(mount.path / "x.db"), env=DIRECT)
        assert_plain_error(result, 1, "no room")
        assert mount.left() == []

    def test_full_filesystem_never_replaces_the_database(self, replica: str, tmp_path: Path) -> None:
        mount = Mount(tmp_path, options="size=1m")
        a_small_database(mount.seed / "live.db")
        before = (mount.seed / "live.db").read_bytes()
        output = str(mount.path / "live.db")
        result = mount.walship("restore", "--replica", replica, "--output", output, "--force", env=DIRECT)
        assert_plain_error(result, 1, "no room")
        assert mount.left() == ["live.db"]
        assert (mount.kept / "live.db").read_bytes() == before

    def test_full_filesystem_as_a_flow(self, replica: str, tmp_path: Path, api_env: dict[str, str]) -> None:
        mount = Mount(tmp_path, options="size=1m")
        result = mount.walship("restore", "--replica", replica, "--output", str(mount.path / "x.db"), env=api_env)
        assert_plain_error(result, 1, "no room")
        assert mount.left() == []


class TestReadOnlyDatabase:
    """``snapshot`` and ``ship`` of a database SQLite cannot open for writing (nor create its -wal and -shm)."""

    @pytest.fixture
    def mount(self, database: Path, tmp_path: Path) -> Mount:
        mount = Mount(tmp_path, options="size=16m", remount="ro")
        shutil.copyfile(database, mount.seed / "app.db")
        return mount

    def test_snapshot(self, mount: Mount, tmp_path: Path) -> None:
        replica = tmp_path / "out"
        result = mount.walship("snapshot", str(mount.path / "app.db"), "--replica", f"file://{replica}", env=DIRECT)
        assert_plain_error(result, 2, "not writable")
        assert not replica.exists()

    def test_ship(self, mount: Mount, tmp_path: Path) -> None:
        replica = tmp_path / "out"
        result = mount.walship(
            "ship",
            str(mount.path / "app.db"),
            "--replica",
            f"file://{replica}",
            "--once",
            "--spool",
            str(tmp_path / "spool"),
            env=DIRECT,
        )
        assert_plain_error(result, 2, "not writable")
        assert not replica.exists()
        assert mount.left() == ["app.db"]

    def test_ship_from_a_read_only_directory(self, database: Path, tmp_path: Path) -> None:
        """The database file itself is writable, but its -wal and -shm cannot be created beside it."""
        mount = Mount(tmp_path, remount="ro", bind=database)
        (mount.seed / database.name).touch()
        replica = tmp_path / "out"
        argv = ("ship", str(mount.path / database.name), "--replica", f"file://{replica}", "--once")
        result = mount.walship(*argv, "--spool", str(tmp_path / "spool"), env=DIRECT)
        assert_plain_error(result, 2, f"{mount.path} is not writable")
        assert "-wal" in result.stderr
        assert not replica.exists()
