"""Snapshots of many databases: a replica each, bounded concurrency, failures kept apart."""

import shutil
from pathlib import Path

import pytest

from bench.workload import content_digest
from flows.snapshot_many import snapshot_many_flow
from tests.prefect_api import artifacts, child_flow_runs, flow_run, run_id
from walship.errors import UsageError, WalshipError
from walship.fleet import plan_fleet, replica_for
from walship.index import current_snapshots, read_index
from walship.restore import restore_snapshot
from walship.storage import open_store


def _databases(base: Path, directory: Path, names: list[str]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / name for name in names]
    for path in paths:
        shutil.copyfile(base, path)
    return paths


class TestPlanFleet:
    """Patterns become a sorted list of databases, each with a replica of its own."""

    def test_base_url_gets_the_file_name(self) -> None:
        """A base URL takes the file name as its last path segment, before any query."""
        assert replica_for("file:///backups", Path("/db/app.db")) == "file:///backups/app.db"
        assert (
            replica_for("s3://bucket/backups/?endpoint=http://127.0.0.1:9000", Path("/db/app.db"))
            == "s3://bucket/backups/app.db?endpoint=http://127.0.0.1:9000"
        )
        assert replica_for("s3://bucket", Path("/db/app.db")) == "s3://bucket/app.db"

    def test_name_template(self) -> None:
        """``{name}`` is replaced wherever it stands."""
        assert replica_for("s3://bucket/{name}/wal", Path("/db/app.db")) == "s3://bucket/app.db/wal"

    def test_glob_skips_companions_and_reports_empty_patterns(self, tmp_path: Path) -> None:
        """-wal, -shm and spool directories are not databases; a file named twice counts once."""
        for name in ("b.db", "a.db", "a.db-wal", "a.db-shm", "notes.txt"):
            (tmp_path / name).write_bytes(b"x")
        (tmp_path / "a.db-walship").mkdir()
        members, unmatched = plan_fleet(
            [f"{tmp_path}/*.db*", str(tmp_path / "a.db"), f"{tmp_path}/*.sqlite"], "file:///r"
        )
        assert [m.database.name for m in members] == ["a.db", "b.db"]
        assert [m.replica for m in members] == ["file:///r/a.db", "file:///r/b.db"]
        assert unmatched == [f"{tmp_path}/*.sqlite"]

    def test_missing_plain_path_is_kept(self, tmp_path: Path) -> None:
        """A plain path that does not exist is kept, so its run fails and says why."""
        members, unmatched = plan_fleet([str(tmp_path / "gone.db")], "file:///r")
        assert [m.database for m in members] == [tmp_path / "gone.db"]
        assert unmatched == []

    def test_two_databases_with_one_name_are_refused(self, tmp_path: Path) -> None:
        """They would share a replica prefix, which holds one database."""
        with pytest.raises(UsageError, match="same file name"):
            plan_fleet([str(tmp_path / "x" / "app.db"), str(tmp_path / "y" / "app.db")], "file:///r")

    def test_bad_names_and_urls_are_refused(self) -> None:
        """A name that would need quoting in a URL, or a malformed base, fails before anything runs."""
        with pytest.raises(UsageError, match="cannot go into a replica URL"):
            replica_for("file:///r", Path("/db/my app?.db"))
        with pytest.raises(UsageError, match="replica URL"):
            replica_for("ftp://host/r", Path("/db/app.db"))

    def test_a_replica_that_would_be_the_database_file_is_refused(self, tmp_path: Path) -> None:
        """The databases' own directory as a base, or a template naming the file itself or a path under it."""
        database = tmp_path / "app.db"
        for replica in (f"file://{tmp_path}", f"file://{tmp_path}/{{name}}", f"file://{tmp_path}/{{name}}/wal"):
            with pytest.raises(UsageError, match="cannot be the database file"):
                plan_fleet([str(database)], replica)
        [member], _ = plan_fleet([str(database)], f"file://{tmp_path}/{{name}}-replica")
        assert member.replica == f"file://{tmp_path}/app.db-replica"


@pytest.mark.usefixtures("prefect_api")
class TestSnapshotMany:
    """Snapshots of many databases: the broken one is reported, the others are backed up."""

    @pytest.mark.parametrize("backend", ["moto"])
    def test_one_broken_database(self, replica_url: str, base_database: Path, tmp_path: Path) -> None:
        """Three good databases and a file that is not one, two at a time: three snapshots, a Failed run."""
        good = _databases(base_database, tmp_path / "dbs", ["a.db", "b.db", "c.db"])
        (tmp_path / "dbs" / "broken.db").write_bytes(b"this is not a SQLite database\n" * 200)

        state = snapshot_many_flow(
            databases=[f"{tmp_path}/dbs/*.db"], replica=replica_url, max_concurrency=2, return_state=True
        )

        assert state.is_failed()
        with pytest.raises(WalshipError, match=r"1 of 4 databases failed: .*broken\.db"):
            state.result()
        for path in good:
            store = open_store(replica_for(replica_url, path))
            [snapshot] = current_snapshots(store)
            assert snapshot.database_id == path.name
            restore_snapshot(store, snapshot, tmp_path / f"restored-{path.name}")
            assert content_digest(tmp_path / f"restored-{path.name}") == content_digest(path)
        assert read_index(open_store(replica_for(replica_url, tmp_path / "broken.db")))[0] is None

        [report] = artifacts(run_id(state), "markdown")
        assert isinstance(report.data, str)
        rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in report.data.splitlines()[4:]}
        assert rows["result"] == "3 ok, 1 failed"
        [broken] = [cell for name, cell in rows.items() if "broken.db" in name]
        assert broken.startswith("**FAILED**")
        assert sum(cell.startswith("ok: `generations/") for cell in rows.values()) == 3

        assert flow_run(run_id(state)).name.startswith("snapshot-many-*.db-")
        children = child_flow_runs(run_id(state))
        # Each child is named <flow>-<database>-<minute>-<run>.
        assert sorted(c.name.rsplit("-", 2)[0] for c in children) == [
            "snapshot-a.db",
            "snapshot-b.db",
            "snapshot-broken.db",
            "snapshot-c.db",
        ]
        assert sorted(str(c.state_name) for c in children) == ["Completed", "Completed", "Completed", "Failed"]
        # The pool is the bound: whenever a child started, at most one other was running.
        for child in children:
            running = [
                c
                for c in children
                if c.start_time and c.end_time and child.start_time and c.start_time <= child.start_time < c.end_time
            ]
            assert len(running) <= 2
