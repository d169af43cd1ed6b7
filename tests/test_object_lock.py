"""Backups a stolen writer key cannot erase: Object Lock buckets, the writer's least privilege, and restores
from the object versions that existed before an attack.

The drill: writers commit while walship ships into a versioned bucket with a
default lock; then someone holding the shipper's own key overwrites every
object with garbage and deletes what it may. A plain restore must fail
loudly, and ``restore --versions-at`` a time before the attack must give
back every commit the writers logged. It runs on moto, on SeaweedFS, and on
moto with IAM enforced, where the shipper holds only the writer policy of
deployments/iam/ (and its deletes are refused).
"""

import json
import re
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.workload import committed_counts, content_digest
from tests.conftest import use_credentials
from tests.helpers import ROOT, walship
from tests.s3servers import MotoIAM, MotoS3, SeaweedS3, _S3Server, s3_client
from tests.shipping import Ship, WriterGroup, restore
from tests.test_retention import _history
from walship.models import utcnow
from walship.retention import RetentionPolicy, apply_retention, plan_replica
from walship.storage import open_store, versions_of

PREFIX = "backups/app"


def policy(role: str, bucket: str) -> list[dict[str, Any]]:
    """The statements of deployments/iam/<role>.json for ``bucket`` and ``PREFIX``: the documented policy."""
    text = (ROOT / "deployments" / "iam" / f"{role}.json").read_text()
    statements: list[dict[str, Any]] = json.loads(text.replace("BUCKET", bucket).replace("PREFIX", PREFIX))["Statement"]
    return statements


def locked_bucket(server: _S3Server, mode: str = "GOVERNANCE", days: int = 2) -> str:
    """A new versioned bucket whose objects are locked ``days`` by default."""
    bucket = f"walship-locked-{secrets.token_hex(4)}"
    server.create_locked_bucket(bucket, mode, days)
    return bucket


def keys_env(server: _S3Server, key: str, secret: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": server.region,
        "PREFECT_API_URL": "",
    }


@pytest.fixture(scope="module")
def moto_iam() -> Iterator[MotoIAM]:
    with MotoIAM() as server:
        yield server


class Site:
    """A locked bucket on one server, and the keys each role holds there."""

    def __init__(self, server: _S3Server, bucket: str, writer: tuple[str, str], reader: tuple[str, str]) -> None:
        self.server, self.bucket = server, bucket
        self.url = f"s3://{bucket}/{PREFIX}?endpoint={server.endpoint}"
        self.writer_env = keys_env(server, *writer)
        self.reader_env = keys_env(server, *reader)
        self.enforced = isinstance(server, MotoIAM)

    def writer_client(self) -> Any:
        return s3_client(
            self.server,
            aws_access_key_id=self.writer_env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.writer_env["AWS_SECRET_ACCESS_KEY"],
        )


@pytest.fixture(params=["moto", pytest.param("seaweedfs", marks=pytest.mark.seaweedfs), "moto-iam"])
def site(request: pytest.FixtureRequest) -> Site:
    if request.param == "moto-iam":
        server: _S3Server = request.getfixturevalue("moto_iam")
        bucket = locked_bucket(server, mode="COMPLIANCE")
        assert isinstance(server, MotoIAM)
        writer = server.identity(f"writer-{bucket}", policy("writer", bucket))
        reader = server.identity(f"reader-{bucket}", policy("reader", bucket))
        return Site(server, bucket, writer, reader)
    server = request.getfixturevalue("moto_server" if request.param == "moto" else "seaweed_server")
    assert isinstance(server, MotoS3 | SeaweedS3)
    keys = (server.access_key, server.secret_key)
    return Site(server, locked_bucket(server), keys, keys)


def ship_under_writers(site: Site, database: Path, logs: Path) -> dict[int, int]:
    """Writers commit while walship ships with the writer's key; returns each writer's logged commits."""
    logs.mkdir()
    writers = WriterGroup(database, [1, 2], rate=150, logs=logs)
    ship = Ship(database, site.url, "--duration", "8", "--interval", "0.2", env=site.writer_env)
    try:
        time.sleep(5)
    finally:
        writers.stop()
    assert ship.wait() == 0, ship.output
    return {int(log.stem[1:]): len(log.read_text().splitlines()) for log in sorted(logs.glob("w*.log"))}


