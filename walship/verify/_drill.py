"""Restore drills: prove a replica restores, and that its index tells the truth.

A drill restores the newest point (the newest snapshot plus every segment of
its generation) into a temporary directory, and optionally a random older
point. ``restore_snapshot`` checks each object's SHA-256, the segment chain,
every frame's checksum, the page count and ``PRAGMA integrity_check``. Where
a later snapshot records the WAL position it holds, the state rebuilt from an
earlier snapshot plus segments up to that position must equal it.

Nothing here raises on the first problem: every check lands in a report, so
the artifact shows all of them. Only ``TransientStorageError`` escapes, so
the Prefect task can retry it, and ``NotFoundError`` where no replica is.
"""

import hashlib
import random
import tempfile
import time
from pathlib import Path

import apsw

from walship.catalog import list_snapshot_keys, lost_metadata, require_replica, snapshot_or_unusable
from walship.envelope import Keyring, require_keys
from walship.errors import UsageError
from walship.generations import describe_generations
from walship.index import readable_index
from walship.layout import GENERATIONS_PREFIX
from walship.models import ObjectInfo, SnapshotInfo
from walship.restore import restore_snapshot
from walship.storage import ObjectStore
from walship.verify._report import Drill, RestoredPoint, VerifyReport

__all__ = ["restore_drill"]

# Page-1 header fields that legitimately differ between two files holding the
# same pages (docs/FORMAT.md, "Restore drills"): the file change counter
# (24-27) and schema cookie (40-43), which SQLite's backup API bumps on the
# copy, and version-valid-for (92-95) and the SQLite version number (96-99) of
# whichever library wrote page 1 last.
_VOLATILE_HEADER = ((24, 28), (40, 44), (92, 100))
_CHUNK = 1 << 20


def restore_drill(
    store: ObjectStore,
    *,
    database_id: str | None = None,
    older: bool = False,
    seed: int | None = None,
    workdir: Path | None = None,
    keys: Keyring | None = None,
) -> VerifyReport:
    """Restore the newest point (and, with ``older``, a random older one) into a temporary directory.

    ``keys`` open objects encrypted with age; an encrypted replica without
    them is bad usage (exit 2), not a failed drill. A location that holds no
    replica at all raises ``NotFoundError``.
    """
    if workdir is not None and not workdir.is_dir():
        raise UsageError(f"verify: work directory {workdir} does not exist: create it or leave --workdir out")
    started = time.monotonic()
    drill = Drill(store)
    # The index before the listing: what it claims was uploaded before it, so a gap is a loss.
    index = readable_index(store)
    listing = list(store.list())
    if not any(o.key.startswith(GENERATIONS_PREFIX) for o in listing):
        require_replica(store)  # nothing to drill at all is a wrong URL, not a list of failed checks
    recorded = {s.key for s in index.snapshots} if index is not None else set()
    snapshots = _described_snapshots(drill, listing, recorded)
    if not snapshots:
        return drill.report(started, database_id)
    for snapshot in snapshots:
        require_keys(snapshot.envelope, keys, snapshot.key)
    ids = sorted({s.database_id for s in snapshots})
    named = database_id or ids[-1]
    if ids != [named]:
        drill.add(
            "database-id",
            False,
            f"the replica holds database {', '.join(map(repr, ids))}, not only {named!r}: "
            "check the replica URL and --database-id",
        )
    else:
        drill.add("database-id", True, f"every snapshot is of database {named!r}")
    generations = describe_generations(store, known=snapshots, listing=listing, index=index)
    for state in generations.generations:
        # The listing already made, without the strays it found: no second LIST, no stray as a point.
        drill.known_sequences(state.generation, list(state.sequences))
    if generations.strays:
        shown = ", ".join(generations.strays[:3]) + (", ..." if len(generations.strays) > 3 else "")
        drill.add(
            "strays",
            True,
            f"{len(generations.strays)} object(s) walship did not write, never used by a restore: {shown}; "
            "remove them or keep other data out of the replica prefix",
            warning=True,
        )
    newest = snapshots[-1]
    with tempfile.TemporaryDirectory(prefix="walship-verify-", dir=workdir) as scratch:
        restore = _Restorer(drill, Path(scratch), keys)
        with drill.step("restore-newest"):
            # The point a default restore would give: the newest data, not the newest snapshot.
            _, start = generations.require_newest()
            restore.point("newest", start, generations.end_of(start))
            drill.add("restore-newest", True, _restored_detail(drill.points[-1]))
        _compare_recorded_state(drill, restore, snapshots, newest)
        if older:
            _restore_older(drill, restore, snapshots, newest, random.Random(seed))
    return drill.report(started, named)


