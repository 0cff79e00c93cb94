"""The six scenarios of the benchmark (issue 6). Each appends its figures to ``Bench.results`` and
its lines to ``Bench.checks``; every ratio compares figures measured side by side in this run."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field

import psutil
import psycopg2
import requests
from django.db import connection

from bench import load
from bench.report import Check
from bench.stack import Stack
from bench.views import ROW_COUNTER_TABLE
from counterproject.redis_client import get_redis
from counters.models import ApiKey, Namespace
from rollups import pipeline, queues

COUNTERS_API = "/api/v1/namespaces"
FLOOR_SETTLE_SECONDS = 5
# gunicorn_conf.py's default 4 processes x 4 threads: 16 connections keep every thread busy.
CONNECTIONS = 16


@dataclass
class Bench:
    stack: Stack
    quick: bool
    key: str = ""
    results: dict = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """Length of one saturating wrk run."""
        return 2 if self.quick else 8

    @property
    def paced_seconds(self) -> float:
        return 2 if self.quick else 5

    def wrk(self, kind: str, paths: list[str], **options) -> load.Load:
        options.setdefault("connections", CONNECTIONS)
        options.setdefault("seconds", self.seconds)
        return load.run(self.stack.base_url, kind, paths, self.key, **options)

    def check(self, scenario: str, label: str, figure: str, **fields) -> None:
        self.checks.append(Check(scenario, label, figure, **fields))


def namespace(name: str, counter_type: str, **fields) -> Namespace:
    return Namespace.objects.create(name=name, counter_type=counter_type, **fields)


def counter_path(ns: Namespace, counter: str) -> str:
    return f"{COUNTERS_API}/{ns.name}/counters/{counter}"


def insert_events(ns_name: str, prefix: str, counters: int, events: int, age_seconds: int = 0) -> None:
    """Append ``events`` +1 events spread over ``counters`` counters in one statement, bypassing the
    API (no tokens, no triggers): history and un-rolled tails of a chosen size."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO counters_event (namespace, counter, kind, delta, event_time) "
            "SELECT %s, %s || (g %% %s), 0, 1, now() - make_interval(secs => %s) FROM generate_series(0, %s - 1) g",
            [ns_name, prefix, counters, age_seconds, events],
        )


def vacuum_events() -> None:
    # Bulk-loaded rows are invisible to index-only scans until the visibility map knows them; a
    # service at steady state has autovacuum for that.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) counters_event")


def rate(figure: float, unit: str = "req/s") -> str:
    return f"{figure:,.0f} {unit}"


def ms(figure: float) -> str:
    return f"{figure:.1f} ms"


def setup_key(bench: Bench) -> None:
    _, bench.key = ApiKey.generate("bench", role="admin")


# 1. HTTP floor ---------------------------------------------------------------------------------


