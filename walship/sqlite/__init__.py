"""SQLite-facing code: input checks and consistent snapshots."""

from walship.sqlite._capture import WalCapture
from walship.sqlite._database import check_database, integrity_check, read_header
from walship.sqlite._snapshot import take_snapshot

__all__ = ["WalCapture", "check_database", "integrity_check", "read_header", "take_snapshot"]
