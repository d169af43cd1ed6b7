"""The operator CLI: ``walship snapshot | ship | ship-many | restore | follow | query | status | verify | retention``.

Exit status: 0 done; 1 the operation failed (corrupt or missing data,
verification failed, storage unreachable after retries); 2 bad usage or bad
input. Errors are one or two plain lines on stderr; ``--debug`` adds the
traceback. Input is checked here, before any flow starts, so a typo fails in
milliseconds rather than after Prefect has started.

snapshot, ship, ship-many, restore, follow, verify and retention run as Prefect flow runs when a
Prefect API is configured (``PREFECT_API_URL`` in the environment or the active
profile), so they appear in its dashboard; otherwise they run the core
directly, at the speed of the work. ``--prefect`` / ``--no-prefect`` choose.
status and query always read storage directly: they are interactive reads, not runs.
"""

import argparse
import gc
import os
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from walship import codec, envelope
from walship.errors import FleetFailedError, UsageError, VerificationFailedError, WalshipError
from walship.fleet import PARK_AFTER, plan_fleet
from walship.layout import generation_of
from walship.models import RestoreResult
from walship.placement import check_output
from walship.restore import point_in_time
from walship.ship import COALESCE_SECONDS, ShipConfig, describe_replica
from walship.snapshot import check_not_shipped
from walship.sqlite import check_database
from walship.status import replica_status
from walship.storage import open_store, parse_replica_url
from walship_cli import _age, _direct, _flows, _query, _standby
from walship_cli._mode import prefect_api_configured

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 141


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        # argparse's own usage errors keep its exit status 2, which is ours too.
        self.exit(EXIT_USAGE, f"walship: error: {message}\nRun 'walship --help' for usage.\n")


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument(
        "--verbose", action="store_true", help="show what the run logs as it goes (and Prefect's flow and task logs)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--prefect",
        dest="prefect",
        action="store_true",
        default=None,
        help="run as a Prefect flow run (default when PREFECT_API_URL is configured)",
    )
    mode.add_argument(
        "--no-prefect",
        dest="prefect",
        action="store_false",
        help="run the core directly, without Prefect (default when no Prefect API is configured)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="walship", description="Continuous, verified backups of SQLite databases.")
    _global_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    snap = commands.add_parser("snapshot", help="take a snapshot of a live database")
    snap.add_argument("database", type=Path)
    snap.add_argument(
        "--replica",
        required=True,
        action="append",
        help="file:///dir or s3://bucket/prefix; repeat it to snapshot into several replicas",
    )
    snap.add_argument("--level", type=int, default=codec.DEFAULT_LEVEL, help="zstd level 1-22 (default 3)")
    snap.add_argument("--database-id", help="name of the database in the replica (default: file name)")
    snap.add_argument("--workdir", type=Path, help="ignored: snapshots stream, nothing is written locally")

    ship = _ship_parser(commands)

    _ship_many_parser(commands)

    rest = commands.add_parser("restore", help="restore a database from a replica")
    rest.add_argument("--replica", required=True, action="append")
    rest.add_argument("--output", required=True, type=Path)
    when = rest.add_mutually_exclusive_group()
    when.add_argument("--timestamp", help="the state at this ISO 8601 time (UTC if no zone), to segment precision")
    when.add_argument("--sequence", type=int, help="restore up to this WAL segment sequence")
    when.add_argument("--snapshot", dest="snapshot_key", help="restore this snapshot key alone, without WAL")
    rest.add_argument(
        "--generation",
        help="restore this generation (to its end, or with --sequence up to N); default: the one with the newest data",
    )
    rest.add_argument("--force", action="store_true", help="replace an existing database at --output")
    rest.add_argument("--database-id", help="refuse a replica that holds another database")
    rest.add_argument(
        "--delta",
        action="store_true",
        help="--output is a copy walship restored: download and apply only what changed since",
    )
    follow = _standby.add_follow_parser(commands)
    query = _query.add_query_parser(commands)

    keep = commands.add_parser("retention", help="delete old snapshots and WAL that the policy does not keep")
    keep.add_argument("--replica", required=True, action="append")
    keep.add_argument("--keep-last", type=int, metavar="N", help="keep the newest N snapshots")
    keep.add_argument("--keep-within", metavar="DURATION", help="keep everything newer than this (7d, 36h, 1d12h)")
    keep.add_argument(
        "--keep-daily", type=int, default=0, metavar="N", help="newest snapshot of each of the last N days"
    )
    keep.add_argument("--keep-weekly", type=int, default=0, metavar="N", help="... of each of the last N ISO weeks")
    keep.add_argument("--keep-monthly", type=int, default=0, metavar="N", help="... of each of the last N months")
    keep.add_argument("--dry-run", action="store_true", help="show what would be deleted, delete nothing")

    drill = commands.add_parser("verify", help="restore drill: prove the replica restores and its index is true")
    drill.add_argument("--replica", required=True, action="append")
    drill.add_argument("--older", action="store_true", help="also restore a random older point")
    drill.add_argument("--database-id", help="fail if the replica holds another database")
    drill.add_argument("--workdir", type=Path, help="directory for the restored files (default: system temp)")
    drill.add_argument(
        "--require-lock-days",
        type=int,
        metavar="N",
        help="fail unless every object of the newest restorable point is under object lock for N more days",
    )
    _age.add_options(writers=(snap, ship), readers=(rest, drill, follow))

    stat = commands.add_parser("status", help="show what a replica holds")
    stat.add_argument("--replica", required=True, action="append")
    stat.add_argument("--json", action="store_true", help="machine-readable output")
    stat.add_argument(
        "--rebuild-index", action="store_true", help="rewrite metadata.json from a listing (a conditional write)"
    )
    stat.add_argument(
        "--lock-days",
        type=int,
        default=0,
        metavar="N",
        help="on an Object Lock bucket, name the oldest point locked at least N more days (default: still locked)",
    )
    for reader in (rest, drill, stat, query):
        reader.add_argument(
            "--versions-at",
            metavar="TIME",
            help="read the replica as it was at this ISO 8601 time, from object versions (versioned S3 buckets)",
        )
    return parser


def _ship_parser(commands: "argparse._SubParsersAction[_Parser]") -> _Parser:
    ship = commands.add_parser("ship", help="ship committed WAL continuously")
    ship.add_argument("database", type=Path)
    ship.add_argument(
        "--replica",
        required=True,
        action="append",
        help="file:///dir or s3://bucket/prefix; repeat it to ship to several replicas (one capture, an upload each)",
    )
    window = ship.add_mutually_exclusive_group()
    window.add_argument("--once", action="store_true", help="one sync and upload, then exit")
    window.add_argument("--duration", type=float, default=600.0, help="seconds to run (default 600)")
    ship.add_argument(
        "--interval", type=float, default=1.0, help="the longest between two syncs (default 1); new commits sync sooner"
    )
    ship.add_argument(
        "--coalesce",
        type=float,
        default=COALESCE_SECONDS,
        metavar="SECONDS",
        help="new commits sync this long after the previous sync began, sharing one upload "
        f"(default {COALESCE_SECONDS:g}; at most --interval)",
    )
    ship.add_argument("--spool", type=Path, help="spool directory (default: DB-walship beside the database)")
    ship.add_argument(
        "--spool-cap",
        type=float,
        default=1024.0,
        metavar="MIB",
        help="warn when the spool holds more; with several replicas, one that is down stops holding the spool back "
        "past it and later resumes at a snapshot of its own (default 1024)",
    )
    ship.add_argument(
        "--handover-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="if a shipper of this database is running, hold the WAL and take over when it ends, "
        "waiting up to SECONDS (default 0: refuse at once)",
    )
    ship.add_argument(
        "--progress-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="log a progress line (segments, commits, lag, position) this often; with --verbose (default 60)",
    )
    ship.add_argument("--database-id", help="name of the database in the replica (default: file name)")
    ship.add_argument("--level", type=int, default=codec.DEFAULT_LEVEL, help="zstd level 1-22 (default 3)")
    ship.add_argument(
        "--snapshot-interval",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="snapshot the generation this often when it changed, so restores start recent (default 3600; 0: never)",
    )
    return ship


def _ship_many_parser(commands: "argparse._SubParsersAction[_Parser]") -> None:
    many = commands.add_parser("ship-many", help="ship every database the patterns match, from one process")
    many.add_argument("patterns", nargs="+", metavar="PATTERN", help="database paths or glob patterns")
    many.add_argument(
        "--replica",
        required=True,
        action="append",
        help="URL with {name} (the database's file name), or a base URL under which each database gets <name>/; "
        "repeat it to ship each database to several replicas (one capture, an upload each)",
    )
    window = many.add_mutually_exclusive_group()
    window.add_argument("--once", action="store_true", help="one sync and upload of each database, then exit")
    window.add_argument("--duration", type=float, default=600.0, help="seconds to run (default 600)")
    _age.recipient_option(many)
    many.add_argument("--interval", type=float, default=1.0, help="seconds between syncs of an active database")
    many.add_argument(
        "--coalesce",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="a written database syncs this long after its previous sync began, sharing one upload "
        "(default 0: --interval less an upload's time)",
    )
    many.add_argument(
        "--park-after",
        type=float,
        default=PARK_AFTER,
        help=f"seconds without a change before a database is closed until it changes (default {PARK_AFTER:.0f})",
    )
    many.add_argument("--level", type=int, default=codec.DEFAULT_LEVEL, help="zstd level 1-22 (default 3)")
    many.add_argument(
        "--snapshot-interval",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="snapshot each changed generation this often (default 3600; 0: never)",
    )
    many.add_argument(
        "--handover-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="a database another shipper holds (the previous window) is taken over when it ends, "
        "waiting up to SECONDS (default 0: that database is refused)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    # What the imports built (pydantic's models, botocore, the core: 48,000
    # objects) lives as long as the process, and what a command built is
    # done with when it returns: frozen, the collector walks neither again,
    # not during the command and not in the interpreter's teardown, which
    # took 0.11 s of every command (83,000 objects after an S3 client).
    gc.freeze()
    try:
        return _command(argv)
    finally:
        gc.freeze()


def _command(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = _run(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is handled below
        return code
    except BrokenPipeError:
        # The reader went away (``walship status --json | head -1``): nobody is
        # left to tell, so end quietly, as a process killed by SIGPIPE would
        # (128 + 13). Python flushes stdout again at exit: point it at devnull.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("walship: interrupted", file=sys.stderr)
        return 130
    except WalshipError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"walship: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"walship: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("walship: run again with --debug for the traceback", file=sys.stderr)
        return EXIT_FAILED


def _runner(args: argparse.Namespace) -> ModuleType:
    """The direct runner, or the flows when asked or when an API keeps their history."""
    use_prefect = args.prefect if args.prefect is not None else prefect_api_configured()
    if not use_prefect:
        _direct.show_logs(args.verbose)
        return _direct
    _flows.quiet_prefect(args.verbose)
    return _flows


# The commands that take --replica more than once.
_SEVERAL_REPLICAS = ("ship", "ship-many", "snapshot")


def _run(args: argparse.Namespace) -> int:
    replicas = [_replica_url(args, url) for url in args.replica] if args.command != "ship-many" else args.replica
    if len(replicas) > 1 and args.command not in _SEVERAL_REPLICAS:
        raise UsageError(
            f"--replica is given {len(replicas)} times: 'walship {args.command}' works on one replica "
            "(only ship, ship-many and snapshot take several); run it once per replica"
        )
    args.replicas, args.replica = replicas, replicas[0]
    if args.command == "ship-many":
        return _ship_many(args)
    if args.command == "follow":
        return _standby.follow_command(args, args.replica, _runner(args))
    if args.command == "query":
        return _query.query_command(args, args.replica, _parse_timestamp)
    return _run_one(args)


def _replica_url(args: argparse.Namespace, url: str) -> str:
    """The URL as the command reads it: as it was at --versions-at, where given; a past state is never written."""
    replica = parse_replica_url(url)
    versions_at = getattr(args, "versions_at", None)
    if versions_at is not None:
        replica = replica.at(_parse_timestamp(versions_at, option="--versions-at"))
    elif replica.read_only and args.command not in ("restore", "status", "verify", "query"):
        raise UsageError(
            f"replica URL {url!r} names the replica as it was at a past time (versions-at=), "
            f"which 'walship {args.command}' cannot write: drop versions-at from the URL"
        )
    return str(replica)


def _run_one(args: argparse.Namespace) -> int:
    replica = args.replica
    if args.command == "status":
        if args.lock_days < 0:
            raise UsageError(f"status: --lock-days {args.lock_days}: give a number of days, 0 or more")
        status = replica_status(open_store(replica), rebuild=args.rebuild_index, lock_days=args.lock_days)
        print(status.model_dump_json(indent=2) if args.json else status.render())
        return EXIT_OK
    if args.command in ("snapshot", "ship"):
        check_database(args.database)
        codec.validate_level(args.level)
    if args.command == "snapshot":
        return _snapshot(args)
    if args.command == "ship":
        return _ship(args)
    if args.command == "verify":
        return _verify(args, replica)
    if args.command == "retention":
        return _retention(args, replica)
    return _restore(args, replica)


def _restore(args: argparse.Namespace, replica: str) -> int:
    if args.sequence is not None and args.sequence < 0:
        raise UsageError(f"--sequence {args.sequence}: a WAL sequence is 0 or more ('walship status' shows them)")
    timestamp = _parse_timestamp(args.timestamp) if args.timestamp else None
    if args.delta and args.force:
        raise UsageError("--delta updates the copy at --output, --force replaces it: choose one")
    if args.delta and args.output.exists():
        return _standby.restore_delta(args, replica, timestamp, _runner(args))
    output = check_output(args.output, force=args.force)
    result = _runner(args).restore(
        replica,
        output,
        timestamp=timestamp,
        snapshot_key=args.snapshot_key,
        sequence=args.sequence,
        generation=args.generation,
        force=args.force,
        database_id=args.database_id,
        identity_file=_age.identity_file(args),
    )
    if isinstance(result, RestoreResult):
        position = str(result.position)
        print(
            f"restored {result.output} at {position} ({result.snapshot.key} + {result.segments_applied} segments, "
            f"{result.size} bytes, integrity ok)"
        )
        line, warning = point_in_time(result)
        if line:
            print(line)
        if warning:
            print(f"walship: {warning}", file=sys.stderr)
    else:  # a snapshot of the original layout: it says what it could verify and what it did not apply
        print(result.summary())
    return EXIT_OK


def _snapshot(args: argparse.Namespace) -> int:
    """A snapshot into each replica in turn, each a consistent copy of its own moment."""
    sealing = _age.sealing(args)
    for replica in args.replicas:
        # Before Prefect starts: a refusal takes milliseconds, and comes before any replica is written.
        store = open_store(replica)
        check_not_shipped(store)
        envelope.check_replica_sealing(store, sealing)
    for replica in args.replicas:
        info = _runner(args).snapshot_database(
            args.database.resolve(),
            replica,
            level=args.level,
            database_id=args.database_id,
            workdir=args.workdir,
            recipients=sealing.recipients,
        )
        ratio = info.raw_size / max(info.compressed_size, 1)
        where = f" in {replica}" if len(args.replicas) > 1 else ""
        print(f"snapshot {info.key}{where}: {info.raw_size} -> {info.compressed_size} bytes (ratio {ratio:.2f})")
    return EXIT_OK


def _ship(args: argparse.Namespace) -> int:
    if args.interval <= 0 or args.duration < 0 or args.snapshot_interval < 0 or args.handover_wait < 0:
        raise UsageError(
            "--interval must be positive; --duration, --snapshot-interval and --handover-wait not negative"
        )
    if args.progress_interval <= 0:
        raise UsageError("--progress-interval must be positive")
    if not args.spool_cap > 0:
        raise UsageError("--spool-cap must be positive (MiB; default 1024)")
    if not args.coalesce > 0:
        raise UsageError(f"--coalesce must be positive (seconds; default {COALESCE_SECONDS:g})")
    database = args.database.resolve()
    config = ShipConfig(
        database_id=args.database_id or database.name,
        level=args.level,
        snapshot_seconds=args.snapshot_interval,
        recipients=_age.sealing(args).recipients,
        progress_seconds=args.progress_interval,
        coalesce_seconds=args.coalesce,
        backfill_seconds=args.interval,
        spool_cap_bytes=int(args.spool_cap * (1 << 20)),
    )
    report = _runner(args).ship(
        database,
        args.replicas,
        config,
        spool_dir=args.spool,
        duration=args.duration,
        interval=args.interval,
        once=args.once,
        handover_wait=args.handover_wait,
    )
    position = str(report.position or "-")
    if report.handover_waited_seconds is not None:
        print(f"took over from the previous shipper after {report.handover_waited_seconds:.1f} s")
    print(
        f"shipped {report.segments_uploaded} segments ({report.commits_uploaded} commits) in "
        f"{report.syncs} syncs; position {position}"
    )
    for generation, reason in zip(report.generations_started, report.generation_reasons, strict=True):
        print(f"started generation {generation}: {reason}")
    for resync in report.resyncs:
        shipped = f"{resync.pages} of {resync.page_count} pages in {resync.key} ({resync.stored_bytes} bytes)"
        print(f"resynced: {shipped}: {resync.reason}")
    if len(report.replicas) > 1:
        for row in report.replicas:
            print(describe_replica(row))
    return EXIT_OK


def _ship_many(args: argparse.Namespace) -> int:
    if args.interval <= 0 or args.duration < 0 or args.snapshot_interval < 0 or args.handover_wait < 0:
        raise UsageError(
            "--interval must be positive; --duration, --snapshot-interval and --handover-wait not negative"
        )
    if args.park_after < 0:
        raise UsageError("--park-after must not be negative")
    if not args.coalesce >= 0:
        raise UsageError("--coalesce must not be negative (seconds; 0: --interval less an upload's time)")
    codec.validate_level(args.level)
    members, unmatched = plan_fleet(args.patterns, args.replicas)  # a bad template fails here, before any work
    for pattern in unmatched:
        print(f"walship: warning: {pattern!r} matched no database file", file=sys.stderr)
    if not members:
        raise UsageError("ship-many: no database matches the patterns: check them (quote globs for the shell)")
    failure: WalshipError | None = None
    try:
        report = _runner(args).ship_many(
            members,
            args.replicas,
            patterns=args.patterns,
            duration=args.duration,
            interval=args.interval,
            once=args.once,
            level=args.level,
            snapshot_interval=args.snapshot_interval,
            handover_wait=args.handover_wait,
            park_after=args.park_after,
            coalesce=args.coalesce,
            recipients=_age.sealing(args).recipients,
        )
    except FleetFailedError as exc:
        report, failure = exc.report, exc
    for database, state, position, lag, error, replicas in report.table():
        # With several templates, where it goes: its first replica (the others follow from the other templates).
        where = f"  to {replicas[0]} +{len(replicas) - 1} more" if replicas else ""
        print(f"{state:<8}  {database}  {position}  max lag {lag}{where}" + (f"  {error}" if error else ""))
    print(report.summary())
    if failure is not None:
        raise failure
    return EXIT_OK


def _retention(args: argparse.Namespace, replica: str) -> int:
    from walship.retention import RetentionPolicy  # noqa: PLC0415 - only this command needs it

    try:
        policy = RetentionPolicy(
            keep_last=args.keep_last,
            keep_within=args.keep_within,
            keep_daily=args.keep_daily,
            keep_weekly=args.keep_weekly,
            keep_monthly=args.keep_monthly,
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = "".join(f"--{str(part).replace('_', '-')}: " for part in problem["loc"])
        raise UsageError(f"retention: {where}{problem['msg'].removeprefix('Value error, ')}") from None
    report = _runner(args).retention(replica, policy, dry_run=args.dry_run)
    plan, result = report.plan, report.result
    verb = "would delete" if result.dry_run else "delete"
    for decision in plan.snapshots:
        action = "keep  " if decision.keep else "held  " if decision.key in plan.held else verb
        print(f"{action}  {decision.key}  {decision.created_at:%Y-%m-%d %H:%M}Z  ({'; '.join(decision.reasons)})")
    for generation in plan.generations:
        going = [key for key in generation.delete if key not in plan.held]
        if going:
            print(f"{verb}  {len(going)} segments of {generation.generation} ({generation.reason})")
    for line in _describe_held(result.held):
        print(line)
    for key, size in plan.leftovers.items():
        print(f"{verb}  {key}  ({size} bytes left by an interrupted upload)")
    if result.dry_run:
        print(f"dry run: {result.planned} objects, {plan.bytes_to_free} bytes would go; nothing deleted")
    else:
        print(
            f"deleted {len(result.deleted)} objects, {result.bytes_freed} bytes freed "
            f"(policy: {plan.policy.describe()})"
        )
    return EXIT_OK


def _describe_held(held: dict[str, datetime]) -> list[str]:
    """What object lock keeps, a line per generation: retention deletes it once the lock ends."""
    by_generation: dict[str, list[datetime]] = {}
    for key, until in held.items():
        by_generation.setdefault(generation_of(key) or key, []).append(until)
    return [
        f"held    {len(dates)} objects of {generation} under object lock until {max(dates):%Y-%m-%d %H:%M}Z "
        "(retention deletes them once it ends)"
        for generation, dates in sorted(by_generation.items())
    ]


def _verify(args: argparse.Namespace, replica: str) -> int:
    if args.workdir is not None and not args.workdir.is_dir():
        raise UsageError(f"verify: --workdir {args.workdir} is not a directory: create it first")
    if args.require_lock_days is not None and args.require_lock_days < 0:
        raise UsageError(f"verify: --require-lock-days {args.require_lock_days}: give a number of days, 0 or more")
    failure: WalshipError | None = None
    try:
        report = _runner(args).verify(
            replica,
            database_id=args.database_id,
            older=args.older,
            workdir=args.workdir,
            identity_file=_age.identity_file(args),
            require_lock_days=args.require_lock_days,
        )
    except VerificationFailedError as exc:
        report, failure = exc.report, exc
    for check in report.checks:
        print(f"{check.verdict:<6}  {check.name:<15}  {check.detail}")
    print(f"{report.summary()} in {report.duration_seconds:.1f} s")
    if failure is not None:
        raise failure
    return EXIT_OK


def _parse_timestamp(text: str, *, option: str = "--timestamp") -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not ISO 8601: use e.g. 2026-11-24T08:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


if __name__ == "__main__":
    sys.exit(main())
