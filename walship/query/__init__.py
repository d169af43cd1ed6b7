"""Reading a backup at any point without restoring it: a read-only SQLite connection whose pages are fetched
as SQLite reads them.

``open_backup`` (a connection, for notebooks and scripts) and ``open_point``
(the same with the point it reads and what it fetched) choose the point as
``walship restore`` does, apply the segments up to it into a scratch overlay,
and serve every other page from the snapshot's frames, fetched by ranged
reads, checked against their SHA-256 and cached on disk within a bound.
``run_sql`` runs statements with walship's typed errors (docs/ARCHITECTURE.md,
"Reading a backup without restoring it").
"""

from walship.query._cache import DEFAULT_CACHE_BYTES, FrameCache
from walship.query._open import Backup, open_backup, open_point
from walship.query._sql import Columns, run_sql

__all__ = ["DEFAULT_CACHE_BYTES", "Backup", "Columns", "FrameCache", "open_backup", "open_point", "run_sql"]
