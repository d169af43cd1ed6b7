"""One writer process for many databases of bench.fleet, as one application serving many tenants does.

Each database gets its own connection and its own steady rate; the
transactions are bench.ship_lag_writer's (markers included), interleaved by
when each is due. Writing a hundred databases from a process each would
spend two small cores on the processes' wake-ups alone.

    python -m bench.fleet_writer --rate 20 --seconds 60 --marker-every 5 DB:LOG [DB:LOG ...]
"""

import argparse
import heapq
import time
from pathlib import Path

from bench.ship_lag_writer import connect, transaction


def write_many(pairs: list[tuple[Path, Path]], rate: float, seconds: float, every: int) -> None:
    connections = [connect(db) for db, _ in pairs]
    markers: list[list[str]] = [[] for _ in pairs]
    counts = [0] * len(pairs)
    interval = 1.0 / rate
    start = time.monotonic()
    deadline = start + seconds
    # Spread the databases' first transactions over one interval.
    due = [(start + i * interval / len(pairs), i) for i in range(len(pairs))]
    while due and (at := due[0][0]) < deadline:
        time.sleep(max(0.0, at - time.monotonic()))
        _, i = heapq.heappop(due)
        counts[i] += 1
        if token := transaction(connections[i], 1, counts[i], every):
            markers[i].append(token)
        heapq.heappush(due, (at + interval, i))
    for connection in connections:
        connection.close()
    for (_, log), lines in zip(pairs, markers, strict=True):
        log.write_text("".join(f"{line}\n" for line in lines))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_writer")
    parser.add_argument("--rate", type=float, required=True, help="transactions per second, each database")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--marker-every", type=int, default=20)
    parser.add_argument("pairs", nargs="+", help="DB:LOG (the database, and where its markers go)")
    args = parser.parse_args()
    pairs = [(Path(db), Path(log)) for db, log in (pair.rsplit(":", 1) for pair in args.pairs)]
    write_many(pairs, args.rate, args.seconds, args.marker_every)


if __name__ == "__main__":
    main()
