"""Retention: drop whole partitions past every namespace's retention, never an unfolded event.

The event log is one table partitioned by day for all namespaces, so a partition can go once it is
older than the longest retention of any eventual/accurate namespace: each namespace keeps its raw
events *at least* ``retention_days``. Before dropping, the partition is checked for events that no
checkpoint covers yet; those are rolled up first and the drop waits for the next run.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field

from django.conf import settings
from django.db import OperationalError, connection, transaction

from counters import partitions
from counters.models import Namespace
from rollups import pipeline

logger = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 7
# DROP TABLE needs an exclusive lock on the parent; waiting behind a long query would block every
# insert queued behind us, so give up quickly and try again on the next run.
DROP_LOCK_TIMEOUT = "2s"
TOKEN_PRUNE_CHUNK = 5000
# Arbitrary constant naming the session-level advisory lock held by the one running retention.
RETENTION_LOCK_ID = 7_215_003

_UNFOLDED_IN_PARTITION = """
SELECT DISTINCT e.namespace, e.counter
FROM {partition} e
JOIN counters_namespace n ON n.name = e.namespace
LEFT JOIN rollups_checkpoint c ON c.namespace = e.namespace AND c.counter = e.counter
WHERE c.last_rollup_ts IS NULL OR e.event_time > c.last_rollup_ts
LIMIT 10000
"""


@dataclass
class RetentionResult:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def horizon(now: dt.datetime) -> dt.datetime:
    """Events before this instant are past every namespace's retention."""
    longest = max(
        Namespace.objects.exclude(counter_type="best_effort").values_list("retention_days", flat=True),
        default=DEFAULT_RETENTION_DAYS,
    )
    return now - dt.timedelta(days=longest)


def enforce(now: dt.datetime | None = None) -> RetentionResult:
    """Create partitions ahead, then drop expired ones whose events are all folded. Safe to run
    twice at once: DDL is serialized by an advisory lock and every step re-checks the catalog."""
    now = now or dt.datetime.now(dt.UTC)
    result = RetentionResult(created=partitions.ensure_partitions_around_now(settings.COUNTERS["PARTITION_DAYS_AHEAD"]))
    cutoff = horizon(now)
    with connection.cursor() as cursor:
        # One run drops at a time; a second one finds the lock taken and leaves the work to it.
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [RETENTION_LOCK_ID])
        if not cursor.fetchone()[0]:
            return result
        try:
            for partition in partitions.list_partitions():
                if partition.end > cutoff:
                    continue
                dropped, unfolded = _drop_if_folded(partition.name)
                if dropped:
                    result.dropped.append(partition.name)
                elif unfolded:
                    result.held.append(partition.name)
                    _fold(unfolded)
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [RETENTION_LOCK_ID])
    if result.dropped or result.held:
        logger.info("retention: dropped %s, held %s", result.dropped, result.held)
    return result


def _fold(unfolded: list[tuple[str, str]]) -> None:
    by_namespace: dict[str, list[str]] = {}
    for namespace, counter in unfolded:
        by_namespace.setdefault(namespace, []).append(counter)
    for namespace in Namespace.objects.filter(name__in=by_namespace):
        pipeline.rollup(namespace, by_namespace[namespace.name])


def _drop_if_folded(name: str) -> tuple[bool, list[tuple[str, str]]]:
    """Drop the partition if every event in it is folded; otherwise return the counters to fold.

    Check and drop happen in one transaction under the partition-DDL advisory lock, which also
    serializes them with partition creation.
    """
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [partitions.PARTITION_LOCK_ID])
            cursor.execute("SELECT to_regclass(%s)", [f'"{name}"'])
            if cursor.fetchone()[0] is None:
                return False, []
            cursor.execute(_UNFOLDED_IN_PARTITION.format(partition=f'"{name}"'))
            unfolded = cursor.fetchall()
            if unfolded:
                return False, unfolded
            cursor.execute(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'")
            cursor.execute(f'DROP TABLE "{name}"')
        return True, []
    except OperationalError as error:
        logger.warning("retention: could not drop %s now (%s); next run retries", name, error)
        return False, []


def prune_tokens(chunk: int = TOKEN_PRUNE_CHUNK) -> int:
    """Delete tokens past their namespace's idempotency window, in bounded batches."""
    removed = 0
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                """
                DELETE FROM counters_idempotencytoken WHERE id IN (
                    SELECT t.id FROM counters_idempotencytoken t
                    LEFT JOIN counters_namespace n ON n.name = t.namespace
                    WHERE n.id IS NULL
                       OR t.created_at < now() - make_interval(secs => n.idempotency_window_seconds)
                    LIMIT %s)
                """,
                [chunk],
            )
            removed += cursor.rowcount
            if cursor.rowcount < chunk:
                return removed