def http_floor(bench: Bench) -> None:
    eventual = namespace("b-eventual", "eventual")
    accurate = namespace("b-accurate", "accurate")
    best_effort = namespace("b-best-effort", "best_effort")
    # accept_limit of an hour: the tails stay un-rolled for the whole run.
    tail = namespace("b-tail", "accurate", accept_limit_seconds=3600)
    insert_events(eventual.name, "cached", 1, 10, age_seconds=60)
    pipeline.rollup(eventual, ["cached0"])
    insert_events(tail.name, "tail-1k-", 1, 1_000)
    insert_events(tail.name, "tail-100k-", 1, 100_000)
    vacuum_events()

    def adds(ns: Namespace) -> list[str]:
        return [counter_path(ns, f"c{i}") + "/add" for i in range(64)]

    cases = [
        ("GetCount eventual (cached)", "get", [counter_path(eventual, "cached0")]),
        ("AddCount best_effort", "add", adds(best_effort)),
        ("AddCount eventual", "add", adds(eventual)),
        ("AddCount accurate", "add", adds(accurate)),
        ("GetCount accurate, tail 0", "get", [counter_path(tail, "empty")]),
        ("GetCount accurate, tail 1k", "get", [counter_path(tail, "tail-1k-0")]),
        ("GetCount accurate, tail 100k", "get", [counter_path(tail, "tail-100k-0")]),
    ]
    bench.wrk("get", ["/bench/noop"], seconds=1)
    bench.wrk("add", adds(eventual), seconds=1)
    # The warm-up's rollups and the autovacuum of the bulk-loaded tails would otherwise share the
    # cores with the floor's first run (it measured 850 req/s against 1,700 on a quiet server).
    time.sleep(FLOOR_SETTLE_SECONDS)
    floors = [bench.wrk("get", ["/bench/noop"]) for _ in range(2)]
    half = max(run.rate for run in floors) / 2
    floor_paced = bench.wrk("get", ["/bench/noop"], rate=half, seconds=bench.paced_seconds)
    measured = []
    for label, kind, paths in cases:
        full = bench.wrk(kind, paths)
        paced = bench.wrk(kind, paths, rate=half, seconds=bench.paced_seconds) if full.rate >= half else None
        measured.append((label, full, paced))
    # Once more after the cases; every ratio is to the best of the three floor runs.
    floors.append(bench.wrk("get", ["/bench/noop"]))
    floor = max(floors, key=lambda run: run.rate)
    results = {
        "floor": floor.as_dict(),
        "floor_runs": [run.as_dict() for run in floors],
        "floor_at_half_rate": floor_paced.as_dict(),
    }
    bench.check(
        "1 HTTP floor",
        "no-op authenticated DRF endpoint (best of 3)",
        f"{rate(floor.rate)}, p50 {ms(floor.p50_ms)}, p99 {ms(floor.p99_ms)}",
        reference=f"runs {' / '.join(f'{run.rate:,.0f}' for run in floors)}; at {rate(floor_paced.rate)}: "
        f"p99 {ms(floor_paced.p99_ms)}",
    )
    for label, full, paced in measured:
        entry = {"max": full.as_dict()}
        bench.check(
            "1 HTTP floor",
            label,
            f"{rate(full.rate)}, p50 {ms(full.p50_ms)}" + (f", {full.errors} errors" if full.errors else ""),
            reference=rate(floor.rate),
            ratio=full.rate / floor.rate,
            target=">= 0.70",
            met=full.rate >= 0.7 * floor.rate and not full.errors,
        )
        results[label] = entry
        if paced is None:
            bench.check(
                "1 HTTP floor", f"  p99 at half floor ({rate(half)})", "max rate below it", target="<= 10 ms", met=False
            )
            continue
        entry["at_half_floor"] = paced.as_dict()
        bench.check(
            "1 HTTP floor",
            f"  p99 at half floor ({rate(paced.rate)})",
            ms(paced.p99_ms),
            target="<= 10 ms",
            met=paced.p99_ms <= 10 and not paced.errors,
        )
    bench.results["http_floor"] = results


# 2. Batch ingestion ----------------------------------------------------------------------------

BATCH = 500


def raw_insert(seconds: float, writers: int, rows: int, counters: int = 1000) -> float:
    """Events/s of multi-row INSERTs of ``rows`` events, one transaction each, from ``writers``
    psycopg connections: the store's own limit for the batch endpoint's rows."""
    params = connection.get_connection_params()
    statements = []
    for start in range(0, counters, rows):
        values = ",".join(f"('b-raw','c{(start + j) % counters}',0,1)" for j in range(rows))
        statements.append(f"INSERT INTO counters_event (namespace, counter, kind, delta) VALUES {values}")  # noqa: S608
    done = [0] * writers

    def write(index: int, stop_at: float) -> None:
        conn = psycopg2.connect(**params)
        try:
            with conn.cursor() as cursor:
                n = 0
                while time.monotonic() < stop_at:
                    cursor.execute(statements[n % len(statements)])
                    conn.commit()
                    n += 1
            done[index] = n * rows
        finally:
            conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=write, args=(i, started + seconds)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - started)


