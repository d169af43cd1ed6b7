"""The operator CLI, run as operators run it: ``.venv/bin/walship`` in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.workload import content_digest
from tests.helpers import rewrite_object, walship
from tests.s3servers import _S3Server
from walship.storage import open_store


def assert_plain_error(result: subprocess.CompletedProcess[str], status: int, fragment: str) -> None:
    """A documented exit status and one or two plain lines on stderr, no traceback."""
    assert result.returncode == status, result.stderr
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, result.stderr
    assert lines[0].startswith("walship: ")
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


class TestBadUsage:
    """Bad input exits 2 at once, names the problem and the fix, and writes nothing."""

    def test_missing_database(self, tmp_path: Path) -> None:
        result = walship("snapshot", str(tmp_path / "nope.db"), "--replica", f"file://{tmp_path}/r")
        assert_plain_error(result, 2, "does not exist")
        assert not (tmp_path / "r").exists()

    def test_not_a_database(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.txt"
        path.write_text("not sqlite\n")
        result = walship("snapshot", str(path), "--replica", f"file://{tmp_path}/r")
        assert_plain_error(result, 2, "not a SQLite database")

    @pytest.mark.parametrize("url", ["s3://Bad_Bucket/x", "file://relative", "ftp://host/x"])
    def test_malformed_url(self, database: Path, url: str) -> None:
        assert_plain_error(walship("snapshot", str(database), "--replica", url), 2, "replica URL")

    def test_level_out_of_range(self, database: Path, tmp_path: Path) -> None:
        result = walship("snapshot", str(database), "--replica", f"file://{tmp_path}/r", "--level", "30")
        assert_plain_error(result, 2, "1 to 22")

    def test_restore_onto_existing_file(self, tmp_path: Path) -> None:
        target = tmp_path / "live.db"
        target.write_bytes(b"precious")
        result = walship("restore", "--replica", f"file://{tmp_path}/r", "--output", str(target))
        assert_plain_error(result, 2, "--force")
        assert target.read_bytes() == b"precious"

    def test_bad_timestamp(self, tmp_path: Path) -> None:
        result = walship(
            "restore", "--replica", f"file://{tmp_path}/r", "--output", str(tmp_path / "o.db"), "--timestamp", "soon"
        )
        assert_plain_error(result, 2, "ISO 8601")

    def test_snapshot_into_a_shipped_replica(self, database: Path, tmp_path: Path) -> None:
        """A standalone snapshot would hide the shipper's newer WAL from restores: refused, nothing written."""
        from walship.lease import acquire_lease, holder_for

        store = open_store(f"file://{tmp_path}/r")
        acquire_lease(store, holder_for(database))
        before = sorted(o.key for o in store.list())
        result = walship("snapshot", str(database), "--replica", f"file://{tmp_path}/r")
        assert_plain_error(result, 2, "fed by 'walship ship'")
        assert sorted(o.key for o in store.list()) == before

    def test_unknown_command(self) -> None:
        assert_plain_error(walship("frobnicate"), 2, "invalid choice")


@pytest.fixture
def api_env(prefect_api: str, replica_url: str) -> dict[str, str]:
    """Run CLI flows against the session's Prefect API instead of a new ephemeral server each time."""
    return {"PREFECT_API_URL": prefect_api}


class TestFlowsFromTheCLI:
    """snapshot, restore and status end to end, on every backend."""

    def test_snapshot_status_restore(
        self, api_env: dict[str, str], replica_url: str, database: Path, tmp_path: Path
    ) -> None:
        snap = walship("snapshot", str(database), "--replica", replica_url, "--level", "6", env=api_env)
        assert snap.returncode == 0, snap.stderr
        assert snap.stdout.startswith("snapshot generations/")

        status = walship("status", "--replica", replica_url, "--json", env=api_env)
        assert status.returncode == 0, status.stderr
        document = json.loads(status.stdout)
        assert (document["snapshot_count"], document["database_id"], document["index"]) == (1, "app.db", "ok")
        assert document["newest"]["level"] == 6

        output = tmp_path / "restored.db"
        restored = walship("restore", "--replica", replica_url, "--output", str(output), env=api_env)
        assert restored.returncode == 0, restored.stderr
        assert content_digest(output) == content_digest(database)

    def test_damaged_snapshot_exits_1_and_writes_nothing(
        self, api_env: dict[str, str], replica_url: str, database: Path, tmp_path: Path
    ) -> None:
        assert walship("snapshot", str(database), "--replica", replica_url, env=api_env).returncode == 0
        store = open_store(replica_url)
        [key] = [o.key for o in store.list("generations/")]
        rewrite_object(store, key, "truncate")
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        result = walship("restore", "--replica", replica_url, "--output", str(out_dir / "r.db"), env=api_env)
        assert_plain_error(result, 1, key)
        assert os.listdir(out_dir) == []


class TestStorageFailures:
    """Storage that refuses exits 1 with the reason."""

    def test_missing_bucket(self, prefect_api: str, moto_server: _S3Server, database: Path) -> None:
        env = {"PREFECT_API_URL": prefect_api, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
        url = f"s3://walship-no-bucket/x?endpoint={moto_server.endpoint}"
        assert_plain_error(walship("snapshot", str(database), "--replica", url, env=env), 1, "does not exist")

    @pytest.mark.seaweedfs
    def test_wrong_credentials(self, prefect_api: str, seaweed_server: _S3Server, database: Path) -> None:
        env = {
            "PREFECT_API_URL": prefect_api,
            "AWS_ACCESS_KEY_ID": seaweed_server.access_key,
            "AWS_SECRET_ACCESS_KEY": "wrong-secret",
        }
        url = f"s3://walship-creds/x?endpoint={seaweed_server.endpoint}"
        result = walship("snapshot", str(database), "--replica", url, env=env)
        assert_plain_error(result, 1, "check the AWS credentials")
        assert "wrong-secret" not in result.stderr


class TestProcess:
    """What a command leaves the interpreter to tear down."""

    def test_what_a_command_built_is_frozen_before_exit(self, tmp_path: Path) -> None:
        """Everything alive when ``main`` returns is out of the collector's walks, teardown's included."""
        replica = f"file://{tmp_path}/r"
        probe = (
            "import gc, sys\n"
            "from walship_cli import main\n"
            f"code = main(['restore', '--replica', {replica!r}, '--output', {str(tmp_path / 'o.db')!r}])\n"
            "print(code, gc.get_freeze_count(), len(gc.get_objects()))\n"
        )
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        code, frozen, tracked = map(int, done.stdout.split())
        assert code == 1  # an empty replica: nothing to restore, the usual failure path
        assert frozen > 30_000  # what a restore from a local directory imports and builds: about 36,000
        assert tracked < 1_000
