"""Every command's exit status, in both modes: 0 done, 1 failed, 2 bad usage, with one plain error.

One table: each row is a command and an outcome, run once directly (no
Prefect API) and once as a flow run (the session's API): the same status
both times and, for a failure, the same error. The replicas rows read are
built once for the module; each run that writes gets its own directory.
"""

import re
import secrets
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest
from pyrage import x25519

from tests.helpers import single_stream_snapshot, walship
from tests.s3servers import MotoS3, s3_client
from tests.test_cli import assert_plain_error
from walship import index
from walship.storage import open_store


@dataclass(frozen=True)
class Scene:
    """What a row's command line is made of."""

    work: Path  # this row's own directory
    database: Path  # this row's own copy of a small WAL database
    good: str  # a shipped replica that restores and verifies
    damaged: str  # the same with one byte of its snapshot flipped
    headless: str  # the same without its snapshot object
    no_bucket: str  # an S3 replica in a bucket that does not exist
    aws: dict[str, str]
    versioned: str = ""  # the good replica's history shipped to a versioned S3 bucket
    encrypted: str = ""  # a snapshot of the database sealed with age
    single_stream: str = ""  # a snapshot as walship wrote them before framed snapshots: one zstd stream

    @property
    def empty(self) -> Path:
        (self.work / "empty").mkdir(exist_ok=True)
        return self.work / "empty"

    @property
    def fresh(self) -> str:
        return f"file://{self.work / 'replica'}"


# A --versions-at time after every replica here was written: the view holds what they hold now.
_NOW = "2099-01-01T00:00:00Z"


class Row(NamedTuple):
    command: str
    outcome: str
    argv: Callable[[Scene], list[str]]
    status: int
    error: str  # a fragment of the stderr line(s) of a failure; "" for success
    prepare: Callable[[Scene], None] | None = None  # run directly before the command, in its scene


def _kept_copy(scene: Scene) -> None:
    """A copy of the good replica at ``copy.db``, with the record a later update needs."""
    restored = walship("--no-prefect", "restore", "--replica", scene.good, "--output", str(scene.work / "copy.db"))
    assert restored.returncode == 0, restored.stderr


def _copy_argv(command: list[str], scene: Scene, replica: str = "") -> list[str]:
    return [*command, "--replica", replica or scene.good, "--output", str(scene.work / "copy.db")]


def _fleet_argv(scene: Scene, second: str) -> list[str]:
    """ship-many of the scene's database to a template and ``second``."""
    first = f"file://{scene.work}/replicas/{{name}}"
    return ["ship-many", str(scene.database), "--replica", first, "--replica", second]


def _query(replica: str, *options: str, sql: str = "SELECT count(*) FROM t") -> list[str]:
    return ["query", "--replica", replica, *options, sql]