def batch_ingestion(bench: Bench) -> None:
    ns = namespace("b-batch", "eventual")
    path = [f"{COUNTERS_API}/{ns.name}/batch"]
    writers = 4
    with_tokens = bench.wrk("batch", path, connections=writers, batch_size=BATCH, batch_tokens=True)
    without_tokens = bench.wrk("batch", path, connections=writers, batch_size=BATCH, batch_tokens=False)
    raw = raw_insert(bench.seconds, writers, BATCH)
    bench.results["batch_ingestion"] = {
        "with_tokens": with_tokens.as_dict() | {"events_per_second": with_tokens.rate * BATCH},
        "without_tokens": without_tokens.as_dict() | {"events_per_second": without_tokens.rate * BATCH},
        "raw_insert_events_per_second": raw,
    }
    for label, run in (("batch of 500, with tokens", with_tokens), ("batch of 500, no tokens", without_tokens)):
        events = run.rate * BATCH
        bench.check(
            "2 batch ingestion",
            label,
            rate(events, "events/s") + (f", {run.errors} errors" if run.errors else ""),
            reference=f"raw INSERT {rate(raw, 'events/s')}",
            ratio=events / raw,
            target=">= 0.50",
            met=events >= 0.5 * raw and not run.errors,
        )


# 3. Hot counter --------------------------------------------------------------------------------


def hot_counter(bench: Bench) -> None:
    ns = namespace("b-hot", "eventual")
    spread = [f"s{i}" for i in range(64)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {ROW_COUNTER_TABLE} (name) SELECT unnest(%s::text[])",  # noqa: S608 - constant
            [["hot", *spread]],
        )
    runs = {
        "eventual_one": bench.wrk("add", [counter_path(ns, "hot") + "/add"], connections=64),
        "eventual_spread": bench.wrk("add", [counter_path(ns, c) + "/add" for c in spread], connections=64),
        "row_one": bench.wrk("row", ["/bench/rows/hot"], connections=64),
        "row_spread": bench.wrk("row", [f"/bench/rows/{c}" for c in spread], connections=64),
    }
    bench.results["hot_counter"] = {name: run.as_dict() for name, run in runs.items()}
    for label, one, many, target in (
        ("eventual AddCount: 1 counter vs 64", runs["eventual_one"], runs["eventual_spread"], 0.9),
        ("naive UPDATE row counter: 1 vs 64", runs["row_one"], runs["row_spread"], None),
    ):
        errors = one.errors + many.errors
        bench.check(
            "3 hot counter (64 writers)",
            label,
            f"{rate(one.rate)}, p99 {ms(one.p99_ms)}" + (f", {errors} errors" if errors else ""),
            reference=f"{rate(many.rate)}, p99 {ms(many.p99_ms)}",
            ratio=one.rate / many.rate,
            target=f">= {target:.2f}" if target else "reported",
            met=(one.rate >= target * many.rate and not errors) if target else None,
        )


# 4. Rollup throughput --------------------------------------------------------------------------


def rollup_throughput(bench: Bench) -> None:
    events = 100_000 if bench.quick else 1_000_000
    counters = 1000
    ns = namespace("b-rollup", "eventual", accept_limit_seconds=0)
    insert_events(ns.name, "r", counters, events)
    vacuum_events()
    scan = "SELECT counter, sum(delta) FROM counters_event WHERE namespace = %s GROUP BY counter"
    raw_seconds = []
    with connection.cursor() as cursor:
        for _ in range(2):
            started = time.perf_counter()
            cursor.execute(scan, [ns.name])
            cursor.fetchall()
            raw_seconds.append(time.perf_counter() - started)
    started = time.perf_counter()
    folded = pipeline.rollup(ns, [f"r{i}" for i in range(counters)])
    rollup_seconds = time.perf_counter() - started
    raw_rate = events / min(raw_seconds)
    rollup_rate = folded.events / rollup_seconds
    bench.results["rollup_throughput"] = {
        "events": events,
        "counters": counters,
        "folded_events": folded.events,
        "rollup_seconds": rollup_seconds,
        "raw_group_by_seconds": min(raw_seconds),
    }
    bench.check(
        "4 rollup throughput",
        f"pipeline.rollup, {events:,} events / {counters:,} counters",
        rate(rollup_rate, "events/s") + ("" if folded.events == events else f" (folded {folded.events:,})"),
        reference=f"GROUP BY {rate(raw_rate, 'events/s')}",
        ratio=rollup_rate / raw_rate,
        target=">= 0.50",
        met=rollup_rate >= 0.5 * raw_rate and folded.events == events,
    )


# 5. Convergence --------------------------------------------------------------------------------


