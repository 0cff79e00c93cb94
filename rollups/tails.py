"""Accurate reads of long tails: the fold of a tail's closed part, kept in Redis.

An accurate GetCount is the counter's checkpoint plus every committed event after it. While
``accept_limit`` keeps events out of checkpoints (up to an hour), that tail can hold 10^5 events
and the read sums them all, every time. The part of the tail that no open transaction can still
extend (up to ``pipeline.closed_until(0)``, rule 1 of rollups/pipeline.py) never changes, so its
fold is kept in Redis as a *tail summary* and a read only sums the events after it.

A summary belongs to one checkpoint: ``(from_ts, upto, reset, sum)`` folds the events with
``from_ts < event_time <= upto`` of the counter whose checkpoint has ``last_rollup_ts = from_ts``
(``reset``: a clear is among them, and ``sum`` counts what follows the last one). The read query
uses it only when the checkpoint it reads in its own snapshot still has that ``from_ts``; once a
rollup moves the checkpoint, the summary is ignored and replaced. Losing it (Redis flushed) only
makes reads slower until the next refresh.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import redis
from django.db import connection

from counterproject.redis_client import get_redis, unlink_matching
from counters import prepared
from counters.models import Namespace
from rollups import cache, pipeline

# A read that summed at least this many events refreshes the summary (one more query, once).
REFRESH_EVENTS = 500
# A summary stops this long before now even when no transaction is open: PostgreSQL takes a
# transaction's start time a moment before pg_stat_activity shows it, and an accept_limit is this
# margin for rollups; here it costs only a second of events summed again by each read.
SETTLE_SECONDS = 1.0
TTL_SECONDS = 86400
# from_ts of a summary of a counter that has no checkpoint yet.
NO_CHECKPOINT = "-"

# The counter's checkpoint; where the read starts (after the summary when it belongs to that
# checkpoint, else after the checkpoint); the last clear and the fold of the events after the
# start up to %(until)s.
_FOLD_TAIL = """
WITH cp AS (
    SELECT c.last_rollup_ts, c.last_rollup_count FROM rollups_checkpoint c
    WHERE c.namespace = %(namespace)s AND c.counter = %(counter)s
),
start AS (
    SELECT cp_row.last_rollup_ts AS from_ts, COALESCE(cp_row.last_rollup_count, 0) AS from_count,
           (cp_row.last_rollup_ts IS NOT DISTINCT FROM %(summary_from)s::timestamptz
            AND %(summary_upto)s::timestamptz IS NOT NULL) AS summary_applies
    FROM (SELECT 1) one LEFT JOIN cp cp_row ON true
),
bounds AS (
    SELECT s.*, CASE WHEN s.summary_applies THEN %(summary_upto)s::timestamptz
                     ELSE COALESCE(s.from_ts, '-infinity') END AS since
    FROM start s
)
SELECT b.from_ts, b.from_count, b.summary_applies, lc.id IS NOT NULL, agg.total, agg.events, statement_timestamp()
FROM bounds b
-- LATERAL, so that b.since bounds the index scans (as a join condition it only filtered them).
LEFT JOIN LATERAL (
    SELECT e.event_time, e.id FROM counters_event e
    WHERE e.namespace = %(namespace)s AND e.counter = %(counter)s AND e.kind = 1
      AND e.event_time > b.since AND e.event_time <= %(until)s
    ORDER BY e.event_time DESC, e.id DESC
    LIMIT 1
) lc ON true
CROSS JOIN LATERAL (
    SELECT COALESCE(sum(e.delta) FILTER (WHERE lc.id IS NULL OR (e.event_time, e.id) > (lc.event_time, lc.id)), 0)
               AS total,
           count(*) AS events
    FROM counters_event e
    WHERE e.namespace = %(namespace)s AND e.counter = %(counter)s AND e.event_time > b.since
      AND e.event_time <= %(until)s
) agg
"""

# Moves a summary forward only: another one for the same checkpoint is kept when it reaches as far.
_PUT_IF_FURTHER = """
local current = redis.call('GET', KEYS[1])
if current then
  local from, upto = string.match(current, '^([^|]*)|(%d+)|')
  if from == ARGV[1] and tonumber(upto) >= tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[4], 'EX', ARGV[5])
