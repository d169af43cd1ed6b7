"""Explicit storage credentials: what a caller (a Prefect block, resolved outside the core) hands a backend.

Each backend reads the fields it knows when it opens a store (S3: all of them,
walship.storage._s3; file:// and memory://: none), so the caller never needs
to know which backend a replica URL names. Plain data, so the core never
imports Prefect. The secret and the session
token are ``SecretStr``: their repr, str and JSON dump are masked, so a
model printed in a log or a traceback never shows them. ``source`` says
where they came from (``block 'walship-s3'``), for error messages.
"""

from pydantic import BaseModel, ConfigDict, SecretStr

__all__ = ["StorageCredentials"]


class StorageCredentials(BaseModel):
    """Keys, region and endpoint used instead of the backend's own defaults (boto3's chain); None falls back to them."""

    model_config = ConfigDict(frozen=True)

    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    region: str | None = None
    endpoint: str | None = None
    source: str = "explicit credentials"

    def __repr__(self) -> str:
        # The key id is not secret, but it is nobody's business in a log either.
        return f"StorageCredentials(source={self.source!r}, endpoint={self.endpoint!r}, region={self.region!r})"

    __str__ = __repr__
