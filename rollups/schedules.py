"""The project's periodic tasks, installed into django-celery-beat's tables after every migrate.

Existing rows are left alone, so what an operator changed in the admin (interval, enabled) stays.
Every task has an ``expires`` so a backlog of missed runs never executes late in a burst, and
every task is safe to run twice at once.
"""

from __future__ import annotations

DEFAULT_SCHEDULES = [
    # (name, task, every seconds, expires seconds)
    ("rollups: dispatch due queues", "rollups.dispatch", 1, 5),
    ("rollups: stale sweep", "rollups.sweep_stale", 30, 60),
    ("rollups: create partitions", "rollups.create_partitions", 3600, 1800),
    ("rollups: enforce retention", "rollups.enforce_retention", 3600, 1800),
    ("rollups: prune idempotency tokens", "rollups.prune_tokens", 600, 300),
    # Beat stamps its heartbeat when it sends this and the worker when it runs it; /readyz and the
    # dashboard read both (counterproject/heartbeats.py).
    ("rollups: heartbeat", "rollups.heartbeat", 15, 10),
    ("rollups: audit a sample of checkpoints", "rollups.audit", 900, 600),
]


def install_default_schedules(sender=None, **kwargs) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    for name, task, every, expires in DEFAULT_SCHEDULES:
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.SECONDS)
        PeriodicTask.objects.get_or_create(
            name=name, defaults={"task": task, "interval": interval, "expire_seconds": expires}
        )