ROWS = [
    Row("query", "success", lambda s: _query(s.good), 0, ""),
    Row("query", "bad-sql", lambda s: _query(s.good, sql="SELEC count(*) FROM t"), 2, "syntax error"),
    Row("query", "writes", lambda s: _query(s.good, sql="DELETE FROM t"), 2, "read-only"),
    Row("query", "no-replica", lambda s: _query(f"file://{s.work}/no/such/dir"), 1, "no replica"),
    Row("query", "damaged", lambda s: _query(s.damaged), 1, "frame 0"),
    Row("query", "encrypted", lambda s: _query(s.encrypted), 2, "encrypted"),
    Row("query", "single-stream", lambda s: _query(s.single_stream), 2, "one zstd stream"),
    Row("query", "usage", lambda s: _query(s.good, "--timestamp", "soon"), 2, "--timestamp"),
    Row("follow", "once", lambda s: _copy_argv(["follow", "--once"], s), 0, "", _kept_copy),
    Row("follow", "failure", lambda s: _copy_argv(["follow", "--once"], s, s.no_bucket), 1, "bucket"),
    Row("follow", "usage", lambda s: _copy_argv(["follow", "--interval", "0"], s), 2, "--interval"),
    Row(
        "follow",
        "not-a-copy",
        lambda s: ["follow", "--once", "--replica", s.good, "--output", str(s.database)],
        2,
        "holds no walship record",
    ),
    Row("restore", "delta", lambda s: [*_copy_argv(["restore"], s), "--delta"], 0, "", _kept_copy),
    Row("restore", "delta-usage", lambda s: [*_copy_argv(["restore"], s), "--delta", "--force"], 2, "--delta"),
    Row("snapshot", "success", lambda s: ["snapshot", str(s.database), "--replica", s.fresh], 0, ""),
    Row("snapshot", "failure", lambda s: ["snapshot", str(s.database), "--replica", s.no_bucket], 1, "bucket"),
    Row("snapshot", "usage", lambda s: ["snapshot", str(s.work / "nope.db"), "--replica", s.fresh], 2, "nope.db"),
    Row(
        "snapshot",
        "replica-under-a-file",
        lambda s: ["snapshot", str(s.database), "--replica", f"file://{s.database}/replica"],
        2,
        "cannot be a directory",
    ),
    Row("ship", "success", lambda s: ["ship", str(s.database), "--replica", s.fresh, "--once"], 0, ""),
    Row("ship", "failure", lambda s: ["ship", str(s.database), "--replica", s.no_bucket, "--once"], 1, "bucket"),
    Row("ship", "usage", lambda s: ["ship", str(s.database), "--replica", s.fresh, "--interval", "0"], 2, "--interval"),
    Row(
        "ship",
        "coalesce",
        lambda s: ["ship", str(s.database), "--replica", s.fresh, "--coalesce", "0"],
        2,
        "--coalesce",
    ),
    Row(
        "ship",
        "replica-under-a-file",
        lambda s: ["ship", str(s.database), "--replica", f"file://{s.database}/replica", "--once"],
        2,
        "cannot be a directory",
    ),
    Row(
        "ship",
        "two-replicas",
        lambda s: ["ship", str(s.database), "--replica", s.fresh, "--replica", f"file://{s.work}/second", "--once"],
        0,
        "",
    ),
    Row(
        "ship",
        "one-of-two-failing",
        lambda s: ["ship", str(s.database), "--replica", s.fresh, "--replica", s.no_bucket, "--once"],
        1,
        "bucket",
    ),
    Row(
        "ship",
        "same-replica-twice",
        lambda s: ["ship", str(s.database), "--replica", s.fresh, "--replica", s.fresh + "/", "--once"],
        2,
        "named twice",
    ),
    Row(
        "snapshot",
        "two-replicas",
        lambda s: ["snapshot", str(s.database), "--replica", s.fresh, "--replica", f"file://{s.work}/second"],
        0,
        "",
    ),
    Row(
        "restore",
        "two-replicas",
        lambda s: ["restore", "--replica", s.good, "--replica", s.fresh, "--output", str(s.work / "r.db")],
        2,
        "works on one replica",
    ),
    Row("restore", "success", lambda s: ["restore", "--replica", s.good, "--output", str(s.work / "r.db")], 0, ""),
    Row(
        "restore",
        "failure",
        lambda s: ["restore", "--replica", s.damaged, "--output", str(s.work / "r.db")],
        1,
        "checksum",
    ),
    Row(
        "restore",
        "usage",
        lambda s: ["restore", "--replica", s.good, "--output", str(s.work / "r.db"), "--timestamp", "soon"],
        2,
        "--timestamp",
    ),
    Row(
        "restore",
        "no-replica",
        lambda s: ["restore", "--replica", f"file://{s.work}/no/such/dir", "--output", str(s.work / "r.db")],
        1,
        "no replica",
    ),
    Row(
        "restore",
        "versions-at",
        lambda s: ["restore", "--replica", s.versioned, "--output", str(s.work / "r.db"), "--versions-at", _NOW],
        0,
        "",
    ),
    Row(
        "restore",
        "versions-at-usage",
        lambda s: ["restore", "--replica", s.good, "--output", str(s.work / "r.db"), "--versions-at", _NOW],
        2,
        "object versions",
    ),
    Row("status", "success", lambda s: ["status", "--replica", s.good], 0, ""),
    Row("status", "versions-at", lambda s: ["status", "--replica", s.versioned, "--versions-at", _NOW], 0, ""),
    Row("status", "failure", lambda s: ["status", "--replica", f"file://{s.work}/no/such/dir"], 1, "no replica"),
    Row("status", "usage", lambda s: ["status", "--replica", "ftp://host/x"], 2, "replica URL"),
    Row("status", "lock-days-usage", lambda s: ["status", "--replica", s.good, "--lock-days", "-1"], 2, "--lock-days"),
    Row("verify", "success", lambda s: ["verify", "--replica", s.good], 0, ""),
    Row("verify", "versions-at", lambda s: ["verify", "--replica", s.versioned, "--versions-at", _NOW], 0, ""),
    Row(
        "verify",
        "lock-failure",
        lambda s: ["verify", "--replica", s.good, "--require-lock-days", "1"],
        1,
        "object lock failed",
    ),
    Row("verify", "lock-usage", lambda s: ["verify", "--replica", s.good, "--require-lock-days", "-1"], 2, "lock-days"),
    Row("verify", "failure", lambda s: ["verify", "--replica", s.damaged], 1, "restore-newest failed"),
    Row("verify", "no-snapshot", lambda s: ["verify", "--replica", s.headless], 1, "failed"),
    Row("verify", "no-replica", lambda s: ["verify", "--replica", f"file://{s.work}/no/such/dir"], 1, "no replica"),
    Row("verify", "empty", lambda s: ["verify", "--replica", f"file://{s.empty}"], 1, "no replica"),
    Row(
        "verify",
        "usage",
        lambda s: ["verify", "--replica", s.good, "--workdir", str(s.work / "nope")],
        2,
        "--workdir",
    ),
    Row("retention", "success", lambda s: ["retention", "--replica", s.good, "--keep-last", "5", "--dry-run"], 0, ""),
    Row("retention", "failure", lambda s: ["retention", "--replica", s.no_bucket, "--keep-last", "5"], 1, "bucket"),
    Row(
        "retention",
        "no-replica",
        lambda s: ["retention", "--replica", f"file://{s.work}/no/such/dir", "--keep-last", "5"],
        1,
        "no replica",
    ),
    Row("retention", "usage", lambda s: ["retention", "--replica", s.good, "--keep-last", "-1"], 2, "--keep-last"),
    Row(
        "ship-many",
        "success",
        lambda s: ["ship-many", str(s.database), "--replica", f"file://{s.work}/replicas/{{name}}", "--once"],
        0,
        "",
    ),
    Row(
        "ship-many",
        "failure",
        lambda s: ["ship-many", str(s.database), "--replica", s.no_bucket.replace("/app?", "/{name}?"), "--once"],
        1,
        "1 of 1 databases failed",
    ),
    Row(
        "ship-many",
        "replica-is-the-database",
        lambda s: ["ship-many", str(s.database), "--replica", f"file://{s.work}/{{name}}", "--once"],
        2,
        "cannot be the database file",
    ),
    Row(
        "ship-many", "usage", lambda s: ["ship-many", str(s.work / "none-*.db"), "--replica", s.fresh], 2, "no database"
    ),
    Row(
        "ship-many",
        "two-replicas",
        lambda s: [*_fleet_argv(s, f"file://{s.work}/second"), "--once"],
        0,
        "",
    ),
    Row(
        "ship-many",
        "one-of-two-failing",
        lambda s: [*_fleet_argv(s, s.no_bucket.replace("/app?", "/{name}?")), "--once"],
        1,
        "1 of 1 databases failed",
    ),
    Row(
        "ship-many",
        "same-replica-twice",
        lambda s: [*_fleet_argv(s, f"file://{s.work}/replicas/"), "--once"],
        2,
        "named by two",
    ),
    Row(
        "ship-many",
        "coalesce",
        lambda s: ["ship-many", str(s.database), "--replica", f"file://{s.work}/r/{{name}}", "--coalesce", "-1"],
        2,
        "--coalesce",
    ),
]