def attack(site: Site) -> None:
    """With the shipper's own key: every object overwritten with garbage, then deleted where the key may."""
    client = site.writer_client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=site.bucket, Prefix=PREFIX)["Contents"]]
    assert keys
    for key in keys:
        client.put_object(Bucket=site.bucket, Key=key, Body=secrets.token_bytes(64))
    refusals = []
    for key in keys:
        try:
            client.delete_object(Bucket=site.bucket, Key=key)
        except client.exceptions.ClientError as exc:
            refusals.append(exc.response["Error"]["Code"])
    assert set(refusals) <= {"AccessDenied"}, refusals
    refused = len(refusals)
    # The writer's policy allows no delete: only where IAM is enforced is every delete refused.
    assert refused == (len(keys) if site.enforced else 0)


def test_restore_from_before_an_attack(site: Site, database: Path, tmp_path: Path) -> None:
    started = datetime.now(UTC)
    logged = ship_under_writers(site, database, tmp_path / "logs")
    assert min(logged.values()) > 50, logged
    # A point in time while the writers ran, restored before the attack to compare with after.
    middle = (started + timedelta(seconds=3)).isoformat()
    earlier = restore(site.url, tmp_path / "middle.db", site.reader_env, "--timestamp", middle)
    assert earlier.returncode == 0, earlier.stderr
    before = datetime.now(UTC)
    time.sleep(1.5)  # storage keeps write times to the second
    attack(site)

    plain = restore(site.url, tmp_path / "plain.db", site.reader_env)
    assert plain.returncode == 1, (plain.stdout, plain.stderr)
    assert plain.stderr.startswith("walship: ")
    assert "Traceback" not in plain.stderr
    assert not (tmp_path / "plain.db").exists()
    if not site.enforced:  # everything is behind delete markers: the error says where the past is
        assert "--versions-at" in plain.stderr, plain.stderr

    at = before.isoformat()
    result = restore(site.url, tmp_path / "before.db", site.reader_env, "--versions-at", at)
    assert result.returncode == 0, result.stderr
    restored = committed_counts(tmp_path / "before.db")
    # Every logged commit is there; a writer stopped between a commit and its log line has one more.
    assert all(restored[writer] >= count for writer, count in logged.items()), (restored, logged)
    assert restored == committed_counts(database)
    assert content_digest(tmp_path / "before.db") == content_digest(database)

    past = restore(site.url, tmp_path / "past.db", site.reader_env, "--versions-at", at, "--timestamp", middle)
    assert past.returncode == 0, past.stderr
    assert content_digest(tmp_path / "past.db") == content_digest(tmp_path / "middle.db")
    assert 0 < sum(committed_counts(tmp_path / "past.db").values()) < sum(logged.values())

    status = walship("status", "--replica", site.url, "--versions-at", at, env=site.reader_env)
    assert status.returncode == 0, status.stderr
    assert "as at" in status.stdout
    lock = "COMPLIANCE" if site.enforced else "GOVERNANCE"
    assert f"object lock {lock}, 2 days by default" in status.stdout
    newest = re.search(r"locked: +the newest point until at least (\S+ \S+)Z", status.stdout)
    assert newest is not None, status.stdout
    # Estimated from the default (2 days) and the newest point's snapshot, written during the run.
    locked_until = datetime.strptime(newest[1], "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    assert started + timedelta(days=2, minutes=-1) <= locked_until <= before + timedelta(days=2), locked_until

    for days, expected in (("1", "the oldest point locked 1 more days starts at"), ("3", "no point is locked 3 more")):
        shown = walship("status", "--replica", site.url, "--versions-at", at, "--lock-days", days, env=site.reader_env)
        assert shown.returncode == 0, shown.stderr
        assert expected in shown.stdout, shown.stdout

    verified = walship(
        "verify", "--replica", site.url, "--versions-at", at, "--require-lock-days", "1", env=site.reader_env
    )
    assert verified.returncode == 0, (verified.stdout, verified.stderr)
    assert "object lock" in verified.stdout
    short = walship(
        "verify", "--replica", site.url, "--versions-at", at, "--require-lock-days", "3", env=site.reader_env
    )
    assert short.returncode == 1, (short.stdout, short.stderr)
    assert "FAILED  object lock" in short.stdout
    assert "locked less than 3 days" in short.stdout


def test_the_writer_cannot_delete(moto_iam: MotoIAM, database: Path, tmp_path: Path) -> None:
    """Snapshot and ship work with the writer's policy alone; retention with it is refused in one line, and
    works with the retention policy, which the bucket's lock still keeps from deleting what it holds."""
    bucket = locked_bucket(moto_iam, days=1)
    site = Site(moto_iam, bucket, moto_iam.identity(f"w-{bucket}", policy("writer", bucket)), ("-", "-"))
    snap = walship("snapshot", str(database), "--replica", site.url, env=site.writer_env)
    assert snap.returncode == 0, snap.stderr
    for _ in range(2):
        shipped = walship("ship", str(database), "--replica", site.url, "--once", env=site.writer_env)
        assert shipped.returncode == 0, shipped.stderr

    refused = walship("retention", "--replica", site.url, "--keep-last", "1", env=site.writer_env)
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "access denied" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) <= 2, refused.stderr

    keeper = keys_env(moto_iam, *moto_iam.identity(f"r-{bucket}", policy("retention", bucket)))
    kept = walship("retention", "--replica", site.url, "--keep-last", "1", env=keeper)
    assert kept.returncode == 0, (kept.stdout, kept.stderr)
    assert "under object lock until" in kept.stdout, kept.stdout


