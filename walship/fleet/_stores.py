"""One storage client per bucket for a whole fleet, not one per database.

A botocore client holds about 0.5 MiB (measured: 524 KiB a store): a
thousand databases, each opening its own, would pay half a GiB for clients
that all talk to the same endpoint. Each backend's URL says what one client
serves (``shared_root``); local replicas cost nothing to open.
"""

import threading

from walship.storage import ObjectStore, StorageCredentials, open_store, parse_replica_url

__all__ = ["SharedStores"]


class SharedStores:
    """``open(replica)``: a store for ``replica`` whose client is shared with every replica of its root (bucket)."""

    def __init__(self, credentials: StorageCredentials | None = None) -> None:
        self.credentials = credentials
        self._roots: dict[str, ObjectStore] = {}
        self._lock = threading.Lock()

    def open(self, replica: str) -> ObjectStore:
        url = parse_replica_url(replica)
        root = url.shared_root()
        if root is None:
            return open_store(url, self.credentials)
        with self._lock:
            if str(root) not in self._roots:
                self._roots[str(root)] = open_store(root, self.credentials)
            shared = self._roots[str(root)]
        return shared.under(url.prefix)
