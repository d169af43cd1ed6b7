"""Typed errors: one base, one subclass per way an operation can fail.

Two parents group them by what failed: ``StorageError`` (the object store
answered no, or not at all) and ``IntegrityError`` (bytes are not what was
written). The CLI maps them to exit statuses (``UsageError`` -> 2, everything else -> 1)
and Prefect tasks retry only ``TransientStorageError``. ``SpoolFullError`` is
an operation that failed (exit 1), not bad usage: the same command succeeds
once the disk has room again. Errors that are neither (a drill's verdict, a
shipper that will not hand over) hang from the root.

Two errors carry the report of what failed (a drill's checks, a fleet's
rows); the report's own module builds it, so this module imports nothing of
walship's and every module may import it.
"""

from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "ChecksumMismatchError",
    "ConflictError",
    "ContinuityLostError",
    "CorruptObjectError",
    "DiskFullError",
    "FleetFailedError",
    "FollowerRunningError",
    "HandoverTimedOutError",
    "IdentityMismatchError",
    "IdentityNeededError",
    "IncompleteError",
    "IntegrityError",
    "LeaseHeldError",
    "MapUnusableError",
    "NewerIndexError",
    "NotFoundError",
    "NotSeekableError",
    "PermanentStorageError",
    "ReplicaSealingError",
    "ShipperRunningError",
    "SpoolEntryDamagedError",
    "SpoolFullError",
    "StandbyBusyError",
    "StandbyChangedError",
    "StandbyUnsettledError",
    "StorageError",
    "TransientStorageError",
    "UsageError",
    "VerificationFailedError",
    "WalIndexUnsettledError",
    "WalshipError",
    "WritersBusyError",
]


class WalshipError(Exception):
    """Base of every error walship raises on purpose."""


class UsageError(WalshipError):
    """Bad usage or bad input: missing file, not a database, malformed URL."""


class StorageError(WalshipError):
    """The object store refused or could not be reached."""


class IntegrityError(WalshipError):
    """Bytes are not what was written: a checksum disagrees or an object cannot be decoded."""


class NotFoundError(StorageError):
    """An object, bucket or database that should exist does not."""


class ChecksumMismatchError(IntegrityError):
    """Bytes read back do not hash to the checksum recorded when written."""

    @classmethod
    def index_disagrees(cls, name: str, recorded: str, indexed: str) -> "ChecksumMismatchError":
        """The replica's index and the object ``name`` itself record different checksums (or sizes)."""
        return cls(
            f"verify {name}: the index and the object disagree on its checksum (the object records "
            f"{recorded}, the index {indexed}); run 'walship verify' to see which is wrong"
        )


class CorruptObjectError(IntegrityError):
    """An object cannot be decoded (truncated, not zstd, bad database)."""


class IdentityNeededError(UsageError):
    """An encrypted object must be read and no age identity was given."""


class IdentityMismatchError(WalshipError):
    """None of the age identities given opens an object (it was sealed for other recipients)."""


class NotSeekableError(UsageError):
    """A query asked for a snapshot that cannot be read page by page (one zstd or age stream): nothing is wrong with
    it, the command is: restore it and open the file."""


class ReplicaSealingError(UsageError):
    """A write would mix encrypted and plaintext objects in one replica."""


class ConflictError(StorageError):
    """A conditional write lost: someone else changed the object first."""


class IncompleteError(WalshipError):
    """Part of the work was done; the rest is reported and picked up by the next run."""


class PermanentStorageError(StorageError):
    """Storage refused in a way retrying cannot fix (credentials, permissions)."""


class DiskFullError(WalshipError):
    """A local filesystem (a restore's target, the spool) has no room for what must be written.

    An operation that failed (exit 1), not bad usage: nothing partial is left
    behind and the same command succeeds once there is room.
    """


class SpoolFullError(DiskFullError):
    """The local disk (the spool, or a snapshot's work directory) has no room for what must be written.

    Expected, not a bug: nothing partial is left behind, what was captured
    before stays captured, and the next run goes on once there is room.
    """


class TransientStorageError(StorageError):
    """Storage failed in a way that may pass on retry (5xx, throttling, resets)."""


class ShipperRunningError(UsageError):
    """Another shipper holds the database: one shipper per database, whatever its spool or replica."""


class FollowerRunningError(UsageError):
    """Another walship follows or updates the kept copy: one applier per copy, whatever its replica."""


class StandbyBusyError(UsageError):
    """Someone else holds a standby's write lock: a standby is written by walship alone, read by everyone else."""


class StandbyChangedError(UsageError):
    """A standby holds a commit walship did not apply: it no longer follows its replica."""


class StandbyUnsettledError(WalshipError):
    """Readers kept a standby's WAL longer than walship waits to checkpoint it; the next try may succeed."""


class ContinuityLostError(WalshipError):
    """The WAL no longer continues what was captured; the message says why (a new generation follows)."""


class WalIndexUnsettledError(WalshipError):
    """The WAL index and the WAL disagree for now (a reset in progress); try again at the next sync."""


class WritersBusyError(WalshipError):
    """The write lock could not be had briefly (the application holds it, e.g. for its own checkpoint); retried
    at the next sync."""


class SpoolEntryDamagedError(ChecksumMismatchError):
    """A spooled entry's bytes are not those spooled: never uploaded; its generation ends before it on the
    replica and a new generation starts."""


class NewerIndexError(CorruptObjectError):
    """An index a newer walship wrote: never rebuilt over, since that would drop what it added."""


class MapUnusableError(WalshipError):
    """The spool's page digest map cannot say what the replica holds at the cursor (missing, damaged, behind, or
    of another generation); the message says why, and the shipper takes a full snapshot instead."""


class LeaseHeldError(WalshipError):
    """Another shipper holds the replica's lease."""


class HandoverTimedOutError(WalshipError):
    """The running shipper did not end within the hand-over wait."""


class _Report(Protocol):
    """What an error needs of the report it carries: the one line saying what failed."""

    def failure_message(self) -> str: ...


_ReportT = TypeVar("_ReportT", bound=_Report)


class _ReportedError(WalshipError, Generic[_ReportT]):
    """An error raised after the work finished, holding the report of all of it."""

    def __init__(self, report: _ReportT) -> None:
        super().__init__(report.failure_message())
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by Prefect when it records the failed state: rebuild from the report.
        return (type(self), (self.report,))


class VerificationFailedError(_ReportedError[_ReportT]):
    """A restore drill found a problem; ``report`` (a ``walship.verify.VerifyReport``) holds every check."""


class FleetFailedError(_ReportedError[_ReportT], IncompleteError):
    """At least one database of the window failed; ``report`` (a ``walship.fleet.FleetReport``) holds every row,
    the failed ones and the rest."""
