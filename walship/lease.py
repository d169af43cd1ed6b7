"""One shipper per replica prefix: a lease object written with conditional puts.

The holder names the host, the database path and the run
(``host:/path/app.db#run``). Only a shipper that holds the database's lock
(``walship.dblock``) asks for the lease, so a lease held by another run of
the same database on the same host belongs to a run that has ended (a
hand-over, a crash): it is taken over at once. A shipper on another host, or
for another database, is refused until the lease expires. Renewal happens
only when there is something to upload, so an idle database costs no
requests; a lease that expired while idle is simply taken again, unless
someone else took it meanwhile.
"""

import contextlib
import logging
import socket
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel

from walship.errors import ConflictError, LeaseHeldError, NotFoundError
from walship.layout import LEASE_KEY
from walship.models import utcnow
from walship.storage import ObjectStore

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "Lease",
    "acquire_lease",
    "holder_for",
    "lease_needs_renewal",
    "read_lease",
    "release_lease",
]

DEFAULT_LEASE_SECONDS = 600.0

log = logging.getLogger(__name__)


class Lease(BaseModel):
    holder: str
    acquired_at: datetime
    expires_at: datetime
    etag: str = ""  # of the object as we wrote it; not stored in the object


def holder_for(database: Path, run: str = "") -> str:
    """``host:/path/of/db#run`` (without ``#run`` when no run is given)."""
    base = f"{socket.gethostname()}:{database.resolve()}"
    return f"{base}#{run}" if run else base


def _same_database(a: str, b: str) -> bool:
    return a.partition("#")[0] == b.partition("#")[0]


def read_lease(store: ObjectStore) -> tuple[Lease | None, str | None]:
    """The lease as stored and its ETag, or ``(None, None)`` when there is none."""
    try:
        raw, info = store.get_bytes(LEASE_KEY, max_size=64 << 10)
    except NotFoundError:
        return None, None
    return Lease.model_validate_json(raw), info.etag


def acquire_lease(store: ObjectStore, holder: str, seconds: float = DEFAULT_LEASE_SECONDS) -> Lease:
    """Take or renew the lease; raise ``LeaseHeldError`` if another live holder has it."""
    now = utcnow()
    current, etag = read_lease(store)
    if (
        current is not None
        and current.holder != holder
        and not _same_database(current.holder, holder)
        and current.expires_at > now
    ):
        raise LeaseHeldError(
            f"replica {store.location} is being shipped by {current.holder} until "
            f"{current.expires_at:%Y-%m-%d %H:%M:%S}Z: use another replica prefix, or stop that shipper"
        )
    acquired = current.acquired_at if current is not None and current.holder == holder else now
    if current is not None and current.holder != holder and current.expires_at > now:
        log.info("lease of %s: taking over from %s, whose run has ended", store.location, current.holder)
    lease = Lease(holder=holder, acquired_at=acquired, expires_at=now + timedelta(seconds=seconds))
    body = lease.model_dump_json(exclude={"etag"}).encode()
    try:
        written = store.put_bytes(LEASE_KEY, body, if_match=etag, if_none_match=etag is None)
    except ConflictError:
        raise LeaseHeldError(f"replica {store.location}: another shipper took the lease just now") from None
    return lease.model_copy(update={"etag": written.etag})


def lease_needs_renewal(lease: Lease, seconds: float = DEFAULT_LEASE_SECONDS) -> bool:
    return (lease.expires_at - utcnow()).total_seconds() < seconds / 2


def release_lease(store: ObjectStore, lease: Lease) -> None:
    """Let the lease go at the end of a run, if it is still ours."""
    expired = lease.model_copy(update={"expires_at": utcnow()})
    # A conflict means someone took it over already: nothing of ours to release.
    with contextlib.suppress(ConflictError):
        store.put_bytes(LEASE_KEY, expired.model_dump_json(exclude={"etag"}).encode(), if_match=lease.etag)
