"""A read-only SQLite VFS whose one database file is a backup's point, served page by page (apsw).

The file says it is immutable: SQLite then takes no locks and never looks
for a -wal, -shm or -journal file beside it, and page 1 says rollback journal
(``PointPages``), so it reads this file and nothing else. Anything else a
connection opens (temporary files of a big sort) goes to the default VFS.
"""

import itertools
from typing import Any

import apsw

from walship.query._pages import PointPages

__all__ = ["PointVFS"]

_names = itertools.count(1)
_SECTOR = 4096


class PointVFS(apsw.VFS):
    """A VFS registered under a name of its own; ``uri`` opens its database read-only and immutable."""

    def __init__(self, pages: PointPages) -> None:
        self.name = f"walship-query-{next(_names)}"
        self.filename = f"/{self.name}.db"
        self.uri = f"file:{self.filename}?immutable=1"
        self._pages = pages
        super().__init__(self.name, base="")

    def xOpen(self, name: Any, flags: list[int]) -> Any:  # noqa: N802 - apsw's method names
        filename = name.filename() if isinstance(name, apsw.URIFilename) else name
        if filename == self.filename and flags[0] & apsw.SQLITE_OPEN_MAIN_DB:
            flags[1] = apsw.SQLITE_OPEN_READONLY
            return _PointFile(self._pages)
        return apsw.VFSFile("", name, flags)

    def xAccess(self, pathname: str, flags: int) -> bool:  # noqa: N802
        if pathname.startswith(self.filename):
            return pathname == self.filename
        return bool(super().xAccess(pathname, flags))


class _PointFile:
    """The database file: reads come from the point's pages; nothing is ever written."""

    def __init__(self, pages: PointPages) -> None:
        self._pages = pages

    def xRead(self, amount: int, offset: int) -> bytes:  # noqa: N802
        return self._pages.read(offset, amount)

    def xFileSize(self) -> int:  # noqa: N802
        return self._pages.size

    def xDeviceCharacteristics(self) -> int:  # noqa: N802
        return int(apsw.SQLITE_IOCAP_IMMUTABLE)

    def xSectorSize(self) -> int:  # noqa: N802
        return _SECTOR

    def xFileControl(self, op: int, pointer: int) -> bool:  # noqa: N802
        return False

    def xCheckReservedLock(self) -> bool:  # noqa: N802
        return False

    def xLock(self, level: int) -> None:  # noqa: N802
        pass

    def xUnlock(self, level: int) -> None:  # noqa: N802
        pass

    def xClose(self) -> None:  # noqa: N802
        pass

    def xSync(self, flags: int) -> None:  # noqa: N802
        raise apsw.ReadOnlyError("a backup is read-only")

    def xWrite(self, data: bytes, offset: int) -> None:  # noqa: N802
        raise apsw.ReadOnlyError("a backup is read-only")

    def xTruncate(self, size: int) -> None:  # noqa: N802
        raise apsw.ReadOnlyError("a backup is read-only")