def _described_snapshots(drill: Drill, listing: list[ObjectInfo], recorded: set[str]) -> list[SnapshotInfo]:
    """Every listed snapshot described by its own object; a damaged one is a failed check, a stray is not.

    An object without walship metadata that the index ``recorded`` is not a
    stray: walship wrote it, and it lost its description.
    """
    snapshots: list[SnapshotInfo] = []
    keys: list[str] = []
    strays = 0
    with drill.step("snapshots"):
        keys = list_snapshot_keys(drill.store, listing)
        for key in keys:
            with drill.step("snapshots"):
                described = snapshot_or_unusable(drill.store.head(key))
                if isinstance(described, SnapshotInfo):
                    snapshots.append(described)
                elif described.stray and key not in recorded:
                    strays += 1  # reported by the "strays" check
                elif described.stray:
                    drill.add("snapshots", False, lost_metadata(described).reason)
                else:
                    drill.add("snapshots", False, described.reason)
    if len(keys) == strays and not drill.checks:
        drill.add(
            "snapshots",
            False,
            "the replica holds no snapshot: check the URL, or take one with 'walship snapshot DB --replica URL'",
        )
    elif snapshots and len(snapshots) + strays == len(keys):
        generations = len({s.generation for s in snapshots})
        drill.add("snapshots", True, f"{len(snapshots)} snapshots in {generations} generation(s), each described")
    return sorted(snapshots, key=lambda s: (s.created_at, s.key))


class _Restorer:
    """Restores points into the drill's scratch directory, one file per point."""

    def __init__(self, drill: Drill, scratch: Path, keys: Keyring | None) -> None:
        self.drill, self.scratch, self.count, self.keys = drill, scratch, 0, keys

    def path(self) -> Path:
        self.count += 1
        return self.scratch / f"point-{self.count}.db"

    def point(self, role: str, snapshot: SnapshotInfo, until: int | None, *, keep: bool = False) -> Path:
        """Restore ``snapshot`` plus its segments (up to ``until``); delete the file unless ``keep``."""
        output = self.path()
        result = restore_snapshot(self.drill.store, snapshot, output, until_sequence=until, keys=self.keys)
        self.drill.points.append(
            RestoredPoint(
                role=role,
                snapshot=snapshot.key,
                position=result.position,
                segments_applied=result.segments_applied,
                size=result.size,
                duration_seconds=result.duration_seconds,
            )
        )
        if not keep:
            output.unlink()
        return output

    def alone(self, snapshot: SnapshotInfo) -> Path:
        """Restore a snapshot without segments: it must hash to its recorded SHA-256."""
        output = self.path()
        restore_snapshot(self.drill.store, snapshot, output, segments=False, keys=self.keys)
        return output


def _restored_detail(point: RestoredPoint) -> str:
    position = str(point.position)
    return (
        f"{point.snapshot} + {point.segments_applied} segments -> {position}, {point.size} bytes: "
        "SHA-256 of every object, the chain, frame checksums, page count and integrity_check ok"
    )


def _compare_recorded_state(
    drill: Drill, restore: _Restorer, snapshots: list[SnapshotInfo], newest: SnapshotInfo
) -> None:
    """Rebuild the state the newest snapshot records from an earlier snapshot plus segments.

    Only possible when the newest snapshot records a WAL position past an
    earlier snapshot of its generation; otherwise its own SHA-256, checked
    by the restore, is the one recorded checksum of a state.
    """
    position = newest.wal_position
    earlier = [
        s
        for s in snapshots
        if position is not None and s.generation == position.generation and s.sequence < position.sequence
    ]
    if position is not None and newest.bridge:
        # A bridge ends segments this replica never got (it was behind): only a chain that reaches it rebuilds it.
        listed = set(drill.sequences(position.generation))
        earlier = [s for s in earlier if set(range(s.sequence + 1, position.sequence + 1)) <= listed]
    if position is None or not earlier:
        return
    base = max(earlier, key=lambda s: s.sequence)
    with drill.step("recorded-state"):
        recorded = restore.alone(newest)
        rebuilt = restore.point("state", base, position.sequence, keep=True)
        same_pages = _same_pages(recorded, rebuilt)
        if same_pages or _content_digest(recorded) == _content_digest(rebuilt):
            how = "the same pages" if same_pages else "the same content (pages differ)"
            drill.add(
                "recorded-state",
                True,
                f"{base.key} + segments up to {position.sequence} hold {how} as {newest.key}",
            )
        else:
            drill.add(
                "recorded-state",
                False,
                f"{base.key} + segments up to {position.sequence} differ from {newest.key}, "
                f"which records that position: restore {newest.key} alone (--snapshot) and report the replica",
            )
        recorded.unlink()
        rebuilt.unlink()


