"""The tables of bench.ship_replicas: two replicas against one, and one replica down."""

import argparse
import math
import os
import re
from typing import Any

from bench.ship_lag_report import TARGET_P99, cell

CPU_GOAL, READS_TOLERANCE, HEALTHY_TOLERANCE = 1.3, 1.10, 1.10
_MIB = 1 << 20
_MODES = {"stall": "stalled (connections hang)", "stop": "stopped (connections refused)"}


def _ratio(b: float | None, a: float | None) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or a == 0:
        return "-"
    return f"{b / a:.2f}"


def _got(received: dict[str, Any] | None) -> str:
    return f"{received['markers'] - received['missing']}/{received['markers']}" if received else "-"


def _said(label: str, run: dict[str, Any]) -> None:
    """What the shipper printed at its end, and why it failed when it did."""
    if run["ended_before_sigterm"]:
        print(f"    {label}: THE SHIPPER ENDED ON ITS OWN before the bench stopped it (exit {run['exit_code']})")
    for line in run["stdout"] + run["said"]:
        print(f"    {label}: {line}")


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_compare(result: dict[str, Any], args: argparse.Namespace) -> None:
    for n, runs in enumerate(result["rounds"]):
        a, b = runs["A"], runs["B"]
        print(
            f"\n## two replicas (B: {', '.join(b['replicas'])}) against one (A: s3), round {n + 1}\n\n"
            f"{args.rate:g} tx/s for {args.seconds:g} s, 2 writer processes, a {args.mib} MiB database; "
            f"5-minute load average after A {a['loadavg']:.2f}, after B {b['loadavg']:.2f} ({os.cpu_count()} CPUs)\n"
        )
        print("| metric | A: one replica | B: two replicas | B/A |\n|---|---:|---:|---:|")

        def row(name: str, va: float | None, vb: float | None, digits: int = 2) -> None:
            ca = "-" if va is None else cell(va, digits)
            print(f"| {name} | {ca} | {'-' if vb is None else cell(vb, digits)} | {_ratio(vb, va)} |")

        row("transactions committed", a["transactions"], b["transactions"], 0)
        for replica in ("s3", "file"):
            ra, rb = a["received"].get(replica), b["received"][replica]
            print(f"| {replica}: markers in storage / written | {_got(ra)} | {_got(rb)} | |")
            for q in ("p50", "p99", "max"):
                row(f"{replica}: commit-to-storage lag {q} (s)", ra[q] if ra else None, rb[q], 3)
        row("shipper CPU s, writers running + 5 s", a["cpu_load_s"], b["cpu_load_s"])
        row("shipper CPU s, whole process", a["cpu_total_s"], b["cpu_total_s"])
        row("shipper RSS at the start of the load (MiB)", a["rss_mib"]["load_start"], b["rss_mib"]["load_start"], 1)
        row("shipper RSS once drained (MiB)", a["rss_mib"]["drained"], b["rss_mib"]["drained"], 1)
        row("shipper peak RSS, whole process (MiB)", a["rss_mib"]["peak"], b["rss_mib"]["peak"], 1)
        row("WAL bytes read by the shipper (MiB)", a["reads"]["wal_bytes"] / _MIB, b["reads"]["wal_bytes"] / _MIB)
        row("  read calls on the WAL", a["reads"]["wal_calls"], b["reads"]["wal_calls"], 0)
        captured = a["received"]["s3"]["wal_bytes"], b["received"]["s3"]["wal_bytes"]
        row("WAL bytes in the s3 replica's segments (MiB)", captured[0] / _MIB, captured[1] / _MIB)
        row("WAL bytes read / WAL bytes in segments", a["wal_read_per_captured"], b["wal_read_per_captured"])
        row("-shm bytes read (KiB)", a["reads"]["shm_bytes"] / 1024, b["reads"]["shm_bytes"] / 1024, 1)
        row("other files read (MiB)", a["reads"]["other_bytes"] / _MIB, b["reads"]["other_bytes"] / _MIB)
        row("writer transaction p99 (ms)", a["writer_p99_ms"], b["writer_p99_ms"], 1)
        row("shipper exit code", a["exit_code"], b["exit_code"], 0)
        for label, side in (("A", a), ("B", b)):
            _said(label, side)
    r = result["ratios"]
    b_runs = [runs["B"] for runs in result["rounds"]]
    worst = max(run["received"][name]["p99"] for run in b_runs for name in run["received"])
    missing = sum(got["missing"] for run in b_runs for got in run["received"].values())
    failed = sum(run["exit_code"] != 0 for runs in result["rounds"] for run in runs.values())
    print(
        f"\nmedian over the {r['rounds']:.0f} of {len(result['rounds'])} round(s) whose shippers both exited 0, "
        f"B/A: CPU (writers + 5 s) {r['cpu_load']:.2f}, "
        f"CPU (whole process) {r['cpu_total']:.2f}, s3 lag p99 {r['s3_lag_p99']:.2f}, "
        f"WAL bytes read per WAL byte shipped {r['wal_read_per_captured']:.2f}\n"
        f"goals: lag p99 <= {TARGET_P99:g} s to each replica: worst {worst:.3f} s, {missing} markers missing "
        f"{_verdict(worst <= TARGET_P99 and not missing)}; CPU <= {CPU_GOAL}x one replica's: "
        f"{r['cpu_load']:.2f} {_verdict(r['cpu_load'] <= CPU_GOAL)}; no extra reads of the WAL (WAL read per byte "
        f"shipped within {READS_TOLERANCE - 1:.0%} of one replica's): {r['wal_read_per_captured']:.2f} "
        f"{_verdict(r['wal_read_per_captured'] <= READS_TOLERANCE)}; every shipper exits 0: {failed} did not "
        f"{_verdict(not failed)}"
    )
    print(
        "\nWAL bytes read: what the shipper process read from the database's -wal file (read/pread/readv at the "
        "libc boundary, bench/wal_reads.c): walship's scans and copies and SQLite's own reads in its checkpoints "
        "and snapshots. WAL bytes in segments: the raw (decompressed) bytes of the s3 replica's WAL segments, "
        "each once. Lag: from a marker's COMMIT returning to the first object holding it complete in storage "
        "(s3: moto wrote its response; file: the ctime its rename set)."
    )