def convergence(bench: Bench) -> None:
    """Lag from an add's acknowledgement until GetCount (eventual) includes it, under a mixed
    add/get load at half the eventual AddCount's measured maximum, with beat and worker running."""
    accept_limit = 1
    ns = namespace("b-converge", "eventual", accept_limit_seconds=accept_limit)
    add_rate = bench.results["http_floor"]["AddCount eventual"]["max"]["rate"]
    seconds = 12 if bench.quick else 40
    background: dict = {}

    def mixed_load() -> None:
        paths = [counter_path(ns, f"m{i}") for i in range(1000)]
        background["load"] = bench.wrk("mixed", paths, connections=8, seconds=seconds, rate=add_rate / 2)

    loader = threading.Thread(target=mixed_load)
    loader.start()
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {bench.key}"
    base = bench.stack.base_url
    pending: dict[str, float] = {}
    lags: list[float] = []
    probe_every, poll_every = 0.25, 0.1
    started = time.monotonic()
    next_probe = started
    probes = 0
    # Probing stops 5 s before the load does, and polling goes on until every probe converged.
    while (time.monotonic() - started < seconds - 5 or pending) and time.monotonic() - started < seconds + 30:
        now = time.monotonic()
        if now >= next_probe and now - started < seconds - 5:
            counter = f"probe{probes}"
            response = session.post(
                base + counter_path(ns, counter) + "/add",
                json={"delta": 1},
                headers={"Idempotency-Key": uuid.uuid4().hex},
                timeout=10,
            )
            if response.status_code == 200:
                pending[counter] = time.monotonic()
            probes += 1
            next_probe += probe_every
        for counter, acked in list(pending.items()):
            response = session.get(base + counter_path(ns, counter), timeout=10)
            if response.status_code == 200 and response.json()["count"] == 1:
                lags.append(time.monotonic() - acked)
                del pending[counter]
        time.sleep(poll_every)
    loader.join()
    lags.sort()
    p50 = statistics.median(lags) if lags else float("nan")
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else float("nan")
    worst = lags[-1] if lags else float("nan")
    mixed = background["load"]
    bench.results["convergence"] = {
        "accept_limit_seconds": accept_limit,
        "probes": probes,
        "converged": len(lags),
        "p50_s": p50,
        "p99_s": p99,
        "max_s": worst,
        "poll_interval_s": poll_every,
        "background": mixed.as_dict(),
    }
    bench.check(
        "5 convergence",
        f"add ack -> GetCount eventual, {len(lags)}/{probes} probes",
        f"p50 {p50:.2f} s, p99 {p99:.2f} s, max {worst:.2f} s",
        reference=f"under {rate(mixed.rate)} mixed add/get" + (f", {mixed.errors} errors" if mixed.errors else ""),
        target=f"p99 <= {accept_limit + 2} s",
        met=len(lags) == probes and p99 <= accept_limit + 2,
    )


# 6. Scale of cost ------------------------------------------------------------------------------


