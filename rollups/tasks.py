"""Celery tasks: thin wrappers over rollups/pipeline.py and rollups/retention.py."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import before_task_publish
from django.conf import settings

from counterproject import activity, heartbeats, metrics
from counters.models import Namespace
from rollups import audit, pipeline, queues, retention

logger = logging.getLogger(__name__)

# A dispatch runs every second; its drain tasks must not pile up behind a slow worker.
DRAIN_EXPIRES_SECONDS = 30


@shared_task(name="rollups.dispatch")
def dispatch() -> int:
    """Send a drain task for every queue with a due counter or an expired lease."""
    sent = 0
    for namespace in Namespace.objects.exclude(counter_type="best_effort").only("name"):
        for index in queues.due_queues(namespace.name):
            if queues.mark_drain_sent(namespace.name, index, DRAIN_EXPIRES_SECONDS * 1000):
                drain_queue.apply_async((namespace.name, index), expires=DRAIN_EXPIRES_SECONDS)
                sent += 1
    return sent


@shared_task(name="rollups.drain_queue")
def drain_queue(namespace_name: str, index: int) -> dict:
    """Drain one rollup queue; a duplicate or redelivered task finds less to do, never more."""
    # Cleared as the drain starts, not when it ends: a worker killed mid-drain must not keep the
    # queue from being dispatched again; at most one drain per queue waits behind a running one.
    queues.clear_drain_sent(namespace_name, index)
    namespace = Namespace.objects.filter(name=namespace_name).first()
    if namespace is None:
        return {}
    try:
        result = pipeline.drain(namespace, index)
    except Exception:
        metrics.ROLLUP_FAILURES.labels(namespace_name).inc()
        activity.record(namespace_name, activity.ROLLUP_FAILED)
        raise
    if result.batches:
        metrics.ROLLUP_BATCHES.labels(namespace_name).inc(result.batches)
        metrics.ROLLUP_EVENTS.labels(namespace_name).inc(result.events)
        metrics.ROLLUP_SECONDS.labels(namespace_name).observe(result.seconds / result.batches)
        metrics.ROLLUP_BATCH_SIZE.labels(namespace_name).observe(result.counters / result.batches)
        activity.record(namespace_name, activity.ROLLUP, result.events)
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


@shared_task(name="rollups.audit")
def audit_sample() -> dict:
    """Recount a random sample of checkpoints from raw events; log, count and repair drift."""
    return audit.audit_sample(settings.COUNTERS["AUDIT_SAMPLE_SIZE"]).as_dict()


@shared_task(name="rollups.heartbeat")
def heartbeat() -> None:
    """Run by a worker: proves a worker takes tasks (beat's stamp is taken when it sends this)."""
    heartbeats.stamp(heartbeats.WORKER)


@before_task_publish.connect(sender="rollups.heartbeat")
def _beat_sent_heartbeat(**kwargs) -> None:
    # Only Celery beat sends this task, so the publish itself is beat's proof of life.
    heartbeats.stamp(heartbeats.BEAT)
