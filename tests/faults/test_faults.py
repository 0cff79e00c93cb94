"""Faults under load, checked the way Jepsen checks a counter.

Client threads send adds (and, on counters of their own, a clear followed by adds) with
idempotency tokens through ``counterclient``; every request whose outcome the client did not learn
(no response, 5xx) is retried with the same token until it is acknowledged, and a 429/409 (nothing
applied) is retried after a pause. While that load runs, one fault is injected. Then, for every
counter, the checkpoint in PostgreSQL must reach exactly the sum of acknowledged deltas (after the
counter's last acknowledged clear): below it is a lost write, above the acknowledged sum plus the
deltas still unknown is a double count.
"""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import pytest
from celery import Celery

from counterclient import CounterError, Counters

from .conftest import SHEDDING_WEB_PORT, WEB_PORT, Cluster

pytestmark = pytest.mark.faults

LOAD_SECONDS = 3.0
CONVERGE_TIMEOUT_SECONDS = 45.0
# How long a converged counter must stay put: longer than the accept limit, so a double fold of a
# late window would show.
STABLE_SECONDS = 2.0
RETRY_DEADLINE_SECONDS = 60.0
PLAIN_COUNTERS = 8
CLEARED_COUNTERS = 2


@dataclass
class Ledger:
    """What the clients know: per counter, the acknowledged and the still-unknown deltas."""

    acknowledged: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unknown: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sent: int = 0
    acked: int = 0
    rejected: int = 0
    retried_unknown: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **increments: int) -> None:
        with self.lock:
            for name, value in increments.items():
                setattr(self, name, getattr(self, name) + value)


