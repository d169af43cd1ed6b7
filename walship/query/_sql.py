"""Running SQL on an opened backup: rows as they come, with what went wrong as walship's typed errors.

SQL is the command's input, so SQL SQLite rejects (a syntax error, a table
the database lacks, missing bindings) is bad input, as is SQL that writes:
the connection is read-only and a backup is never changed. A damaged frame
or segment raises its own integrity error from inside SQLite's read.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apsw

from walship.errors import CorruptObjectError, UsageError

__all__ = ["Columns", "run_sql"]

# What SQLite says about the SQL itself, not about the data.
_BAD_SQL = (apsw.SQLError, apsw.BindingsError, apsw.AuthError, apsw.RangeError, apsw.MismatchError, apsw.TooBigError)
_BAD_DATA = (apsw.CorruptError, apsw.NotADBError, apsw.IOError)


@dataclass(frozen=True)
class Columns:
    """The column names of the statement whose rows follow."""

    names: tuple[str, ...]


def run_sql(connection: apsw.Connection, sql: str) -> Iterator[Columns | tuple[Any, ...]]:
    """Each statement of ``sql`` in turn: its ``Columns`` (when it has any), then its rows."""
    headers: list[Columns] = []

    def began(cursor: apsw.Cursor, statement: str, bindings: object) -> bool:
        names = tuple(column[0] for column in cursor.description)
        if names:
            headers.append(Columns(names))
        return True

    cursor = connection.cursor()
    cursor.exec_trace = began
    try:
        rows = cursor.execute(sql)
        for row in rows:
            yield from headers
            headers.clear()
            yield row
        yield from headers
    except apsw.ReadOnlyError:
        raise UsageError(
            "query: the SQL writes, and a backup is read-only: query with SELECT (restore it with "
            "'walship restore' to get a copy you can change)"
        ) from None
    except _BAD_SQL as exc:
        raise UsageError(f"query: {exc}: check the SQL") from None
    except _BAD_DATA as exc:
        raise CorruptObjectError(f"query: SQLite read a damaged database ({exc}): run 'walship verify'") from None
    finally:
        cursor.close()