def print_outage(result: dict[str, Any]) -> None:
    s, w = result["seconds"], result["windows"]
    run = result["summary"]
    print(
        f"\n## one replica down: s3 {_MODES[result['mode']]} for {s['outage']:g} s ({result['outage_took_s']:.1f} s) "
        f"after {s['before']:g} s of writes, then {s['after']:g} s more; replicas: {', '.join(run['replicas'])}\n"
    )
    print("| markers committed | replica | markers | in storage | lag p50 (s) | lag p99 (s) | lag max (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for window, label in (("before", "before the outage"), ("during", "during it"), ("after", "after it")):
        for name, got in w[window].items():
            print(
                f"| {label} | {name} | {got['markers']} | {got['markers'] - got['missing']} | {cell(got['p50'], 3)} "
                f"| {cell(got['p99'], 3)} | {cell(got['max'], 3)} |"
            )
    rate = result["shipper_cpu_per_second"]
    print(
        f"\nshipper CPU (s per s) while the markers of each window were written: before {rate['before']:.3f}, "
        f"during {rate['during']:.3f}, after {rate['after']:.3f}"
    )
    drained, back = result["s3_backlog_drained_s"], result["s3_lag_back_under_target_s"]
    print(
        f"file replica, lag p99 during the outage / before it: {result['file_p99_during_over_before']:.2f} "
        f"{_verdict(result['file_p99_during_over_before'] <= HEALTHY_TOLERANCE)} (within "
        f"{HEALTHY_TOLERANCE - 1:.0%}); after it / before: {result['file_p99_after_over_before']:.2f}\n"
        f"s3 replica: everything committed before the resume was in storage "
        f"{'never' if drained is None else f'{drained:.1f} s'} after it; from markers committed "
        f"{'never' if back is None else f'{back:.1f} s'} after the resume on, each was in storage within "
        f"{TARGET_P99:g} s; the spool was empty {result['drain_after_writers_s']:.1f} s after the writers stopped"
    )
    same = result["same_generation"]
    print(f"generations: {result['generations']}: {'one, the same in both' if same else 'NOT the same single one'}")
    print(
        f"shipper: exit code {run['exit_code']}; CPU {run['cpu_total_s']:.1f} s; RSS "
        f"{run['rss_mib']['load_start']:.0f} MiB at the start of the load, {run['rss_mib']['drained']:.0f} MiB once "
        f"drained, peak {run['rss_mib']['peak']:.0f} MiB; {len(run['warnings'])} warning lines"
    )
    _said("outage", run)
    kinds: dict[str, list[str]] = {}  # the same warning with other numbers is one kind
    for line in run["warnings"]:
        message = line.split(" - ", 1)[-1]
        kinds.setdefault(re.sub(r"\d+", "N", message)[:80], []).append(message)
    for messages in kinds.values():
        print(f"    warning ({len(messages)}x, the first): {messages[0][:300]}")
    for name, got in result["restores"].items():
        verdict = "equals the source" if got["equal"] else "DIFFERS FROM the source"
        print(
            f"restore of {name} ({got['seconds']:.1f} s, exit {got['exit_code']}): {verdict}; rows "
            f"{got.get('rows', '-')} (source {got['source_rows']})" + ("" if got["equal"] else f": {got['said']}")
        )