class TestRetention:
    """Retention deletes every version of what it plans, and what object lock holds stays, with its date."""

    def test_locked_objects_are_held_not_failed(
        self, moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch, database: Path, tmp_path: Path
    ) -> None:
        use_credentials(monkeypatch, moto_server)
        bucket = locked_bucket(moto_server, days=1)
        url = f"s3://{bucket}/{PREFIX}?endpoint={moto_server.endpoint}"
        store = open_store(url)
        keys = _history(store, database, tmp_path)
        plan = plan_replica(store, RetentionPolicy(keep_last=2), utcnow())
        assert plan.versioned
        assert keys[0] in plan.held
        assert keys[1] in plan.held
        assert not plan.delete_keys, "every planned key is locked for a day"
        until = plan.held[keys[0]]
        assert utcnow() + timedelta(hours=23) < until <= utcnow() + timedelta(days=1)

        result = apply_retention(store, plan)
        assert result.ok
        assert not result.deleted
        assert set(result.held) == set(plan.held)
        shown = walship("retention", "--replica", url, "--keep-last", "2", env={"PREFECT_API_URL": ""})
        assert shown.returncode == 0, shown.stderr
        assert "under object lock until" in shown.stdout
        assert "deleted 0 objects" in shown.stdout

        # A day later (as retention sees it), the locks have ended: every version of every planned key goes.
        later = utcnow() + timedelta(days=1, hours=1)
        plan = plan_replica(store, RetentionPolicy(keep_last=2), later)
        assert not plan.held
        assert set(plan.delete_keys) >= {keys[0], keys[1]}
        result = apply_retention(store, plan)
        # moto keeps the lock by the clock, not by the plan's: what it refuses is held, with its date.
        assert result.ok
        assert set(result.held) == set(plan.delete_keys)

    def test_versions_deleted_for_good(
        self, moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch, database: Path, tmp_path: Path
    ) -> None:
        """On a versioned bucket without a lock, a delete leaves no version and no delete marker behind."""
        use_credentials(monkeypatch, moto_server)
        bucket = f"walship-versioned-{secrets.token_hex(4)}"
        client = s3_client(moto_server)
        client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        store = open_store(f"s3://{bucket}/{PREFIX}?endpoint={moto_server.endpoint}")
        keys = _history(store, database, tmp_path)
        plan = plan_replica(store, RetentionPolicy(keep_last=2), utcnow())
        assert plan.versioned
        assert not plan.held
        result = apply_retention(store, plan)
        assert result.ok
        assert set(result.deleted) == set(plan.delete_keys)
        listed = client.list_object_versions(Bucket=bucket, Prefix=PREFIX)
        left = {v["Key"] for v in listed.get("Versions", [])} | {m["Key"] for m in listed.get("DeleteMarkers", [])}
        assert not {f"{PREFIX}/{key}" for key in plan.delete_keys} & left
        assert f"{PREFIX}/{keys[-1]}" in left


