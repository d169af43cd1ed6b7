"""A source database for standby tests: transfers that keep a sum, and each round's pages read from its WAL.

Every transaction moves an amount between two accounts (the sum stays 1000),
inserts filler row ``n`` and sets ``meta.n``; a shrink deletes filler rows,
counts them in ``meta.gone`` and vacuums. So a state is consistent exactly
when ``sum = 1000``, ``count + gone = n`` and the newest filler row is ``n``:
any mix of two states breaks one of them.
"""

import random
from pathlib import Path

import apsw

from walship.sqlite import iter_frames, parse_wal_header

CONSISTENT = """
SELECT (SELECT sum(balance) FROM accounts) = 1000
   AND (SELECT count(*) FROM filler) + (SELECT gone FROM meta) = (SELECT n FROM meta)
   AND (SELECT coalesce(max(id), 0) FROM filler) = (SELECT n FROM meta),
   (SELECT n FROM meta), (SELECT sum(length(body)) FROM filler)
"""

Pages = list[tuple[int, bytes]]


class Source:
    """A WAL database of its own (apsw, no autocheckpoint); ``take`` hands over what changed since the last."""

    def __init__(self, path: Path, seed: int = 7) -> None:
        self.path, self.rng, self.n = path, random.Random(seed), 0
        self.connection = apsw.Connection(str(path))
        self.connection.execute("PRAGMA journal_mode=WAL").fetchall()
        self.connection.execute("PRAGMA wal_autocheckpoint=0").fetchall()
        with self.connection:
            self.connection.execute(
                "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INT);"
                "INSERT INTO accounts VALUES (1, 500), (2, 500);"
                "CREATE TABLE meta (n INT, gone INT); INSERT INTO meta VALUES (0, 0);"
                "CREATE TABLE filler (id INTEGER PRIMARY KEY, body BLOB)"
            ).fetchall()
        self.take()

    def commit(self, count: int) -> None:
        for _ in range(count):
            self.n += 1
            amount = self.rng.randint(1, 100)
            with self.connection:
                self.connection.execute("UPDATE accounts SET balance = balance - ? WHERE id = 1", (amount,))
                self.connection.execute("UPDATE accounts SET balance = balance + ? WHERE id = 2", (amount,))
                self.connection.execute(
                    "INSERT INTO filler VALUES (?, randomblob(?))", (self.n, self.rng.choice([40, 900, 6000]))
                )
                self.connection.execute("UPDATE meta SET n = ?", (self.n,))

    def shrink(self) -> None:
        """Delete most filler rows (the newest stays) and vacuum: the page count falls."""
        with self.connection:
            gone = self.connection.execute(
                "DELETE FROM filler WHERE id % 4 != 0 AND id != ? RETURNING id", (self.n,)
            ).fetchall()
            self.connection.execute("UPDATE meta SET gone = gone + ?", (len(gone),))
        self.connection.execute("VACUUM").fetchall()

    def take(self) -> tuple[Pages, int]:
        """The last image of every page the WAL changed since the last ``take``, and the page count; then the
        WAL is checkpointed and emptied."""
        images: dict[int, bytes] = {}
        count = 0
        wal = Path(f"{self.path}-wal")
        if wal.exists() and wal.stat().st_size:
            with wal.open("rb") as log:
                header = parse_wal_header(log.read(32))
                pending: dict[int, bytes] = {}
                for frame, page in iter_frames(log, header, with_data=True):
                    pending[frame.page_number] = page
                    if frame.is_commit:
                        count = frame.db_size_after_commit
                        images = {n: p for n, p in {**images, **pending}.items() if n <= count}
                        pending = {}
        self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return sorted(images.items()), count

    def state(self) -> tuple[int, int, int]:
        """(consistent, n, filler bytes) of the source now."""
        consistent, n, size = self.connection.execute(CONSISTENT).fetchall()[0]
        return int(consistent), int(n), int(size or 0)

    def close(self) -> None:
        self.connection.close()
