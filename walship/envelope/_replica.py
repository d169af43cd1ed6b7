"""A replica is encrypted or not from its first object on: writes of the other kind are refused."""

from collections.abc import Sequence

from walship.catalog import scan_snapshots
from walship.envelope._keys import RECIPIENTS_ENV
from walship.envelope._seal import Sealing
from walship.errors import CorruptObjectError, NewerIndexError, ReplicaSealingError
from walship.index import read_index
from walship.models import ReplicaMetadata, SnapshotInfo
from walship.storage import ObjectStore

__all__ = ["check_replica_sealing", "recorded_encryption", "replica_encrypted"]


def recorded_encryption(metadata: ReplicaMetadata | None, snapshots: Sequence[SnapshotInfo]) -> bool | None:
    """What the index records (``encrypted``), else what the oldest snapshot says; None with neither."""
    if metadata is not None and metadata.encrypted is not None:
        return metadata.encrypted
    return snapshots[0].encrypted if snapshots else None


def replica_encrypted(store: ObjectStore) -> bool | None:
    """Whether the replica's objects are encrypted; None while it holds no snapshot.

    The index records it (``encrypted``); an index without it (older, missing
    or unreadable) is answered by the oldest snapshot's own metadata.
    """
    try:
        metadata, _ = read_index(store)
    except NewerIndexError:
        raise
    except CorruptObjectError:
        metadata = None
    if metadata is not None and metadata.encrypted is not None:
        return metadata.encrypted  # spares the listing below
    snapshots = metadata.snapshots if metadata is not None and metadata.snapshots else scan_snapshots(store)[0]
    return recorded_encryption(metadata, snapshots)


def check_replica_sealing(store: ObjectStore, sealing: Sealing) -> None:
    """Refuse (exit 2) to write plaintext into an encrypted replica, or the other way round."""
    encrypted = replica_encrypted(store)
    if encrypted is None or encrypted == sealing.encrypted:
        return
    if encrypted:
        raise ReplicaSealingError(
            f"replica {store.location} is encrypted with age: give its recipients with --age-recipient "
            f"(or {RECIPIENTS_ENV}); a replica never mixes plaintext and encrypted objects"
        )
    raise ReplicaSealingError(
        f"replica {store.location} is not encrypted: send encrypted objects to a new replica prefix "
        "(a replica is encrypted or not from its first object on)"
    )
