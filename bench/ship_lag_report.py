"""The markdown report of bench.ship_lag: sides side by side, targets, and where walship's lag goes."""

import argparse
import itertools
import math
import os
import statistics
from typing import Any

KINDS = ("PUT", "LIST", "GET", "HEAD", "DELETE", "POST")
TARGET_P99 = 1.0
FLAT_TOLERANCE = 0.05  # RSS may move by 5 % (or 2 MiB) from its value a quarter into the load


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def lags(side: dict[str, Any]) -> list[float]:
    return [(side["durable"][t] - ns) / 1e9 for t, ns in side["markers"].items() if t in side["durable"]]


def rss_at(side: dict[str, Any], at_ns: int) -> float:
    """The RSS sample nearest to ``at_ns``."""
    return float(min(side["samples"], key=lambda s: abs(s[0] - at_ns / 1e9))[1])


def flat(side: dict[str, Any]) -> tuple[float, float, float, bool]:
    t0, t1, t2 = side["windows"]
    base, loaded, idle = rss_at(side, t0 + (t1 - t0) // 4), rss_at(side, t1), rss_at(side, t2)
    limit = max(2.0, base * FLAT_TOLERANCE)
    return base, loaded, idle, abs(loaded - base) <= limit and abs(idle - base) <= limit


def cell(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "n/a" if a != b else "="
    return f"{a / b:.2f}"


def row(name: str, w: float, ls: float, digits: int = 2) -> str:
    return f"| {name} | {cell(w, digits)} | {cell(ls, digits)} | {ratio(w, ls)} |"


def report(
    sides: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    ok: dict[str, bool],
    prefect: tuple[float, float],
    version: str,
    config: str,
) -> None:
    w, ls = sides["walship"], sides["litestream"]
    lw, ll = lags(w), lags(ls)
    print(
        f"\nworkload: {args.mib} MiB WAL-mode database, {args.writers} writer processes (stdlib sqlite3 "
        f"{__import__('sqlite3').sqlite_version}, autocheckpoint on), {args.rate:g} tx/s in total for "
        f"{args.seconds:g} s, then {args.idle:g} s idle; every 20th transaction is a marker.\n"
        f"walship: sync every {args.interval:g} s, upload when the spool has entries (the flow's loop, core only). "
        f"Litestream {version}: its defaults; its log says sync-interval={ls['sync_interval']}.\n"
        "Both sides ran one after the other against the same moto server, in this process; 5-minute load "
        f"average at the end of each side: walship {w['loadavg']:.2f}, litestream {ls['loadavg']:.2f} "
        f"({os.cpu_count()} CPUs; this run's own processes account for about 1).\n"
    )
    print("| metric | walship | litestream | ratio (walship/litestream) |\n|---|---:|---:|---:|")
    print(row("transactions committed", w["transactions"], ls["transactions"], 0))
    print(f"| markers durable / written | {len(lw)}/{len(w['markers'])} | {len(ll)}/{len(ls['markers'])} | |")
    for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
        print(row(f"commit-to-durable lag {name} (s)", pct(lw, q), pct(ll, q)))
    for name, q in (("p99", 0.99), ("max", 1.0)):
        print(row(f"writer transaction {name} (ms)", pct(w["latencies"], q) * 1e3, pct(ls["latencies"], q) * 1e3, 1))
    for window, label in (("load", "under load"), ("idle", "idle")):
        for kind in KINDS:
            print(row(f"{kind} per minute, {label}", w["requests"][window][kind], ls["requests"][window][kind], 1))
    idle = w["requests"]["idle"]["total"], ls["requests"]["idle"]["total"]
    print(row("requests in the idle window (count)", *idle, 0))
    print(row("shipper CPU s (user+sys), load", w["cpu"][0], ls["cpu"][0]))
    print(row("shipper CPU s (user+sys), idle", w["cpu"][1], ls["cpu"][1]))
    print(row("shipper peak RSS MiB (VmHWM)", w["hwm"], ls["hwm"], 1))
    fw, fl = flat(w), flat(ls)
    for n, when in enumerate(("a quarter into the load", "at the end of the load", "at the end of the idle time")):
        print(row(f"RSS MiB {when}", fw[n], fl[n], 1))
    print(
        f"\nload window: writers running plus {args.drain:g} s to drain the last sync; idle window: the rest. "
        "POST = multipart create/complete; multi-object delete counts as DELETE.\n"
        f"Prefect flow process excluded: `import prefect, flows.ship` alone peaks at {prefect[0]:.0f} MiB RSS "
        f"and takes {prefect[1]:.1f} s; each upload task run adds Prefect's task orchestration on top."
    )
    print(f"\nRSS over time (MiB, sampled every {args.sample:g} s from the start of the load):\n")
    print("| t (s) | walship | litestream |\n|---:|---:|---:|")
    t0 = w["windows"][0] / 1e9
    for (tw, rw), (_, rl) in zip(w["samples"], ls["samples"], strict=False):
        print(f"| {tw - t0:.0f} | {rw:.1f} | {rl:.1f} |")
    print("\ntargets:")
    for name, side, lag, mem in (("walship", w, lw, fw), ("litestream", ls, ll, fl)):
        p99, quiet = pct(lag, 0.99), side["requests"]["idle"]["total"]
        missing = len(side["markers"]) - len(lag)
        lag_ok = "PASS" if p99 <= TARGET_P99 and not missing else "FAIL"
        never = f", {missing} markers never durable" if missing else ""
        print(
            f"- {name}: p99 lag {cell(p99)} s {lag_ok} (<= {TARGET_P99} s{never}); idle requests {quiet:.0f} "
            f"{'PASS' if quiet == 0 else 'FAIL'} (0); memory {'flat PASS' if mem[3] else 'not flat FAIL'} "
            f"({mem[0]:.1f} -> {mem[1]:.1f} -> {mem[2]:.1f} MiB)"
        )
    breakdown(w, args)
    print(f"\nLitestream config (DB and ENDPOINT filled in per run; credentials from the environment):\n\n{config}")
    verdict = {side: "equals" if same else "DIFFERS FROM" for side, same in ok.items()}
    print(
        f"restores (content_digest; Litestream's _litestream_* tables left out): walship {verdict['walship']} "
        f"the source, litestream {verdict['litestream']} the source"
    )


def breakdown(w: dict[str, Any], args: argparse.Namespace) -> None:
    """Where walship's lag goes, per marker: waiting for the capture, until the upload starts, the upload."""
    segments = {s["key"]: s for s in w["events"]["segments"]}
    parts: dict[str, list[float]] = {"commit -> captured (sync)": [], "captured -> upload starts": []}
    parts |= {"upload start -> PUT complete": [], "put+head (per segment)": []}
    for token, ns in w["markers"].items():
        seg = segments.get(w["where"].get(token, "").partition("/")[2])
        if seg is None:
            continue
        parts["commit -> captured (sync)"].append(seg["captured_at"] - ns / 1e9)
        parts["captured -> upload starts"].append(seg["start"] - seg["captured_at"])
        parts["upload start -> PUT complete"].append(w["durable"][token] / 1e9 - seg["start"])
    for seg in w["events"]["segments"]:
        parts["put+head (per segment)"].append(seg.get("put+head", 0.0))
    t0, t1, _ = w["windows"]
    cycles = [c for c in w["events"]["cycles"] if t0 / 1e9 <= c["start"] <= t1 / 1e9 + args.drain]
    parts["sync() per cycle"] = [c["sync"] for c in cycles]
    parts["  of which sealing segments (compress, fsync)"] = [c.get("seal", 0.0) for c in cycles]
    parts["  of which checkpoint (PASSIVE, then the pause)"] = [c.get("checkpoint", 0.0) for c in cycles]
    parts["  of which PASSIVE backfill beside the pin"] = [c.get("passive", 0.0) for c in cycles]
    parts["  writers paused (per pause)"] = [c["paused"] for c in cycles if "paused" in c]
    parts["upload_pending per cycle"] = [c["upload"] for c in cycles]
    parts["  of which open_store (new boto3 client)"] = [c.get("open_store", 0.0) for c in cycles]
    parts["cycle start spacing"] = [b["start"] - a["start"] for a, b in itertools.pairwise(cycles)]
    checkpoints = sum(1 for c in cycles if "checkpoint" in c)
    pauses = sum(1 for c in cycles if "paused" in c)
    print(
        f"\nwhere walship's lag goes (seconds; interval {args.interval:g} s; {len(w['events']['segments'])} segments; "
        f"{len(cycles)} cycles under load, {checkpoints} of them checkpointed, {pauses} paused writers):\n"
    )
    print("| stage | p50 | p99 | max |\n|---|---:|---:|---:|")
    for name, values in parts.items():
        print(f"| {name} | {cell(pct(values, 0.5), 3)} | {cell(pct(values, 0.99), 3)} | {cell(pct(values, 1.0), 3)} |")


def summary(rounds: list[dict[str, dict[str, Any]]]) -> None:
    """Each headline metric per round and the median of the per-round ratios: a round's two sides ran
    back to back, so its ratio is the fairest figure a shared machine gives."""
    metrics: dict[str, Any] = {
        "writer transaction p99 (ms)": lambda s: pct(s["latencies"], 0.99) * 1e3,
        "writer transaction max (ms)": lambda s: pct(s["latencies"], 1.0) * 1e3,
        "commit-to-durable lag p99 (s)": lambda s: pct(lags(s), 0.99),
        "shipper CPU s, load": lambda s: s["cpu"][0],
        "shipper peak RSS MiB": lambda s: s["hwm"],
        "RSS MiB at the end of the load": lambda s: flat(s)[1],
    }
    print(f"\nsummary of {len(rounds)} rounds (walship / litestream per round; median ratio):\n")
    print("| metric | " + " | ".join(f"round {n + 1}" for n in range(len(rounds))) + " | median ratio |")
    print("|---|" + "---:|" * (len(rounds) + 1))
    for name, measure in metrics.items():
        cells, ratios = [], []
        for sides in rounds:
            w, ls = measure(sides["walship"]), measure(sides["litestream"])
            cells.append(f"{cell(w)} / {cell(ls)}")
            ratios.append(w / ls if ls else math.nan)
        print(f"| {name} | " + " | ".join(cells) + f" | {statistics.median(ratios):.2f} |")
    loads = ", ".join(f"{sides['walship']['loadavg']:.2f}/{sides['litestream']['loadavg']:.2f}" for sides in rounds)
    print(f"\n5-minute load average at the end of each side (walship/litestream), per round: {loads}")


def versus_baseline(rounds: list[dict[str, dict[str, Any]]]) -> None:
    """walship against the baseline checkout's walship (``--baseline``) and Litestream, round by round,
    with the median of the per-round ratios."""
    metrics: dict[str, Any] = {
        "lag p50 (s)": lambda s: pct(lags(s), 0.5),
        "lag p99 (s)": lambda s: pct(lags(s), 0.99),
        "lag max (s)": lambda s: pct(lags(s), 1.0),
        "PUT per minute, load": lambda s: s["requests"]["load"]["PUT"],
        "requests, idle window": lambda s: s["requests"]["idle"]["total"],
        "shipper CPU s, load": lambda s: s["cpu"][0],
        "shipper CPU s, idle": lambda s: s["cpu"][1],
        "writer transaction p99 (ms)": lambda s: pct(s["latencies"], 0.99) * 1e3,
    }
    sides = ("walship", "walship@base", "litestream")
    print(f"\nwalship / walship@base / litestream, {len(rounds)} round(s); median ratios over the rounds:\n")
    print("| metric | " + " | ".join(f"round {n + 1}" for n in range(len(rounds))) + " | /base | /litestream |")
    print("|---|" + "---:|" * (len(rounds) + 2))
    for name, measure in metrics.items():
        values = [[measure(r[side]) for side in sides] for r in rounds]
        cells = [" / ".join(cell(v) for v in row) for row in values]
        over_base = statistics.median(ratio_value(w, b) for w, b, _ in values)
        over_ls = statistics.median(ratio_value(w, ls) for w, _, ls in values)
        print(f"| {name} | " + " | ".join(cells) + f" | {cell(over_base)} | {cell(over_ls)} |")
    loads = ", ".join("/".join(f"{r[side]['loadavg']:.2f}" for side in sides) for r in rounds)
    print(f"\n5-minute load average at the end of each side, per round: {loads}")


def ratio_value(a: float, b: float) -> float:
    return a / b if b else (1.0 if a == b else math.nan)
