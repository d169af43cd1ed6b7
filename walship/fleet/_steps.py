"""Shipping's storage steps on the core, retried in the process: the fleet's, and ``walship ship``'s in direct mode.

A task run per lease, drain and position would be four API calls per
database per window, and the run would stop with the API; the fleet calls
the core with ``walship.retry.retrying`` instead, so storage alone decides.
Each replica's store is opened once (its URL parsed once), on its first step.
"""

from pathlib import Path

from walship import index
from walship.fleet._stores import SharedStores
from walship.models import RetryPolicy, WalPosition
from walship.retry import retrying
from walship.ship import drain_spool, let_lease_go, take_lease
from walship.storage import ObjectStore
from walship.upload import UploadResult

__all__ = ["RetryingSteps"]


class RetryingSteps:
    """``walship.ship.ShipSteps`` on the core, each retried by ``policy``, the stores shared by ``stores``."""

    def __init__(self, policy: RetryPolicy | None = None, stores: SharedStores | None = None) -> None:
        self.policy, self.stores = policy or RetryPolicy(), stores or SharedStores()
        self._opened: dict[str, ObjectStore] = {}

    def _store(self, replica: str) -> ObjectStore:
        # Steps of one replica never run at once (one run each); two replicas racing here only open twice.
        if (store := self._opened.get(replica)) is None:
            store = self._opened[replica] = self.stores.open(replica)
        return store

    def acquire_lease(self, replica: str, spool_dir: Path, holder: str) -> None:
        retrying(self.policy, lambda: take_lease(self._store(replica), spool_dir, holder))

    def drain(self, replica: str, spool_dir: Path, holder: str) -> UploadResult:
        return retrying(self.policy, lambda: drain_spool(self._store(replica), spool_dir, holder))

    def record_position(self, replica: str, position: WalPosition) -> None:
        retrying(self.policy, lambda: index.record_wal_position(self._store(replica), position))

    def release_lease(self, replica: str, spool_dir: Path) -> None:
        retrying(self.policy, lambda: let_lease_go(self._store(replica), spool_dir))
