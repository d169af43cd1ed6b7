"""Is it still the same database? The rule a resync applies before it continues a generation.

Rewriting a file in place (``cat other.db > app.db``) keeps its inode, so
the inode check cannot see it; SQLite's header has no database identity
either, and in WAL mode its file change counter does not move. What is left
are the header fields SQLite itself keeps, and the pages:

- the application id and the text encoding never change in place;
- the schema cookie only grows (every schema change and every VACUUM adds
  one), so a smaller one is an older copy or another database;
- another database shares almost no page with the replica, and the same
  database rewrites almost every page only by VACUUM, which moves the
  schema cookie. So nearly every page differing under the same schema
  cookie is another database. A transaction that rewrote nearly every row
  in place is judged so too: it costs a full snapshot in place of a resync
  of about the same size, and no commit.

The identity recorded is the database's at the generation's snapshot (read
in its read transaction: the snapshot copy's own cookie is the backup's) or
at its last resync. The schema cookie may have grown since through captured
segments: the recorded one is a lower bound, which the rules allow for.
"""

import json
import os
import struct
from pathlib import Path
from typing import NamedTuple, cast

import apsw

__all__ = ["HEADER_BYTES", "DatabaseIdentity", "IdentityFile", "why_another"]

# "Database File Format", section 1.3: schema cookie, text encoding, application id.
_FIELDS = ((40, "schema_cookie"), (56, "text_encoding"), (68, "application_id"))
HEADER_BYTES = 100
# PRAGMA encoding's names of the header's text encoding numbers.
_ENCODINGS = {"UTF-8": 1, "UTF-16LE": 2, "UTF-16BE": 3}
# Nearly every page: fewer than one page in this many is unchanged.
_KEPT_ONE_IN = 10


class DatabaseIdentity(NamedTuple):
    schema_cookie: int
    text_encoding: int
    application_id: int

    @classmethod
    def from_header(cls, header: bytes) -> "DatabaseIdentity":
        values = {name: struct.unpack_from(">I", header, offset)[0] for offset, name in _FIELDS}
        return cls(**values)

    @classmethod
    def of(cls, connection: apsw.Connection) -> "DatabaseIdentity":
        """The identity of the state ``connection``'s open read transaction sees."""

        def pragma(name: str) -> object:
            return connection.execute(f"PRAGMA {name}").fetchall()[0][0]

        return cls(
            schema_cookie=int(cast(int, pragma("schema_version"))),
            text_encoding=_ENCODINGS[str(pragma("encoding")).upper()],
            application_id=int(cast(int, pragma("application_id"))),
        )


def why_another(recorded: DatabaseIdentity, now: DatabaseIdentity, changed_pages: int, page_count: int) -> str | None:
    """Why the database is not the one whose state the replica holds (None: it may be the same one)."""
    if now.application_id != recorded.application_id:
        return f"its application id is {now.application_id}, not {recorded.application_id}"
    if now.text_encoding != recorded.text_encoding:
        return f"its text encoding is {now.text_encoding}, not {recorded.text_encoding}"
    if now.schema_cookie < recorded.schema_cookie:
        return f"its schema cookie went back from {recorded.schema_cookie} to {now.schema_cookie}"
    kept = page_count - changed_pages
    if now.schema_cookie == recorded.schema_cookie and kept * _KEPT_ONE_IN < page_count:
        return f"{changed_pages} of its {page_count} pages differ and its schema did not change"
    return None


class IdentityFile:
    """The recorded identity of one spool's generation, beside its page digest map."""

    def __init__(self, spool_root: Path) -> None:
        self.path = spool_root / "pages" / "identity.json"

    def load(self, generation: str) -> DatabaseIdentity | None:
        """The identity recorded for ``generation`` (None when none is: an earlier walship, another generation)."""
        try:
            recorded = json.loads(self.path.read_text())
            if recorded.pop("generation") != generation:
                return None
            return DatabaseIdentity(**recorded)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None

    def save(self, generation: str, identity: DatabaseIdentity) -> None:
        self.path.parent.mkdir(exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"generation": generation, **identity._asdict()}))
        os.replace(temporary, self.path)
