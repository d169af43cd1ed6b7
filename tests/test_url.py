import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows._params import REPLICA
from walship.errors import UsageError
from walship.fleet import SharedStores
from walship.storage import LocalStore, open_store, parse_replica_url, schemes


class TestParseReplicaURL:
    """Replica URLs parse into a model, or fail with the fix in the message."""

    def test_file_url(self) -> None:
        url = parse_replica_url("file:///var/backups/app")
        assert (url.scheme, url.path) == ("file", Path("/var/backups/app"))

    def test_s3_url_with_prefix_and_endpoint(self) -> None:
        url = parse_replica_url("s3://my-bucket/prod/app/?endpoint=http://127.0.0.1:9000")
        assert (url.bucket, url.prefix, url.endpoint) == ("my-bucket", "prod/app/", "http://127.0.0.1:9000")

    def test_s3_url_without_prefix(self) -> None:
        assert parse_replica_url("s3://my-bucket").prefix == ""

    def test_versions_at(self) -> None:
        """A past state of the replica: read-only, in UTC, and it survives a round trip through text."""
        url = parse_replica_url("s3://bkt/app?endpoint=http://h:1&versions-at=2026-12-07T10:00:00+01:00")
        assert url.read_only
        assert str(url) == "s3://bkt/app/?endpoint=http://h:1&versions-at=2026-12-07T09:00:00.000000Z"
        assert parse_replica_url(str(url)) == url
        assert not parse_replica_url("s3://bkt/app").read_only
        with pytest.raises(UsageError, match="not an ISO 8601 time"):
            parse_replica_url("s3://bkt/app?versions-at=yesterday")
        with pytest.raises(UsageError, match="object versions"):
            parse_replica_url("file:///tmp/x").at(url.versions_at)  # type: ignore[attr-defined]

    def test_str_roundtrip(self) -> None:
        for text in ("file:///tmp/x", "s3://bucket/a/b/", "s3://bucket/p/?endpoint=http://h:1"):
            assert str(parse_replica_url(text)) == text

    @pytest.mark.parametrize(
        ("url", "fragment"),
        [
            ("file://relative/dir", "absolute"),
            ("/just/a/path", "scheme"),
            ("gs://bucket/x", "scheme"),
            ("s3://Bad_Bucket/x", "bucket name"),
            ("s3://", "bucket name"),
            ("s3://bucket/x?region=eu", "unknown parameter"),
            ("s3://bucket/x?endpoint=ftp://h", "http"),
            ("s3://bucket/a/../b", "prefix"),
        ],
    )
    def test_malformed(self, url: str, fragment: str) -> None:
        with pytest.raises(UsageError, match=fragment):
            parse_replica_url(url)


class TestBackendRegistry:
    """Backends register by scheme: the registry parses, opens and names every one alike."""

    def test_an_unknown_scheme_names_every_registered_form(self) -> None:
        with pytest.raises(UsageError, match="no supported scheme") as refused:
            parse_replica_url("gs://bucket/x")
        for form in ("file:///absolute/dir", "s3://bucket/prefix", "memory://name/prefix"):
            assert form in str(refused.value)

    def test_memory_replicas_of_one_name_share_its_objects(self) -> None:
        url = parse_replica_url("memory://registry-test/a/app")
        assert (url.scheme, url.prefix, str(url), url.name) == (
            "memory",
            "a/app/",
            "memory://registry-test/a/app/",
            "app",
        )
        open_store(url).put_bytes("k", b"v")
        assert [o.key for o in open_store("memory://registry-test/a").list()] == ["app/k"]
        with pytest.raises(UsageError, match="memory://name/prefix"):
            parse_replica_url("memory://Bad Name/x")

    def test_what_one_client_serves(self) -> None:
        s3 = parse_replica_url("s3://bucket/prod/app?endpoint=http://h:1")
        assert str(s3.shared_root()) == "s3://bucket/?endpoint=http://h:1"
        assert parse_replica_url("file:///srv/r").shared_root() is None
        assert (parse_replica_url("file:///srv/r").directory, s3.directory) == (Path("/srv/r"), None)
        assert (parse_replica_url("s3://bucket").name, s3.name) == ("bucket", "app")

    def test_parsing_an_s3_url_imports_no_botocore(self) -> None:
        """Run names and parameter checks parse URLs they never open: botocore (0.3 s) waits for the store."""
        code = (
            "import sys\nfrom walship.storage import parse_replica_url\n"
            "parse_replica_url('s3://bucket/app?endpoint=http://h:1')\nprint('botocore' in sys.modules)"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert result.stdout.strip() == "False"

    def test_flow_parameters_accept_every_registered_scheme(self) -> None:
        assert set(schemes()) >= {"file", "s3", "memory"}
        for scheme in schemes():
            assert re.match(REPLICA, f"{scheme}://somewhere/app"), scheme
        assert not re.match(REPLICA, "gs://bucket/app")


class TestSharedStores:
    """A fleet opens one store per root (an S3 bucket: tests/test_fleet.py) and each replica under it."""

    def test_replicas_of_one_root_are_that_store_under_their_prefix(self, tmp_path: Path) -> None:
        stores = SharedStores()
        first, second = stores.open("memory://fleet-test/dbs/one.db"), stores.open("memory://fleet-test/dbs/two.db")
        first.put_bytes("lease.json", b"1")
        second.put_bytes("lease.json", b"2")
        assert (first.location, second.location) == (
            "memory://fleet-test/dbs/one.db/",
            "memory://fleet-test/dbs/two.db/",
        )
        assert [o.key for o in open_store("memory://fleet-test/dbs").list()] == [
            "one.db/lease.json",
            "two.db/lease.json",
        ]
        local = stores.open(f"file://{tmp_path}/one.db")
        assert isinstance(local, LocalStore)
        assert local.location == f"file://{tmp_path}/one.db"
