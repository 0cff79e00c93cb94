"""Celery tasks: thin wrappers over rollups/pipeline.py and rollups/retention.py."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from counterproject import metrics
from counters.models import Namespace
from rollups import pipeline, queues, retention

logger = logging.getLogger(__name__)

# A dispatch runs every second; its drain tasks must not pile up behind a slow worker.
DRAIN_EXPIRES_SECONDS = 30


@shared_task(name="rollups.dispatch")
def dispatch() -> int:
    """Send a drain task for every queue with a due counter or an expired lease."""
    sent = 0
    for namespace in Namespace.objects.exclude(counter_type="best_effort").only("name"):
        for index in queues.due_queues(namespace.name):
            drain_queue.apply_async((namespace.name, index), expires=DRAIN_EXPIRES_SECONDS)
            sent += 1
    return sent


@shared_task(name="rollups.drain_queue")
def drain_queue(namespace_name: str, index: int) -> dict:
    """Drain one rollup queue; a duplicate or redelivered task finds less to do, never more."""
    namespace = Namespace.objects.filter(name=namespace_name).first()
    if namespace is None:
        return {}
    result = pipeline.drain(namespace, index)
    if result.batches:
        metrics.ROLLUP_BATCHES.labels(namespace_name).inc(result.batches)
        metrics.ROLLUP_EVENTS.labels(namespace_name).inc(result.events)
        metrics.ROLLUP_SECONDS.labels(namespace_name).observe(result.seconds / result.batches)
    return {"batches": result.batches, "counters": result.counters, "events": result.events}


@shared_task(name="rollups.sweep_stale")
def sweep_stale() -> int:
    result = pipeline.sweep_stale(settings.COUNTERS["STALE_AFTER_SECONDS"])
    metrics.SWEPT.inc(result.stale)
    return result.stale


@shared_task(name="rollups.enforce_retention")
def enforce_retention() -> dict:
    return retention.enforce().as_dict()


@shared_task(name="rollups.create_partitions")
def create_partitions() -> list[str]:
    from counters import partitions

    return partitions.ensure_partitions_around_now(settings.COUNTERS["PARTITION_DAYS_AHEAD"])


@shared_task(name="rollups.prune_tokens")
def prune_tokens() -> int:
    return retention.prune_tokens()
