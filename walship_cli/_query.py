"""``walship query``: SQL on a replica's database at a point, without restoring it.

A query is an interactive read, not a flow run: it reads storage directly
whether or not a Prefect API is configured (docs/ARCHITECTURE.md). Rows are
printed as they come: tab-separated under a header line of column names, or
with ``--json`` one JSON array of objects.
"""

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from walship.envelope import Keyring
from walship.errors import UsageError
from walship.query import DEFAULT_CACHE_BYTES, Columns, open_backup, run_sql
from walship_cli import _age, _direct

__all__ = ["add_query_parser", "query_command"]

_MIB = 1 << 20
_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def add_query_parser(commands: "argparse._SubParsersAction[Any]") -> argparse.ArgumentParser:
    query: argparse.ArgumentParser = commands.add_parser(
        "query",
        help="run SQL on a replica's database at a point, without restoring it",
        description="Prints the rows tab-separated under a header line of column names (NULL as an empty field; "
        "tab, newline, carriage return and backslash as \\t \\n \\r \\\\), or with --json a JSON array of objects. "
        "Blobs are printed as hexadecimal in both. SQL that writes is refused.",
    )
    query.add_argument("sql", metavar="SQL", help="one or more statements; each prints its own header")
    query.add_argument("--replica", required=True, action="append")
    when = query.add_mutually_exclusive_group()
    when.add_argument("--timestamp", help="the state at this ISO 8601 time (UTC if no zone), to segment precision")
    when.add_argument("--sequence", type=int, help="the state up to this WAL segment sequence")
    query.add_argument(
        "--generation", help="read this generation (to its end, or with --sequence up to N); default: newest data"
    )
    query.add_argument("--json", action="store_true", help="a JSON array of objects (column -> value)")
    query.add_argument(
        "--cache-dir",
        type=Path,
        help="keep the snapshot frames read here for later queries (default: a temporary directory, removed)",
    )
    query.add_argument(
        "--cache-mib",
        type=float,
        default=DEFAULT_CACHE_BYTES / _MIB,
        metavar="MIB",
        help=f"at most this much of frames in the cache (default {DEFAULT_CACHE_BYTES // _MIB})",
    )
    _age.identity_option(query)
    return query


def query_command(args: argparse.Namespace, replica: str, parse_timestamp: Callable[[str], datetime]) -> int:
    if args.sequence is not None and args.sequence < 0:
        raise UsageError(f"--sequence {args.sequence}: a WAL sequence is 0 or more ('walship status' shows them)")
    if not args.cache_mib > 0:
        raise UsageError(f"--cache-mib {args.cache_mib:g}: give a positive size in MiB")
    if args.cache_dir is not None and args.cache_dir.exists() and not args.cache_dir.is_dir():
        raise UsageError(f"--cache-dir {args.cache_dir} is not a directory: name a directory (it is created)")
    timestamp = parse_timestamp(args.timestamp) if args.timestamp else None
    identity = _age.identity_file(args)
    with open_backup(
        replica,
        timestamp=timestamp,
        sequence=args.sequence,
        generation=args.generation,
        keys=Keyring.from_file(identity) if identity is not None else None,
        cache_dir=args.cache_dir,
        cache_bytes=int(args.cache_mib * _MIB),
        policy=_direct.retry_policy(),
    ) as connection:
        results = run_sql(connection, args.sql)
        if args.json:
            _print_json(results, sys.stdout)
        else:
            _print_tsv(results, sys.stdout)
    return 0


def _print_tsv(results: Iterable[Columns | tuple[Any, ...]], out: TextIO) -> None:
    for item in results:
        values = item.names if isinstance(item, Columns) else (_tsv_field(value) for value in item)
        out.write("\t".join(values) + "\n")


def _tsv_field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.hex()
    return str(value).translate(_TSV_ESCAPES)


def _print_json(results: Iterable[Columns | tuple[Any, ...]], out: TextIO) -> None:
    names: tuple[str, ...] = ()
    out.write("[")
    first = True
    for item in results:
        if isinstance(item, Columns):
            names = item.names
            continue
        out.write("\n" if first else ",\n")
        out.write(json.dumps(dict(zip(names, (_json_value(v) for v in item), strict=True)), allow_nan=False))
        first = False
    out.write("\n]\n" if not first else "]\n")


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # SQLite keeps infinities; JSON has no number for them
    return value
