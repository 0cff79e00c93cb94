"""The rollup pipeline: fold immutable windows of the event log into checkpoints.

Pure logic on PostgreSQL and Redis, no Celery: tasks.py wraps it, tests call it directly.

Correctness rests on three rules:

1. Immutable window. A rollup folds only events with ``last_rollup_ts < event_time <= until``,
   where ``until`` is no later than ``now - accept_limit`` and strictly earlier than the start of the
   oldest transaction still open. An event's ``event_time`` is its transaction's start (``now()``),
   so every event that can still commit lies after ``until``: a closed window never changes.
   ``until`` is read in its own statement *before* the fold's snapshot, so a transaction that
   commits in between is visible to the fold. Transactions marked by ``appending_no_events`` (the
   stale sweep, audits) are not waited for: they never append an event, however long they read.
2. Monotonic compare-and-set. A checkpoint is computed from the checkpoint it read plus the window
   after it, so it is exact for its ``until`` whoever else runs; it is written only if its ``until``
   is newer than the stored one. Two workers, a redelivered task or an old deploy are harmless.
3. Clears are events. A window holding a clear counts only what follows its last clear.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from counterproject.redis_client import get_redis
from counters.models import Namespace
from rollups import cache, queues

logger = logging.getLogger(__name__)

# Folds, for each counter of a namespace, the events after its checkpoint up to %(until)s.
# Shared by rollups (until = the closed window's end) and accurate reads (until = infinity).
_FOLD = """
targets AS (
    SELECT t.counter COLLATE "C" AS counter, c.last_rollup_ts AS from_ts,
           COALESCE(c.last_rollup_count, 0) AS from_count
    FROM unnest(%(counters)s::text[]) AS t(counter)
    LEFT JOIN rollups_checkpoint c
      ON c.namespace = %(namespace)s AND c.counter = t.counter COLLATE "C"
),
folded AS (
    SELECT t.counter, t.from_ts,
           CASE WHEN last_clear.id IS NULL THEN t.from_count + agg.window_sum ELSE agg.window_sum END AS count,
           agg.n_events, agg.first_write_ts, agg.last_write_ts
    FROM targets t
    LEFT JOIN LATERAL (
        SELECT e.event_time, e.id FROM counters_event e
        WHERE e.namespace = %(namespace)s AND e.counter = t.counter AND e.kind = 1
          AND e.event_time > COALESCE(t.from_ts, '-infinity') AND e.event_time <= %(until)s
        ORDER BY e.event_time DESC, e.id DESC
        LIMIT 1
    ) last_clear ON true
    CROSS JOIN LATERAL (
        SELECT COALESCE(sum(e.delta) FILTER (
                   WHERE e.event_time <= %(until)s
                     AND (last_clear.id IS NULL OR (e.event_time, e.id) > (last_clear.event_time, last_clear.id))
               ), 0) AS window_sum,
               count(*) FILTER (WHERE e.event_time <= %(until)s) AS n_events,
               min(e.event_time) FILTER (WHERE e.event_time <= %(until)s) AS first_write_ts,
               max(e.event_time) AS last_write_ts
        FROM counters_event e
        WHERE e.namespace = %(namespace)s AND e.counter = t.counter
          AND e.event_time > COALESCE(t.from_ts, '-infinity')
    ) agg
)
"""

_ROLLUP = f"""
WITH {_FOLD},
upserted AS (
    INSERT INTO rollups_checkpoint AS c
        (namespace, counter, last_rollup_count, last_rollup_ts, last_write_ts, first_event_ts, updated_at)
    SELECT %(namespace)s, counter, count, %(until)s, last_write_ts,
           CASE WHEN from_ts IS NULL THEN first_write_ts END, clock_timestamp()
    FROM folded
    WHERE ((from_ts IS NULL AND n_events > 0) OR from_ts < %(until)s)
      -- A drain holding a namespace deleted since must not leave a checkpoint behind it
      -- (services.delete_namespace waits for rollups older than the delete, not newer ones).
      AND EXISTS (SELECT 1 FROM counters_namespace n WHERE n.name = %(namespace)s)
    ON CONFLICT (namespace, counter) DO UPDATE SET
        last_rollup_count = EXCLUDED.last_rollup_count,
        last_rollup_ts = EXCLUDED.last_rollup_ts,
        last_write_ts = GREATEST(c.last_write_ts, EXCLUDED.last_write_ts),
        updated_at = EXCLUDED.updated_at
    WHERE c.last_rollup_ts < EXCLUDED.last_rollup_ts
    RETURNING counter, last_rollup_count, last_rollup_ts
)
SELECT f.counter, f.n_events, f.last_write_ts, u.last_rollup_count, u.last_rollup_ts
FROM folded f LEFT JOIN upserted u ON u.counter = f.counter
"""

_LIVE_COUNT = f"""
WITH {_FOLD}
SELECT counter, count, n_events, statement_timestamp() FROM folded
"""

_CLOSED_UNTIL = """
SELECT statement_timestamp() - make_interval(secs => %s),
       (SELECT min(xact_start) - interval '1 microsecond' FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND backend_type = 'client backend' AND xact_start IS NOT NULL
          AND application_name IS DISTINCT FROM %s)