def _small_database(path: Path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    connection.executemany("INSERT INTO t (body) VALUES (?)", [(f"row {n}",) for n in range(2000)])
    connection.commit()
    connection.close()


def _flip_snapshot_byte(replica: Path) -> None:
    [snapshot] = (replica / "generations").glob("*/snapshots/*.sqlite.zst")
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0x40
    snapshot.write_bytes(bytes(data))


def _drop_snapshot(replica: Path) -> None:
    [snapshot] = (replica / "generations").glob("*/snapshots/*.sqlite.zst")
    key = snapshot.relative_to(replica).as_posix()
    snapshot.unlink()
    (replica / ".meta" / f"{key}.json").unlink()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The source database and three replicas of it, built once: good, damaged, headless."""
    base = tmp_path_factory.mktemp("exit-status")
    source = base / "app.db"
    _small_database(source)
    good = base / "good"
    direct = {"PREFECT_API_URL": ""}
    for _ in range(2):  # a snapshot, then a segment after it
        shipped = walship("ship", str(source), "--replica", f"file://{good}", "--once", env=direct)
        assert shipped.returncode == 0, shipped.stderr
        with sqlite3.connect(source) as connection:
            connection.execute("INSERT INTO t (body) VALUES ('after the snapshot')")
    shutil.copytree(good, base / "damaged")
    _flip_snapshot_byte(base / "damaged")
    shutil.copytree(good, base / "headless")
    _drop_snapshot(base / "headless")
    # Sealed for an identity nobody keeps: the encrypted replica is only ever refused here.
    recipient = str(x25519.Identity.generate().to_public())
    sealed = walship("snapshot", str(source), "--replica", f"file://{base / 'encrypted'}", "--age-recipient", recipient)
    assert sealed.returncode == 0, sealed.stderr
    single = open_store(f"file://{base / 'single-stream'}")
    index.add_snapshot(single, single_stream_snapshot(single, source))
    return {
        "source": source,
        "good": good,
        "damaged": base / "damaged",
        "headless": base / "headless",
        "encrypted": base / "encrypted",
        "single-stream": base / "single-stream",
    }


@pytest.fixture(scope="module")
def versioned(replicas: dict[str, Path], moto_server: MotoS3) -> str:
    """The good replica's database shipped once to a versioned bucket on moto."""
    bucket = f"walship-exit-versioned-{secrets.token_hex(4)}"
    client = s3_client(moto_server)
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    url = f"s3://{bucket}/app?endpoint={moto_server.endpoint}"
    aws = {"AWS_ACCESS_KEY_ID": moto_server.access_key, "AWS_SECRET_ACCESS_KEY": moto_server.secret_key}
    # A copy of its own, so its own spool: the source's already holds the good replica's cursor.
    source = replicas["source"].with_name("versioned.db")
    shutil.copyfile(replicas["source"], source)
    shipped = walship("ship", str(source), "--replica", url, "--once", env={"PREFECT_API_URL": "", **aws})
    assert shipped.returncode == 0, shipped.stderr
    return url


@pytest.fixture
def scenes(replicas: dict[str, Path], versioned: str, moto_server: MotoS3, tmp_path: Path) -> Callable[[str], Scene]:
    """A scene per mode: each its own directory and database, the shared replicas."""

    def scene(mode: str) -> Scene:
        work = tmp_path / mode
        work.mkdir()
        database = work / "app.db"
        shutil.copyfile(replicas["source"], database)
        return Scene(
            work=work,
            database=database,
            good=f"file://{replicas['good']}",
            damaged=f"file://{replicas['damaged']}",
            headless=f"file://{replicas['headless']}",
            no_bucket=f"s3://walship-no-such-bucket/app?endpoint={moto_server.endpoint}",
            versioned=versioned,
            encrypted=f"file://{replicas['encrypted']}",
            single_stream=f"file://{replicas['single-stream']}",
            aws={
                "AWS_ACCESS_KEY_ID": moto_server.access_key,
                "AWS_SECRET_ACCESS_KEY": moto_server.secret_key,
                "AWS_DEFAULT_REGION": moto_server.region,
            },
        )

    return scene


@pytest.mark.parametrize("row", ROWS, ids=[f"{row.command}-{row.outcome}" for row in ROWS])
def test_exit_status(row: Row, scenes: Callable[[str], Scene], api_env: dict[str, str]) -> None:
    """Direct, then as a flow run: the row's status each time, and for a failure the same output and plain error."""
    errors = {}
    for mode, env in (("direct", {"PREFECT_API_URL": ""}), ("flow", api_env)):
        scene = scenes(mode)
        if row.prepare is not None:
            row.prepare(scene)
        result = walship(*row.argv(scene), env={**scene.aws, **env})
        assert result.returncode == row.status, (mode, result.stderr)
        assert "Traceback" not in result.stderr, (mode, result.stderr)
        if row.status != 0:
            lines = result.stderr.strip().splitlines()
            assert 1 <= len(lines) <= 2, (mode, result.stderr)
            assert lines[0].startswith("walship: "), (mode, result.stderr)
            assert row.error in result.stderr, (mode, result.stderr)
            # What a failure printed, apart from where it ran and how long it took.
            printed = f"{result.stdout}\n{result.stderr}".replace(str(scene.work), "<work>")
            # Durations and generation names (a UTC time and random digits) differ from run to run.
            printed = re.sub(r"\b\d{8}T\d{6}Z-[0-9a-f]{8}\b", "<generation>", printed)
            errors[mode] = re.sub(r"\d+(\.\d+)? s\b", "N s", printed)
    assert errors.get("direct") == errors.get("flow")


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (["status"], "no replica"),
        (["verify"], "no replica"),
        (["restore", "--output"], "no replica"),
        (["retention", "--keep-last", "1"], "no replica"),
        (["query", "SELECT 1"], "no replica"),
    ],
    ids=["status", "verify", "restore", "retention", "query"],
)
def test_read_only_commands_create_nothing_where_no_replica_is(command: list[str], error: str, tmp_path: Path) -> None:
    """A directory that holds no replica (here, someone's notes) is left exactly as it was."""
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("not a replica\n")
    if command[-1] == "--output":
        command = [*command, str(tmp_path / "restored.db")]
    result = walship(*command, "--replica", f"file://{other}", env={"PREFECT_API_URL": ""})
    assert_plain_error(result, 1, error)
    assert sorted(p.relative_to(other).as_posix() for p in other.rglob("*")) == ["todo.txt"]
