"""``walship ship-many`` with several ``--replica`` templates: each database captured once, shipped to one replica
per template.

Writer processes commit while one process ships the fleet; every database then restores equal to its source from
each of its replicas, which share one generation (one capture). A replica down at the end fails the command, naming
it, once the others are finished, and the next window sends it the rest; meanwhile a database whose replica is down
is not parked, since its end would stop the others' shipping too. Templates that are bad, or that name one place
twice, are refused before anything is written.
"""

import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName

from bench.workload import content_digest, database_copies
from tests.conftest import use_credentials
from tests.helpers import ROOT, WALSHIP, walship
from tests.prefect_api import artifacts
from tests.s3servers import MotoS3
from tests.shipping import WriterGroup, app_commits, replica_generations, restore, wait_until
from tests.tcpproxy import TcpProxy
from walship.errors import UsageError
from walship.fleet import plan_fleet, replica_for
from walship.storage import open_store

DIRECT: dict[str, str] = {"PREFECT_API_URL": ""}


@pytest.fixture
def writers() -> Iterator[list[WriterGroup]]:
    running: list[WriterGroup] = []
    yield running
    for group in running:
        group.stop()


def _ship_many(pattern: str, templates: list[str], *options: str, env: dict[str, str]) -> subprocess.Popen[str]:
    replicas = [arg for template in templates for arg in ("--replica", template)]
    return subprocess.Popen(
        [WALSHIP, "ship-many", pattern, *replicas, *options],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _assert_each_replica_restores(databases: list[Path], templates: list[str], work: Path) -> None:
    """Every database equal to its source from each of its replicas, all of them in one generation."""
    for db in databases:
        urls = [replica_for(template, db) for template in templates]
        generations = [replica_generations(url) for url in urls]
        assert len(generations[0]) == 1, (db, generations)
        assert all(g == generations[0] for g in generations), ("one capture, one generation", db, generations)
        for url in urls:
            output = work / f"restored-{secrets.token_hex(4)}.db"
            result = restore(url, output, DIRECT)
            assert result.returncode == 0, (url, result.stderr)
            assert content_digest(output) == content_digest(db), url


def _rows(stdout: str) -> dict[str, str]:
    """Each database's line, by database."""
    return {line.split()[1]: line for line in stdout.splitlines() if len(line.split()) > 1 and "/" in line.split()[1]}


class TestPlan:
    """Patterns and templates become each database's replicas, in the templates' order."""

    def test_one_replica_per_template(self, tmp_path: Path) -> None:
        for name in ("b.db", "a.db"):
            (tmp_path / name).write_bytes(b"x")
        members, _ = plan_fleet([f"{tmp_path}/*.db"], ["file:///one/{name}", "s3://bucket/two"])
        assert [m.replicas for m in members] == [
            ["file:///one/a.db", "s3://bucket/two/a.db"],
            ["file:///one/b.db", "s3://bucket/two/b.db"],
        ]
        [single], _ = plan_fleet([str(tmp_path / "a.db")], "file:///one/{name}")
        assert single.replicas == ["file:///one/a.db"]
        assert single.replica == "file:///one/a.db"

    def test_one_place_named_twice_is_refused(self, tmp_path: Path) -> None:
        """By two templates for one database, or for two databases."""
        with pytest.raises(UsageError, match="named by two --replica templates"):
            plan_fleet([str(tmp_path / "a.db")], ["file:///r/{name}", "file:///r/"])
        with pytest.raises(UsageError, match=re.escape("would share replica file:///r/a.db-copy")):
            plan_fleet(
                [str(tmp_path / "a.db"), str(tmp_path / "a.db-copy")], ["file:///r/{name}", "file:///r/{name}-copy"]
            )


@pytest.mark.parametrize(
    ("second", "error"),
    [
        ("ftp://host/{name}", "no supported scheme"),
        ("file://{dbs}/{name}", "cannot be the database file"),
        ("file://{work}/r/", "named by two --replica templates"),
        ("file://{work}/r/{name}-copy", "would share replica"),
    ],
    ids=["bad-scheme", "the-database-itself", "one-place-twice", "shared-by-two-databases"],
)
def test_a_bad_template_is_refused_before_any_work(
    second: str, error: str, small_database: Path, tmp_path: Path
) -> None:
    databases = database_copies(tmp_path / "dbs", small_database, 2)
    databases[1].rename(databases[1].with_name(f"{databases[0].name}-copy"))
    first = f"file://{tmp_path}/r/{{name}}"
    template = second.replace("{dbs}", str(tmp_path / "dbs")).replace("{work}", str(tmp_path))
    result = walship("ship-many", str(tmp_path / "dbs" / "*"), "--replica", first, "--replica", template, env=DIRECT)
    assert result.returncode == 2, result.stderr
    assert error in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr
    assert not (tmp_path / "r").exists()
    assert sorted(p.name for p in (tmp_path / "dbs").iterdir()) == ["db0000.db", "db0000.db-copy"]


def test_three_databases_to_a_directory_and_a_bucket(
    small_database: Path,
    tmp_path: Path,
    moto_server: MotoS3,
    monkeypatch: pytest.MonkeyPatch,
    writers: list[WriterGroup],
) -> None:
    """Direct mode: a file:// template and an S3 base; two of three databases written all along."""
    use_credentials(monkeypatch, moto_server)
    bucket = f"walship-fleet-{secrets.token_hex(4)}"
    moto_server.create_bucket(bucket)
    databases = database_copies(tmp_path / "dbs", small_database, 3)
    templates = [f"file://{tmp_path}/local/{{name}}", f"s3://{bucket}/fleet?endpoint={moto_server.endpoint}"]
    writers.extend(WriterGroup(db, [1], rate=50) for db in databases[:2])
    ship = _ship_many(str(tmp_path / "dbs" / "*.db"), templates, "--duration", "10", env=DIRECT)
    try:
        urls = [replica_for(t, db) for t in templates for db in databases]
        wait_until(lambda: all(replica_generations(url) for url in urls), "every replica's generation", 90)
        time.sleep(2)
        for group in writers:
            group.stop()  # like a crash, mid-window: the final capture must still get every commit
        writers.clear()
        stdout, stderr = ship.communicate(timeout=180)
    finally:
        if ship.poll() is None:
            ship.kill()
    assert ship.returncode == 0, stderr
    rows = _rows(stdout)
    for db in databases:
        assert rows[str(db)].startswith("done"), stdout
        assert f"to {replica_for(templates[0], db)} +1 more" in rows[str(db)], stdout
    _assert_each_replica_restores(databases, templates, tmp_path)


def test_two_templates_as_a_flow_run(
    small_database: Path, tmp_path: Path, api_env: dict[str, str], writers: list[WriterGroup]
) -> None:
    """Prefect mode: the run's table says where each database goes."""
    databases = database_copies(tmp_path / "dbs", small_database, 2)
    templates = [f"file://{tmp_path}/one/{{name}}", f"file://{tmp_path}/two"]
    writers.append(WriterGroup(databases[0], [1], rate=50))
    ship = _ship_many(str(tmp_path / "dbs" / "*.db"), templates, "--duration", "8", env=api_env)
    try:
        urls = [replica_for(t, db) for t in templates for db in databases]
        wait_until(lambda: all(replica_generations(url) for url in urls), "every replica's generation", 120)
        writers[0].stop()
        writers.clear()
        stdout, stderr = ship.communicate(timeout=300)
    finally:
        if ship.poll() is None:
            ship.kill()
    assert ship.returncode == 0, stderr
    assert all(f"to {replica_for(templates[0], db)} +1 more" in stdout for db in databases), stdout
    _assert_each_replica_restores(databases, templates, tmp_path)
    with get_client(sync_client=True) as client:
        fleets = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["wal-ship-fleet"])))
    [run] = [r for r in fleets if r.parameters.get("replica") == templates[0]]
    assert run.parameters["more_replicas"] == templates[1:]
    [table] = artifacts(run.id, "table")
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    cells = {row["database"]: row["replicas"] for row in rows}
    for db in databases:
        assert cells[str(db)] == ", ".join(replica_for(t, db) for t in templates)


