"""Read paths: GetCount and listings for every counter type."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import redis

from counters import besteffort
from counters.models import CounterType, Namespace
from rollups import cache, pipeline, tails
from rollups.models import Checkpoint


@dataclass(frozen=True)
class Count:
    counter: str
    count: int
    as_of: dt.datetime | None


def get_count(namespace: Namespace, counter: str) -> Count:
    """The count as the namespace's type promises it (API.md GetCount)."""
    if namespace.counter_type == CounterType.BEST_EFFORT:
        return Count(counter, besteffort.get(namespace.name, counter), None)
    if namespace.counter_type == CounterType.ACCURATE:
        live = tails.accurate_count(namespace, counter)
        if live.has_tail:
            _trigger(namespace, counter)
        return Count(counter, live.count, live.as_of)
    return _eventual(namespace, counter)


def _eventual(namespace: Namespace, counter: str) -> Count:
    cached = cache.get(namespace.name, counter)
    if cached is not None:
        _trigger(namespace, counter)
        return Count(counter, cached.count, cached.rollup_ts)
    checkpoint = Checkpoint.objects.filter(namespace=namespace.name, counter=counter).first()
    if checkpoint is None:
        # Never rolled up: its first write queued a rollup already (and the stale sweep repairs a
        # lost one). Not queueing here keeps reads of arbitrary names from filling the queues.
        return Count(counter, 0, None)
    _trigger(namespace, counter)
    count = int(checkpoint.last_rollup_count)
    cache.put_many(namespace.name, [(counter, count, checkpoint.last_rollup_ts)])
    return Count(counter, count, checkpoint.last_rollup_ts)


# When this process last queued a read trigger per (namespace, counter). A trigger due within
# rollup_coalesce_ms coalesces with the next one anyway, so a hot counter read a thousand times a
# second costs one Redis write per window, not one per read.
_recent_triggers: dict[tuple[str, str], float] = {}
_RECENT_TRIGGERS_MAX = 10_000


def _trigger(namespace: Namespace, counter: str) -> None:
    """Reads keep counters converging. Only counters with a history are queued, so a client
    reading names that were never written cannot grow the backlog until writers get 429."""
    now = time.monotonic()
    last = _recent_triggers.get((namespace.name, counter))
    if last is not None and now - last < namespace.rollup_coalesce_ms / 1000:
        return
    if len(_recent_triggers) >= _RECENT_TRIGGERS_MAX:
        _recent_triggers.clear()
    # A read must not fail because the trigger could not be queued.
    try:
        pipeline.trigger_after_read(namespace, counter)
    except redis.RedisError:
        return
    _recent_triggers[(namespace.name, counter)] = now


def list_counts(namespace: Namespace, prefix: str, after: str | None, limit: int) -> list[Count]:
    """Counters in code-point order after ``after``. For eventual/accurate namespaces a counter is
    listed once it has a checkpoint (its first rollup, seconds after its first write)."""
    if namespace.counter_type == CounterType.BEST_EFFORT:
        live = besteffort.list_counters(namespace.name, prefix, after, limit)
        return [Count(name, value, None) for name, value in live]
    rows = Checkpoint.objects.filter(namespace=namespace.name, counter__startswith=prefix)
    if after is not None:
        rows = rows.filter(counter__gt=after)
    page = list(rows.order_by("counter").values_list("counter", "last_rollup_count", "last_rollup_ts")[:limit])
    if namespace.counter_type == CounterType.ACCURATE and page:
        live = pipeline.live_counts(namespace, [name for name, _, _ in page])
        return [Count(name, live.counts[name], live.as_of) for name, _, _ in page]
    return [Count(name, int(count), rollup_ts) for name, count, rollup_ts in page]