return 1
"""


@dataclass(frozen=True)
class Segment:
    """The fold of a run of events: ``reset`` when a clear is among them, ``sum`` of what follows
    the last clear (of all of them without one)."""

    reset: bool = False
    sum: int = 0

    def then(self, later: Segment) -> Segment:
        return later if later.reset else Segment(self.reset, self.sum + later.sum)


@dataclass(frozen=True)
class Summary:
    from_ts: dt.datetime | None
    upto: dt.datetime
    segment: Segment


@dataclass(frozen=True)
class TailCount:
    count: int
    has_tail: bool
    as_of: dt.datetime
    # Events this read summed (those after the summary when one applied).
    summed: int


def key(namespace: Namespace, counter: str) -> str:
    # With the namespace's id: a summary left behind by a namespace deleted and created again
    # (a purge killed half-way) can never apply to the new one's counters.
    return f"tail:{{{namespace.name}}}:{namespace.pk}:{counter}"


def _get(namespace: Namespace, counter: str) -> Summary | None:
    try:
        value = get_redis().get(key(namespace, counter))
    except redis.RedisError:
        return None
    if value is None:
        return None
    from_ts, upto, reset, total = value.split("|")
    checkpoint = None if from_ts == NO_CHECKPOINT else cache.from_micros(from_ts)
    return Summary(checkpoint, cache.from_micros(upto), Segment(reset == "1", int(total)))


def _put(namespace: Namespace, counter: str, summary: Summary) -> None:
    from_ts = NO_CHECKPOINT if summary.from_ts is None else str(cache.micros(summary.from_ts))
    args = [from_ts, cache.micros(summary.upto), int(summary.segment.reset), summary.segment.sum, TTL_SECONDS]
    try:
        client = get_redis()
        client.register_script(_PUT_IF_FURTHER)(keys=[key(namespace, counter)], args=args, client=client)
    except redis.RedisError:
        pass  # the next long read refreshes it


_FOLD_TAIL_PARAMETERS = {
    "namespace": "text",
    "counter": "text",
    "summary_from": "timestamptz",
    "summary_upto": "timestamptz",
    "until": "timestamptz",
}


def _fold(namespace: Namespace, counter: str, summary: Summary | None, until: dt.datetime | str):
    with connection.cursor() as cursor:
        cursor.execute(
            prepared.statement("counters_fold_tail", _FOLD_TAIL, _FOLD_TAIL_PARAMETERS),
            {
                "namespace": namespace.name,
                "counter": counter,
                "summary_from": summary.from_ts if summary else None,
                "summary_upto": summary.upto if summary else None,
                "until": until,
            },
        )
        return cursor.fetchone()


def accurate_count(namespace: Namespace, counter: str) -> TailCount:
    """Checkpoint plus every committed event after it, reading past the tail summary when one
    belongs to the current checkpoint; refreshes the summary after a read of a long tail."""
    summary = _get(namespace, counter)
    _, from_count, applies, reset, total, events, as_of = _fold(namespace, counter, summary, "infinity")
    segment = _past_checkpoint(summary, applies, reset, total)
    count = (0 if segment.reset else int(from_count)) + segment.sum
    if events >= REFRESH_EVENTS:
        _refresh(namespace, counter, summary)
    return TailCount(count, has_tail=bool(events) or applies, as_of=as_of, summed=events)


def _refresh(namespace: Namespace, counter: str, summary: Summary | None) -> None:
    # closed_until first, in its own statement: the fold's snapshot then sees every transaction
    # that started before it (rule 1 of rollups/pipeline.py).
    until = pipeline.closed_until(SETTLE_SECONDS)
    from_ts, _, applies, reset, total, _, _ = _fold(namespace, counter, summary, until)
    if until <= (summary.upto if applies else from_ts or cache.EPOCH):
        return
    _put(namespace, counter, Summary(from_ts, until, _past_checkpoint(summary, applies, reset, total)))


def _past_checkpoint(summary: Summary | None, applies: bool, reset: bool, total) -> Segment:
    """The fold of everything after the checkpoint: the summary when it applied, then the events
    the query summed after it."""
    done = summary.segment if applies else Segment()
    return done.then(Segment(reset, int(total)))


def purge(namespace: str) -> None:
    unlink_matching(f"tail:{{{namespace}}}:*")