"""

# application_name of a transaction that appends no events (``appending_no_events``).
NO_EVENTS_APPLICATION = "counters-no-events"


@contextmanager
def appending_no_events():
    """Run the enclosed queries in a transaction that rollups do not wait for (rule 1).

    Only for code that never appends an event: a rollup may close its window after this
    transaction's start. A long read of the event log (the stale sweep over a busy namespace
    took over a minute in the benchmark) would otherwise hold every rollup back meanwhile. Inside
    an enclosing transaction nothing is marked, since that transaction may append events.
    """
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic(), connection.cursor() as cursor:
        # SET LOCAL: the mark ends with this transaction, whatever the connection runs next.
        cursor.execute("SET LOCAL application_name = %s", [NO_EVENTS_APPLICATION])
        yield


def closed_until(accept_limit_seconds: float) -> dt.datetime:
    """The newest instant no uncommitted event can precede (rule 1 above)."""
    with connection.cursor() as cursor:
        # Statistics views are snapshotted once per transaction; a fresh look is the point here.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(_CLOSED_UNTIL, [accept_limit_seconds, NO_EVENTS_APPLICATION])
        by_clock, by_open_transactions = cursor.fetchone()
    return min(by_clock, by_open_transactions) if by_open_transactions else by_clock


@dataclass
class RollupResult:
    counters: int = 0
    events: int = 0
    advanced: int = 0
    pending: int = 0
    until: dt.datetime | None = None


def rollup(namespace: Namespace, counters: list[str]) -> RollupResult:
    """Fold the closed windows of ``counters`` into their checkpoints, mirror them in Redis and
    re-enqueue counters that still have a tail. Idempotent; safe to run concurrently."""
    result = RollupResult(counters=len(counters))
    if not counters:
        return result
    until = closed_until(namespace.accept_limit_seconds)
    result.until = until
    with connection.cursor() as cursor:
        cursor.execute(_ROLLUP, {"namespace": namespace.name, "counters": counters, "until": until})
        rows = cursor.fetchall()
    fresh = []
    pending = {}
    for counter, n_events, last_write_ts, count, rollup_ts in rows:
        result.events += n_events
        if rollup_ts is not None:
            result.advanced += 1
            fresh.append((counter, int(count), rollup_ts))
        if last_write_ts is not None and last_write_ts > until:
            pending[counter] = last_write_ts
    cache.put_many(namespace.name, fresh)
    if pending:
        result.pending = len(pending)
        _requeue_tail(namespace, pending)
    return result


def _requeue_tail(namespace: Namespace, pending: dict[str, dt.datetime]) -> None:
    # The tail becomes foldable once it is older than accept_limit; a window held back by an open
    # transaction is retried a second later rather than in a hot loop.
    floor = queues.now_ms() + 1000
    accept_ms = namespace.accept_limit_seconds * 1000
    for counter, last_write_ts in pending.items():
        due = max(floor, int(last_write_ts.timestamp() * 1000) + accept_ms + 1)
        queues.trigger(namespace.name, namespace.rollup_num_queues, [counter], due)


@dataclass(frozen=True)
class LiveCounts:
    counts: dict[str, int]
    # Counters with events after their checkpoint: the only ones a rollup would change.
    with_tail: set[str]
    as_of: dt.datetime


def live_counts(namespace: Namespace, counters: list[str]) -> LiveCounts:
    """Checkpoint plus every committed event after it, per counter: accurate listings and
    add_and_get (a single accurate GetCount reads through rollups/tails.py)."""
    with connection.cursor() as cursor:
        cursor.execute(_LIVE_COUNT, {"namespace": namespace.name, "counters": counters, "until": "infinity"})
        rows = cursor.fetchall()
    return LiveCounts(
        counts={counter: int(count) for counter, count, _, _ in rows},
        with_tail={counter for counter, _, n_events, _ in rows if n_events},
        as_of=rows[0][3] if rows else dt.datetime.now(dt.UTC),
    )


@dataclass
class DrainResult:
    batches: int = 0
    counters: int = 0
    events: int = 0
    batch_size: int = 0
    seconds: float = 0.0


def _batch_size_key(namespace: str, index: int) -> str:
    return f"{queues.queue_key(namespace, index)}:batch"


def _clamp(size: int) -> int:
    return max(settings.COUNTERS["BATCH_SIZE_MIN"], min(settings.COUNTERS["BATCH_SIZE_MAX"], size))


def _starting_batch_size(client, namespace: Namespace, index: int) -> int:
    # The learned size is kept with the configured size it grew from: when an operator changes
    # rollup_batch_size in the admin, the next drain starts from the new value, not the old lesson.
    learned, grown_from = client.hmget(_batch_size_key(namespace.name, index), ["size", "base"])
    if learned is not None and grown_from is not None and int(grown_from) == namespace.rollup_batch_size:
        return _clamp(int(learned))
    return _clamp(namespace.rollup_batch_size)


def purge(namespace_name: str) -> None:
    """Forget the adapted batch sizes of a deleted namespace, so a namespace created later under
    the same name starts from its own configured batch size."""
    get_redis().delete(*[_batch_size_key(namespace_name, index) for index in range(queues.MAX_QUEUES)])


def adapt_batch_size(size: int, claimed: int, elapsed: float) -> int:
    """Grow a full batch that ran fast, shrink one that ran slow, within the configured bounds."""
    target = settings.COUNTERS["BATCH_TARGET_SECONDS"]
    if elapsed > target:
        size //= 2
    elif claimed >= size and elapsed < target / 2:
        size *= 2
    return _clamp(size)


def drain(namespace: Namespace, index: int, budget_seconds: float = 10.0) -> DrainResult:
    """Drain one queue in adaptive batches until it has nothing due or the time budget is spent.

    Between batches the worker pauses in proportion to the last batch's cost, so rollups leave
    PostgreSQL room for ingest. A crash anywhere leaves claimed counters in the in-flight set,
    where their lease expires and another drain redoes them.
    """
    client = get_redis()
    size_key = _batch_size_key(namespace.name, index)
    size = _starting_batch_size(client, namespace, index)
    lease_ms = settings.COUNTERS["ROLLUP_LEASE_SECONDS"] * 1000
    result = DrainResult(batch_size=size)
    started = time.monotonic()
    while time.monotonic() - started < budget_seconds:
        members, deadline = queues.claim(namespace.name, index, size, lease_ms)
        if not members:
            break
        batch_started = time.monotonic()
        folded = rollup(namespace, members)
        elapsed = time.monotonic() - batch_started
        queues.acknowledge(namespace.name, index, members, deadline)
        result.batches += 1
        result.counters += len(members)
        result.events += folded.events
        claimed_all = len(members) >= size
        size = adapt_batch_size(size, len(members), elapsed)
        client.hset(size_key, mapping={"size": size, "base": namespace.rollup_batch_size})
        if not claimed_all:
            break
        time.sleep(min(elapsed * settings.COUNTERS["PACING_FACTOR"], 1.0))
    result.batch_size = size
    result.seconds = time.monotonic() - started
    return result


def trigger_after_write(namespace: Namespace, counters: list[str], pipe=None) -> None:
    """Enqueue counters just written: due once their events leave the accept window."""
    delay_ms = max(namespace.accept_limit_seconds * 1000 + 1, namespace.rollup_coalesce_ms)
    queues.trigger(namespace.name, namespace.rollup_num_queues, counters, queues.now_ms() + delay_ms, pipe)


def trigger_after_read(namespace: Namespace, counter: str) -> None:
    """Enqueue a counter just read, so that reading a counter keeps it converging."""
    queues.trigger(
        namespace.name, namespace.rollup_num_queues, [counter], queues.now_ms() + namespace.rollup_coalesce_ms
    )


# Counters first (one aggregate over the window, whatever the planner believes of its size: with
# statistics not yet updated after a burst of writes, a join of events to checkpoints became a
# nested loop of 300 million comparisons), then their checkpoints, then per unrolled counter the
# oldest event no checkpoint covers (one index probe).
_UNROLLED = """
WITH newest AS (
    SELECT e.counter, max(e.event_time) AS event_time
    FROM counters_event e
    WHERE e.namespace = %(namespace)s AND e.event_time > %(since)s AND e.event_time <= %(until)s
    GROUP BY e.counter
)
SELECT n.counter,
       (SELECT min(e.event_time) FROM counters_event e
        WHERE e.namespace = %(namespace)s AND e.counter = n.counter AND e.event_time <= %(until)s
          AND e.event_time > GREATEST(%(since)s, COALESCE(c.last_rollup_ts, '-infinity')))
