"""A fleet's storage steps: the core's, retried in the process (never a task run per database).

A task run per lease, drain and position would be four API calls per
database per window, and the run would stop with the API; the fleet calls
the core with ``walship.retry.retrying`` instead, so storage alone decides.
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
    """``walship.ship.ShipSteps`` on the core, each retried by ``policy``."""

    def __init__(self, policy: RetryPolicy | None = None, stores: SharedStores | None = None) -> None:
        self.policy, self.stores = policy or RetryPolicy(), stores or SharedStores()

    def _store(self, replica: str) -> ObjectStore:
        return self.stores.open(replica)

    def acquire_lease(self, replica: str, spool_dir: Path, holder: str) -> None:
        retrying(self.policy, lambda: take_lease(self._store(replica), spool_dir, holder))

    def drain(self, replica: str, spool_dir: Path, holder: str) -> UploadResult:
        return retrying(self.policy, lambda: drain_spool(self._store(replica), spool_dir, holder))

    def record_position(self, replica: str, position: WalPosition) -> None:
        retrying(self.policy, lambda: index.record_wal_position(self._store(replica), position))

    def release_lease(self, replica: str, spool_dir: Path) -> None:
        retrying(self.policy, lambda: let_lease_go(self._store(replica), spool_dir))