def _restore_older(
    drill: Drill, restore: _Restorer, snapshots: list[SnapshotInfo], newest: SnapshotInfo, rng: random.Random
) -> None:
    """A random snapshot and a random segment after it in its generation (not the newest point)."""
    with drill.step("restore-older"):
        newest_end = max([newest.sequence, *drill.sequences(newest.generation)])
        options: list[tuple[SnapshotInfo, list[int]]] = []
        for snapshot in snapshots:
            points = [snapshot.sequence, *_reachable(snapshot, drill.sequences(snapshot.generation), snapshots)]
            points = [q for q in points if (snapshot.key, q) != (newest.key, newest_end)]
            if points:
                options.append((snapshot, points))
        if not options:
            drill.add("restore-older", True, "the replica holds one point only: nothing older to restore")
            return
        snapshot, points = rng.choice(options)
        restore.point("older", snapshot, rng.choice(points))
        drill.add("restore-older", True, _restored_detail(drill.points[-1]))


def _reachable(snapshot: SnapshotInfo, sequences: list[int], snapshots: list[SnapshotInfo]) -> list[int]:
    """The sequences after ``snapshot`` a restore from it may stop at: up to a gap that a bridge snapshot ends
    (the replica was behind; a point past it is restored from the bridge), every one otherwise, so that a
    lost segment still fails the drill."""
    after = [q for q in sequences if q > snapshot.sequence]
    bridges = {s.sequence for s in snapshots if s.bridge and s.generation == snapshot.generation}
    present = set(after)
    for sequence in range(snapshot.sequence + 1, max(after, default=snapshot.sequence) + 1):
        if sequence not in present and any(b >= sequence and b + 1 in present for b in bridges):
            return [q for q in after if q < sequence]
    return after


def _same_pages(a: Path, b: Path) -> bool:
    """Byte equality apart from the page-1 header fields that only say who wrote last."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as left, b.open("rb") as right:
        first_left, first_right = bytearray(left.read(100)), bytearray(right.read(100))
        for start, end in _VOLATILE_HEADER:
            first_left[start:end] = first_right[start:end] = bytes(end - start)
        if first_left != first_right:
            return False
        while chunk := left.read(_CHUNK):
            if chunk != right.read(_CHUNK):
                return False
    return True


def _content_digest(path: Path) -> str:
    """SHA-256 of the schema and every row of every table, in each table's key order.

    A full scan returns rows in b-tree order, which the content alone
    determines; the connection is read-only and ``immutable`` (no locks, no
    -wal or -shm files in the scratch directory).
    """
    digest = hashlib.sha256()
    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    connection = apsw.Connection(f"file:{path}?immutable=1", flags=flags)
    try:
        for pragma in ("user_version", "application_id"):
            digest.update(repr(list(connection.execute(f"PRAGMA {pragma}"))).encode())
        tables = []
        schema = "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name"
        for kind, name, table, sql in connection.execute(schema):
            digest.update(repr((kind, name, table, sql)).encode())
            if kind == "table" and not str(sql or "").upper().startswith("CREATE VIRTUAL"):
                tables.append(name)
        for name in tables:
            digest.update(f"\0{name}\0".encode())
            quoted = '"' + name.replace('"', '""') + '"'
            for row in connection.execute(f"SELECT * FROM {quoted}"):  # noqa: S608 - names from the schema
                digest.update(repr(row).encode())
    finally:
        connection.close()
    return digest.hexdigest()
