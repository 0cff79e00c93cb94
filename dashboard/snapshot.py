"""What the dashboard shows, as JSON-ready dicts.

Every read is bounded: rates come from the per-minute Redis series (counterproject/activity.py),
backlog and lag from rollup queues and checkpoints by key (rollups/health.py), and the event table
is only read through one counter's index, never scanned or counted. Counts are strings so that
JavaScript shows them exactly at any magnitude.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db.models import Count, Q, Sum

from counterproject import activity, heartbeats
from counters import partitions, reads
from counters.models import Event, EventKind, Namespace
from rollups import health, retention
from rollups.models import Checkpoint

REFRESH_MS = 5000
MINUTES = 60
RECENT_EVENTS = 20


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def overview(namespace: str | None) -> dict:
    """Rates, backlog, lag, stale counters, partitions and liveness for one namespace or all."""
    now = dt.datetime.now(dt.UTC)
    scope = namespace or activity.ALL
    series = {kind: activity.series(scope, kind, MINUTES) for kind in activity.KINDS}
    logged = Namespace.objects.exclude(counter_type="best_effort").values_list("name", flat=True)
    names = [namespace] if namespace else list(logged)
    queues, lags, never_rolled, oldest_due = [], [], 0, None
    for name in names:
        backlog = health.backlog(name, now)
        queues += [
            {"namespace": name, "queue": index, "depth": depth} for index, depth in sorted(backlog.depths.items())
        ]
        lags += backlog.lags
        never_rolled += backlog.never_rolled
        if backlog.oldest_due and (oldest_due is None or backlog.oldest_due < oldest_due):
            oldest_due = backlog.oldest_due
    return {
        "generated_at": now.isoformat(),
        "namespace": namespace,
        "minutes": [minute for minute, _ in series[activity.INGEST]],
        "series": {kind: [value for _, value in points] for kind, points in series.items()},
        "last_hour": {kind: sum(value for _, value in points) for kind, points in series.items()},
        "lag_seconds": {
            "p50": _seconds(health.percentile(lags, 0.5)),
            "p99": _seconds(health.percentile(lags, 0.99)),
            "max": _seconds(max(lags, default=None)),
            "sampled": len(lags),
            "never_rolled": never_rolled,
        },
        "queues": queues,
        "backlog": sum(queue["depth"] for queue in queues),
        "oldest_due": _iso(oldest_due),
        "stale": [
            {
                "namespace": checkpoint.namespace,
                "counter": checkpoint.counter,
                "last_rollup_ts": _iso(checkpoint.last_rollup_ts),
                "last_write_ts": _iso(checkpoint.last_write_ts),
                "behind_seconds": round((now - checkpoint.last_rollup_ts).total_seconds(), 1),
            }
            for checkpoint in health.stale_checkpoints(namespace)
        ],
        "stale_after_seconds": settings.COUNTERS["STALE_AFTER_SECONDS"],
        "checkpoints": health.checkpointed(namespace) if namespace else health.estimated_checkpoints(),
        "partitions": [
            {"name": p.name, "start": _iso(p.start), "end": _iso(p.end)} for p in partitions.list_partitions()
        ],
        "retention_horizon": _iso(retention.horizon(now)),
        "heartbeats": {process: _liveness(process) for process in (heartbeats.BEAT, heartbeats.WORKER)},
    }


def _liveness(process: str) -> dict:
    age = heartbeats.age(process)
    return {"age_seconds": _seconds(age), "alive": age is not None and age <= settings.COUNTERS["BEAT_STALE_SECONDS"]}


def counter(namespace: Namespace, name: str) -> dict:
    """One counter as GetCount answers it, with the checkpoint, the un-rolled tail and the newest
    events behind that answer."""
    count = reads.get_count(namespace, name)
    result = {
        "namespace": namespace.name,
        "counter": name,
        "counter_type": namespace.counter_type,
        "count": str(count.count),
        "as_of": _iso(count.as_of),
        "checkpoint": None,
        "tail": None,
        "recent_events": [],
    }
    if not namespace.uses_event_log:
        return result
    checkpoint = Checkpoint.objects.filter(namespace=namespace.name, counter=name).first()
    events = Event.objects.filter(namespace=namespace.name, counter=name)
    if checkpoint is not None:
        result["checkpoint"] = {
            "count": str(checkpoint.last_rollup_count),
            "last_rollup_ts": _iso(checkpoint.last_rollup_ts),
            "last_write_ts": _iso(checkpoint.last_write_ts),
        }
    tail = events.filter(event_time__gt=checkpoint.last_rollup_ts) if checkpoint else events
    totals = tail.aggregate(
        events=Count("id"),
        adds=Sum("delta", filter=Q(kind=EventKind.ADD)),
        clears=Count("id", filter=Q(kind=EventKind.CLEAR)),
    )
    result["tail"] = {"events": totals["events"], "adds": str(totals["adds"] or 0), "clears": totals["clears"]}
    result["recent_events"] = [
        {"id": e.id, "kind": e.get_kind_display(), "delta": str(e.delta), "event_time": _iso(e.event_time)}
        for e in events.order_by("-event_time", "-id")[:RECENT_EVENTS]
    ]
    return result