def scale_of_cost(bench: Bench, levels: list[int]) -> None:
    """GetCount (accurate, rolled-up history plus a small tail) latency and rollup cost per event
    as stored history grows; the rollup's own fold of each level's new history is reported too."""
    ns = namespace("b-scale", "accurate", accept_limit_seconds=0)
    counters = 1000
    names = [f"h{i}" for i in range(counters)]
    stored = 0
    per_level = {}
    for level in levels:
        started = time.perf_counter()
        insert_events(ns.name, "h", counters, level - stored)
        insert_seconds = time.perf_counter() - started
        stored = level
        started = time.perf_counter()
        history = pipeline.rollup(ns, names)
        history_seconds = time.perf_counter() - started
        vacuum_events()
        per_event = []
        for _ in range(5):
            insert_events(ns.name, "h", 100, 1000)
            started = time.perf_counter()
            folded = pipeline.rollup(ns, names[:100])
            per_event.append((time.perf_counter() - started) / max(folded.events, 1))
        insert_events(ns.name, "h", 1, 10)
        get = bench.wrk("get", [counter_path(ns, "h0")], connections=2, seconds=bench.paced_seconds)
        per_level[level] = {
            "insert_seconds": insert_seconds,
            "history_rollup_seconds": history_seconds,
            "history_events_folded": history.events,
            "rollup_us_per_event": statistics.median(per_event) * 1e6,
            "get_accurate": get.as_dict(),
        }
    bench.results["scale_of_cost"] = {str(k): v for k, v in per_level.items()}
    low, high = per_level[levels[0]], per_level[levels[-1]]
    span = f"10^{len(str(levels[-1])) - 1} vs 10^{len(str(levels[0])) - 1} events"
    get_ratio = high["get_accurate"]["p50_ms"] / low["get_accurate"]["p50_ms"]
    bench.check(
        "6 scale of cost",
        f"GetCount accurate p50, {span}",
        f"{ms(high['get_accurate']['p50_ms'])} vs {ms(low['get_accurate']['p50_ms'])}",
        reference=" / ".join(f"{v['get_accurate']['p50_ms']:.1f}" for v in per_level.values()) + " ms",
        ratio=get_ratio,
        target="<= 1.5",
        met=get_ratio <= 1.5,
    )
    cost_ratio = high["rollup_us_per_event"] / low["rollup_us_per_event"]
    bench.check(
        "6 scale of cost",
        f"rollup cost per event, {span}",
        f"{high['rollup_us_per_event']:.1f} us vs {low['rollup_us_per_event']:.1f} us",
        reference=" / ".join(f"{v['rollup_us_per_event']:.1f}" for v in per_level.values()) + " us",
        ratio=cost_ratio,
        target="<= 1.5",
        met=cost_ratio <= 1.5,
    )


def queue_memory(bench: Bench, events: int = 1_000_000, counters: int = 1000) -> None:
    """Redis memory of the rollup queues after the triggers of ``events`` events (batches of 500,
    as the write path sends them after commit) on ``counters`` counters. Due in an hour, so no
    worker drains them while they are measured."""
    ns = namespace("b-queue", "eventual", accept_limit_seconds=3600)
    client = get_redis()

    def measure() -> tuple[int, int]:
        entries = memory = 0
        for index in range(queues.MAX_QUEUES):
            for key in (queues.queue_key(ns.name, index), queues.inflight_key(ns.name, index)):
                entries += client.zcard(key)
                memory += client.memory_usage(key) or 0
        return entries, memory

    sizes = {}
    sent = 0
    for checkpoint in (10_000, events):
        while sent < checkpoint:
            batch = sorted({f"q{(sent + j) % counters}" for j in range(BATCH)})
            pipeline.trigger_after_write(ns, batch)
            sent += BATCH
        sizes[checkpoint] = measure()
    queues.purge(ns.name)
    bench.results["queue_memory"] = {str(k): {"entries": e, "bytes": m} for k, (e, m) in sizes.items()}
    entries, memory = sizes[events]
    small_entries, small_memory = sizes[10_000]
    bench.check(
        "6 scale of cost",
        f"rollup queue, {events:,} events on {counters:,} counters",
        f"{entries:,} entries, {memory / 1024:,.0f} KiB",
        reference=f"after 10,000 events: {small_entries:,} entries, {small_memory / 1024:,.0f} KiB",
        ratio=memory / small_memory if small_memory else None,
        target=f"~{counters:,} entries",
        met=entries <= counters * 1.1,
    )


class RssSampler(threading.Thread):
    """Peak resident memory per process of the worker and web roles, sampled through the run."""

    def __init__(self, stack: Stack, every: float = 0.5):
        super().__init__(daemon=True)
        self.stack, self.every = stack, every
        self.peaks: dict[str, int] = {"worker": 0, "web": 0}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.every):
            for role in self.peaks:
                for process in self.stack.process_tree(role):
                    try:
                        self.peaks[role] = max(self.peaks[role], process.memory_info().rss)
                    except psutil.Error:
                        pass

    def report(self, bench: Bench) -> None:
        self.halt.set()
        self.join()
        mib = {role: peak / 2**20 for role, peak in self.peaks.items()}
        bench.results["peak_rss_mib"] = mib
        bench.check(
            "6 scale of cost",
            "peak RSS of a Celery worker process, whole run",
            f"{mib['worker']:.0f} MiB",
            reference=f"gunicorn process {mib['web']:.0f} MiB",
            target="< 250 MiB",
            met=mib["worker"] < 250,
        )