def test_no_request_more_per_upload(moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A locked bucket costs an upload no request: the checksums walship sends are what S3's lock asks for."""
    use_credentials(monkeypatch, moto_server)
    plain = f"walship-plain-{secrets.token_hex(4)}"
    moto_server.create_bucket(plain)
    locked = locked_bucket(moto_server)
    small, large = tmp_path / "small", tmp_path / "large"
    small.write_bytes(secrets.token_bytes(200_000))
    large.write_bytes(secrets.token_bytes(20 << 20))
    counts = {}
    for bucket in (plain, locked):
        store = open_store(f"s3://{bucket}/{PREFIX}?endpoint={moto_server.endpoint}")
        sent: list[Any] = []
        client = store.client  # type: ignore[attr-defined]
        client.meta.events.register("before-send.s3", lambda request, sent=sent, **_: sent.append(request))
        store.put_file("a", small)
        store.put_file("b", large)
        store.put_bytes("c", b"{}", if_none_match=True)
        counts[bucket] = len(sent)
        # S3 takes a write to a locked bucket only with a checksum of its body (Content-MD5 or x-amz-checksum-*):
        # every PUT walship sends carries one already.
        for request in sent:
            if request.method == "PUT":
                names = {name.lower() for name in request.headers}
                assert "content-md5" in names or any(n.startswith("x-amz-checksum-") for n in names), request.url
    assert counts[locked] == counts[plain] >= 3, counts
    versioned = versions_of(store)
    assert versioned is not None
    assert versioned.protection().lock_mode == "GOVERNANCE"


class TestRefusals:
    """--versions-at where it cannot mean anything: one line, exit 2, nothing written."""

    def test_file_replica(self, tmp_path: Path) -> None:
        result = walship(
            "restore", "--replica", f"file://{tmp_path}/r", "--output", str(tmp_path / "o.db"),
            "--versions-at", "2026-01-01T00:00:00Z", env={"PREFECT_API_URL": ""},
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert "object versions" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "o.db").exists()

    def test_a_past_state_is_never_written(self, database: Path) -> None:
        url = "s3://bucket/app?versions-at=2026-01-01T00:00:00Z"
        result = walship("ship", str(database), "--replica", url, "--once", env={"PREFECT_API_URL": ""})
        assert result.returncode == 2, result.stderr
        assert "past time" in result.stderr

    def test_bad_time(self, tmp_path: Path) -> None:
        result = walship("status", "--replica", "s3://bucket/app", "--versions-at", "yesterday")
        assert result.returncode == 2, result.stderr
        assert "--versions-at 'yesterday' is not ISO 8601" in result.stderr

    def test_unversioned_bucket(self, moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch, database: Path) -> None:
        use_credentials(monkeypatch, moto_server)
        bucket = f"walship-plain-{secrets.token_hex(4)}"
        moto_server.create_bucket(bucket)
        url = f"s3://{bucket}/{PREFIX}?endpoint={moto_server.endpoint}"
        assert walship("ship", str(database), "--replica", url, "--once").returncode == 0
        result = walship("status", "--replica", url, "--versions-at", utcnow().isoformat())
        assert result.returncode == 2, result.stderr
        assert "keeps no object versions" in result.stderr
