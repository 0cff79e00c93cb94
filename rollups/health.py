"""Cheap reads of the rollup pipeline's state, for the admin, the dashboard and /metrics.

Built for an event table of hundreds of millions of rows: nothing here reads ``counters_event``
except by a single counter's index, and every checkpoint query is bounded by a LIMIT on an index.

Lag is how far a checkpoint is behind the writes: now minus the oldest event that no rollup has
folded yet. Candidates are the counters in the rollup queues (queued or in flight), sampled up to
``LAG_SAMPLE`` per namespace, joined to their checkpoints by the unique key and to their oldest
event after the checkpoint by the event index. Being queued is not enough: a read of an eventual
counter queues it too, and a fully rolled-up counter has no lag however old its checkpoint is. A
queued counter that has never been rolled up has no checkpoint and counts as "never rolled".
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.db.models import F, OuterRef, Subquery

from counterproject.redis_client import get_redis
from counters.models import Event
from rollups import queues
from rollups.models import Checkpoint

LAG_SAMPLE = 2000
STALE_LIMIT = 20


@dataclass
class Backlog:
    """What waits for a rollup in one namespace."""

    depths: dict[int, int] = field(default_factory=dict)
    oldest_due: dt.datetime | None = None
    # One value per sampled counter with un-rolled writes: seconds since its oldest such write.
    lags: list[float] = field(default_factory=list)
    never_rolled: int = 0

    @property
    def depth(self) -> int:
        return sum(self.depths.values())


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def backlog(namespace: str, now: dt.datetime | None = None) -> Backlog:
    """Queue depths, the oldest due trigger and the lag sample of ``namespace``."""
    now = now or dt.datetime.now(dt.UTC)
    result = Backlog(depths=queues.depths(namespace))
    if not result.depths:
        return result
    pipe = get_redis().pipeline(transaction=False)
    per_queue = max(1, LAG_SAMPLE // len(result.depths))
    for index in result.depths:
        pipe.zrange(queues.queue_key(namespace, index), 0, per_queue - 1, withscores=True)
        pipe.zrange(queues.inflight_key(namespace, index), 0, per_queue - 1)
    replies = pipe.execute()
    queued = [member for reply in replies[0::2] for member in reply]
    sample = [counter for counter, _ in queued] + [counter for reply in replies[1::2] for counter in reply]
    if queued:
        oldest_ms = min(score for _, score in queued)
        result.oldest_due = dt.datetime.fromtimestamp(oldest_ms / 1000, dt.UTC)
    oldest_unfolded = (
        Event.objects.filter(
            namespace=OuterRef("namespace"), counter=OuterRef("counter"), event_time__gt=OuterRef("last_rollup_ts")
        )
        .order_by("event_time")
        .values("event_time")[:1]
    )
    rolled = dict(
        Checkpoint.objects.filter(namespace=namespace, counter__in=set(sample))
        .annotate(oldest_unfolded=Subquery(oldest_unfolded))
        .values_list("counter", "oldest_unfolded")
    )
    result.lags = [max(0.0, (now - oldest).total_seconds()) for oldest in rolled.values() if oldest is not None]
    result.never_rolled = len(set(sample)) - len(rolled)
    return result


def stale_checkpoints(namespace: str | None = None, limit: int = STALE_LIMIT) -> list[Checkpoint]:
    """Checkpoints known to have a tail older than the stale-sweep threshold, oldest first.

    A counter whose every trigger was lost right after its write shows here only after the stale
    sweep re-enqueued and rolled it once; until then only the sweep can find it.
    """
    threshold = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=settings.COUNTERS["STALE_AFTER_SECONDS"])
    rows = Checkpoint.objects.filter(last_write_ts__gt=F("last_rollup_ts"), last_rollup_ts__lt=threshold)
    if namespace is not None:
        rows = rows.filter(namespace=namespace)
    return list(rows.order_by("last_rollup_ts")[:limit])


COUNT_CAP = 100_000


def checkpointed(namespace: str, cap: int = COUNT_CAP) -> int:
    """Checkpointed counters of ``namespace``, counted up to ``cap`` (a LIMITed index-only scan):
    a result of ``cap`` means "at least"."""
    return Checkpoint.objects.filter(namespace=namespace)[:cap].count()


def estimated_checkpoints() -> int:
    """Checkpointed counters of all namespaces, from the planner's statistics (no scan)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = 'rollups_checkpoint'::regclass")
        return max(0, cursor.fetchone()[0])