class Load:
    """Client threads against one namespace until ``stop()``; then every operation is resolved."""

    def __init__(
        self, namespace: str, api_key: str, threads: int = 4, port: int = WEB_PORT, counters: int = PLAIN_COUNTERS
    ):
        self.namespace = namespace
        # Retries are ours (below), so that the ledger sees every attempt's outcome.
        self.client = Counters(f"http://127.0.0.1:{port}", api_key, timeout=5, max_retries=0)
        self.ledger = Ledger()
        self.plain = [f"c{i}" for i in range(counters)]
        self.cleared = [f"cleared{i}" for i in range(CLEARED_COUNTERS)]
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._adds, args=(seed,)) for seed in range(threads)]
        self.threads += [threading.Thread(target=self._clears, args=(counter,)) for counter in self.cleared]
        self.finished_at = 0.0

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(RETRY_DEADLINE_SECONDS + 30)
        self.finished_at = time.monotonic()

    def run(self, seconds: float = LOAD_SECONDS) -> None:
        self.start()
        time.sleep(seconds)
        self.stop()

    def _adds(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.done.is_set():
            self._send(rng.choice(self.plain), rng.randint(1, 5))

    def _clears(self, counter: str) -> None:
        rng = random.Random(counter)
        # Adds, then a clear, then adds strictly after the clear was acknowledged: the expected
        # count is the sum of the adds acknowledged after the clear.
        while not self.done.is_set() and self.ledger.acknowledged[counter] < 20:
            self._send(counter, rng.randint(1, 5))
        if self._send(counter, None):
            with self.ledger.lock:
                self.ledger.acknowledged[counter] = 0
                self.ledger.unknown[counter] = 0
        while not self.done.is_set():
            self._send(counter, rng.randint(1, 5))
            time.sleep(0.01)

    def _send(self, counter: str, delta: int | None) -> bool:
        """One logical operation (``delta`` None: a clear), retried with one token until known."""
        token = str(uuid.uuid4())
        self.ledger.add(sent=1)
        outcome_unknown = False
        deadline = time.monotonic() + RETRY_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            try:
                if delta is None:
                    self.client.clear(self.namespace, counter, token=token)
                else:
                    self.client.add(self.namespace, counter, delta, token=token)
            except CounterError as error:
                if error.status in (409, 429):
                    self.ledger.add(rejected=error.status == 429)
                    time.sleep(0.5 if error.status == 429 else 0.05)
                    continue
                if error.status is not None and error.status < 500:
                    raise
                if not outcome_unknown:
                    outcome_unknown = True
                    self.ledger.add(retried_unknown=1)
                    with self.ledger.lock:
                        self.ledger.unknown[counter] += delta or 0
                time.sleep(0.2)
                continue
            with self.ledger.lock:
                self.ledger.acknowledged[counter] += delta or 0
                if outcome_unknown:
                    self.ledger.unknown[counter] -= delta or 0
                self.ledger.acked += 1
            return True
        return False


def converge(cluster: Cluster, load: Load) -> tuple[dict[str, int], float]:
    """Poll the checkpoints (never the API: reads enqueue rollups and would hide lost triggers)
    until every counter holds its acknowledged sum and keeps it; return counts and seconds taken."""
    expected = dict(load.ledger.acknowledged)
    deadline = time.monotonic() + CONVERGE_TIMEOUT_SECONDS
    counts: dict[str, int] = {}
    converged_at = None
    while time.monotonic() < deadline:
        try:
            rows = cluster.sql(
                "SELECT counter, last_rollup_count FROM rollups_checkpoint WHERE namespace = %s", (load.namespace,)
            )
        except Exception:  # noqa: BLE001 - PostgreSQL may still be restarting
            rows = None
        if rows is not None:
            counts = {counter: int(count) for counter, count in rows}
            matches = all(counts.get(counter, 0) == value for counter, value in expected.items())
            if matches and converged_at is None:
                converged_at = time.monotonic()
            elif not matches:
                converged_at = None
            if converged_at is not None and time.monotonic() - converged_at >= STABLE_SECONDS:
                return counts, converged_at - load.finished_at
        time.sleep(0.1)
    return counts, float("nan")


def check(cluster: Cluster, load: Load, fault: str, report, **extra) -> dict:
    counts, seconds = converge(cluster, load)
    ledger = load.ledger
    lost = double = 0
    for counter in set(ledger.acknowledged) | set(counts):
        final = counts.get(counter, 0)
        low = ledger.acknowledged.get(counter, 0)
        high = low + ledger.unknown.get(counter, 0)
        lost += max(0, low - final)
        double += max(0, final - high)
    api = Counters(f"http://127.0.0.1:{WEB_PORT}", cluster.api_key, max_retries=8)
    served = {counter: api.count(load.namespace, counter) for counter in ledger.acknowledged}
    row = {
        "fault": fault,
        "sent": ledger.sent,
        "acknowledged": ledger.acked,
        "rejected_429": ledger.rejected,
        "retried_unknown": ledger.retried_unknown,
        "unresolved": sum(1 for value in ledger.unknown.values() if value),
        "lost": lost,
        "double_counted": double,
        "converge_s": round(seconds, 2),
        **extra,
    }
    report(row)
    assert ledger.sent == ledger.acked, row
    assert (lost, double) == (0, 0), (row, counts, dict(ledger.acknowledged))
    assert seconds == seconds, ("did not converge", counts, dict(ledger.acknowledged))
    assert served == {counter: counts.get(counter, 0) for counter in ledger.acknowledged}
    return row


def inflight(cluster: Cluster, namespace: str) -> int:
    client = cluster.redis()
    return sum(client.zcard(key) for key in client.scan_iter(match=f"rq:{{{namespace}:*}}:inflight"))


def test_kill_9_worker_mid_batch_redoes_the_batch_once(cluster, namespace, report):
    load = Load(namespace, cluster.api_key).start()
    time.sleep(0.5)
    # Checkpoint writes wait behind this lock, so a worker that claimed a batch is stuck in it:
    # killing the workers now is killing them mid-batch, every time.
    blocker = cluster.connect()
    with blocker.cursor() as cursor:
        cursor.execute("LOCK TABLE rollups_checkpoint IN EXCLUSIVE MODE")
    deadline = time.monotonic() + 10
    while not inflight(cluster, namespace) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    cluster.kill("worker-1")
    cluster.kill("worker-2")
    orphaned = inflight(cluster, namespace)
    blocker.commit()
    blocker.close()
    cluster.worker("worker-1")
    cluster.worker("worker-2")
    time.sleep(LOAD_SECONDS / 2)
    load.stop()
    check(cluster, load, "kill -9 workers mid-batch", report, inflight_at_kill=orphaned)
    assert orphaned > 0


def test_flushed_redis_converges_through_the_stale_sweep(cluster, namespace, report):
    load = Load(namespace, cluster.api_key).start()
    time.sleep(LOAD_SECONDS / 2)
    cluster.redis().flushall()
    time.sleep(LOAD_SECONDS / 2)
    load.stop()
    # Every trigger of the last writes goes too: only the sweep can find them now.
    cluster.redis().flushall()
    check(cluster, load, "FLUSHALL during and after load", report)


def test_redis_killed_and_restarted(cluster, namespace, report):
    load = Load(namespace, cluster.api_key).start()
    time.sleep(LOAD_SECONDS / 3)
    cluster.kill_redis()
    time.sleep(1.0)
    cluster.start_servers()
    time.sleep(LOAD_SECONDS / 3)
    load.stop()
    check(cluster, load, "kill -9 Redis, restart", report)


def test_postgres_restarted(cluster, namespace, report):
    load = Load(namespace, cluster.api_key).start()
    time.sleep(LOAD_SECONDS / 3)
    cluster.stop_postgres()
    time.sleep(1.0)
    cluster.start_servers()
    time.sleep(LOAD_SECONDS / 3)
    load.stop()
    check(cluster, load, "restart PostgreSQL", report)


def test_two_beats(cluster, namespace, report):
    cluster.beat("beat-2")
    try:
        load = Load(namespace, cluster.api_key)
        load.run()
    finally:
        cluster.kill("beat-2")
    check(cluster, load, "two beats", report)


def test_rollup_task_delivered_twice(cluster, namespace, report):
    app = Celery("faults", broker=_broker_url(cluster.redis_url))
    load = Load(namespace, cluster.api_key).start()
    deadline = time.monotonic() + LOAD_SECONDS
    deliveries = 0
    while time.monotonic() < deadline:
        for index in range(4):
            for _ in range(2):
                app.send_task("rollups.drain_queue", (namespace, index), queue="rollups")
                deliveries += 1
        time.sleep(0.25)
    load.stop()
    check(cluster, load, "drain task delivered twice", report, duplicate_deliveries=deliveries)


def test_event_transaction_held_open_across_rollups(cluster, namespace, report):
    load = Load(namespace, cluster.api_key).start()
    time.sleep(0.5)
    connection = cluster.connect()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO counters_event (namespace, counter, kind, delta, event_time)"
            " VALUES (%s, 'c0', 0, 1000, now())",
            (namespace,),
        )
    # Held well past the accept limit while rollups of c0 keep running.
    time.sleep(LOAD_SECONDS)
    connection.commit()
    connection.close()
    with load.ledger.lock:
        load.ledger.acknowledged["c0"] += 1000
        load.ledger.sent += 1
        load.ledger.acked += 1
    load.stop()
    check(cluster, load, "event transaction held open 3 s", report)


def test_burst_is_shed_with_429_and_loses_nothing(cluster, namespace, report):
    # A second web server whose backlog limit is tiny: distinct counters pile up in the queues
    # for the accept limit before they can be folded, so a burst passes the limit at once.
    cluster.web("web-shedding", port=SHEDDING_WEB_PORT, COUNTER_MAX_ROLLUP_BACKLOG="20")
    try:
        load = Load(namespace, cluster.api_key, threads=6, port=SHEDDING_WEB_PORT, counters=200)
        load.run(2.0)
    finally:
        cluster.kill("web-shedding", signal.SIGTERM)
    row = check(cluster, load, "burst over backlog limit", report)
    assert row["rejected_429"] > 0


def _broker_url(redis_url: str) -> str:
    return "redis+socket://" + redis_url.removeprefix("unix://")
