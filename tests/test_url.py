from pathlib import Path

import pytest

from walship.errors import UsageError
from walship.storage import parse_replica_url


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