FROM newest n
LEFT JOIN rollups_checkpoint c ON c.namespace = %(namespace)s AND c.counter = n.counter
WHERE c.last_rollup_ts IS NULL OR n.event_time > c.last_rollup_ts
"""


@dataclass
class SweepResult:
    stale: int = 0


def sweep_stale(stale_after_seconds: float) -> SweepResult:
    """Re-enqueue every counter with events older than ``stale_after_seconds`` that no checkpoint
    covers yet, so counters converge even when every trigger was lost (Redis flushed, worker
    killed). Each namespace is scanned from its durable watermark to its own closed window; the
    watermark then moves to just before the oldest event still unfolded (compare-and-set, so
    concurrent sweeps are harmless).
    """
    result = SweepResult()
    for namespace in Namespace.objects.exclude(counter_type="best_effort"):
        result.stale += _sweep_namespace(namespace, stale_after_seconds)
    if result.stale:
        logger.info("stale sweep re-enqueued %d counters", result.stale)
    return result


def _sweep_namespace(namespace: Namespace, stale_after_seconds: float) -> int:
    from rollups.models import SweepState

    state, _ = SweepState.objects.get_or_create(
        namespace=namespace.name, defaults={"swept_until": dt.datetime(1970, 1, 1, tzinfo=dt.UTC)}
    )
    until = closed_until(max(namespace.accept_limit_seconds, stale_after_seconds))
    if until <= state.swept_until:
        return 0
    with appending_no_events(), connection.cursor() as cursor:
        cursor.execute(_UNROLLED, {"namespace": namespace.name, "since": state.swept_until, "until": until})
        rows = cursor.fetchall()
    if rows:
        queues.trigger(namespace.name, namespace.rollup_num_queues, [counter for counter, _ in rows], queues.now_ms())
    oldest = min([until] + [first - dt.timedelta(microseconds=1) for _, first in rows])
    SweepState.objects.filter(id=state.id, swept_until=state.swept_until).update(swept_until=oldest)
    return len(rows)