def test_a_replica_down_at_the_end_fails_naming_it_then_the_next_window_sends_it(
    small_database: Path, tmp_path: Path, proxied_moto: tuple[str, TcpProxy], writers: list[WriterGroup]
) -> None:
    down, proxy = proxied_moto
    databases = database_copies(tmp_path / "dbs", small_database, 2)
    written = databases[0]
    templates = [f"file://{tmp_path}/local/{{name}}", down.replace("/app?", "/{name}?")]
    writers.append(WriterGroup(written, [1], rate=50))
    pattern = str(tmp_path / "dbs" / "*.db")
    # The bucket stays down until the fleet exited: each final drain to it fails whatever the retries' delays,
    # so they are tried at short delays (walship_cli/_direct.py) instead of waiting out the policy's 30 s each.
    fail_fast = {**DIRECT, "WALSHIP_TEST_RETRY_BACKOFF": "0.1"}
    ship = _ship_many(pattern, templates, "--duration", "600", "--park-after", "1", env=fail_fast)
    try:
        remote = [replica_for(templates[1], db) for db in databases]
        wait_until(lambda: all(replica_generations(url) for url in remote), "the bucket's generations", 90)
        proxy.stop()
        time.sleep(2)
        writers[0].stop()
        writers.clear()
        # Idle past --park-after with a replica down: held all the same, so that a late commit still reaches the
        # local replica (parked, its end would have failed it and stopped its shipping for the window).
        time.sleep(3)
        app_commits(written, 20)
        ship.send_signal(signal.SIGTERM)
        stdout, stderr = ship.communicate(timeout=300)
    finally:
        if ship.poll() is None:
            ship.kill()
    assert ship.returncode == 1, stdout + stderr
    locations = [open_store(url).location for url in remote]
    named = f"{databases[0]} to {locations[0]}, {databases[1]} to {locations[1]}"
    assert f"2 of 2 databases failed ({named})" in stderr, stdout
    rows = _rows(stdout)
    for db, location in zip(databases, locations, strict=True):
        assert rows[str(db)].startswith("failed"), stdout
        # Entries left for it, or (nothing left: all it had was stored before it went down) its lease step's error.
        assert location in rows[str(db)], stdout
        output = tmp_path / f"local-{db.name}"
        assert restore(replica_for(templates[0], db), output, DIRECT).returncode == 0
        assert content_digest(output) == content_digest(db), "the other replica was finished, late commits too"
    proxy.start()
    again = walship("ship-many", pattern, "--replica", templates[0], "--replica", templates[1], "--once", env=DIRECT)
    assert again.returncode == 0, again.stdout + again.stderr
    _assert_each_replica_restores(databases, templates, tmp_path)


def test_a_template_added_opens_a_database_left_caught_up(small_database: Path, tmp_path: Path) -> None:
    """A database unchanged since a window shipped all of it stays closed, unless that window had fewer
    replicas: the new one has nothing of it yet."""
    databases = database_copies(tmp_path / "dbs", small_database, 1)
    pattern = str(tmp_path / "dbs" / "*.db")
    first = ["--replica", f"file://{tmp_path}/one/{{name}}"]
    both = [*first, "--replica", f"file://{tmp_path}/two/{{name}}"]
    states = []
    for replicas in (first, first, both, both):
        result = walship("ship-many", pattern, *replicas, "--once", env=DIRECT)
        assert result.returncode == 0, result.stderr
        states.append(_rows(result.stdout)[str(databases[0])].split()[0])
        time.sleep(3)  # past the files' recent-change window: an unchanged file is known unchanged
    assert states == ["done", "idle", "done", "idle"]
    # The replica the added template names got a snapshot of its own: it restores the database.
    restored = restore(f"file://{tmp_path}/two/db0000.db", tmp_path / "two.db", DIRECT)
    assert restored.returncode == 0, restored.stderr
    assert content_digest(tmp_path / "two.db") == content_digest(databases[0])
