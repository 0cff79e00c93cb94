"""Error detection: recount checkpoints from the raw events and repair the ones that drifted.

What can be recounted. A checkpoint ``(count, last_rollup_ts)`` claims the exact count of every
event at or before ``last_rollup_ts``; that window is closed (rollups/pipeline.py, rule 1), so it
can be recounted at any time, without racing writers, as long as none of its events are gone.
Retention drops whole partitions, oldest first, so every event at or after the start of the oldest
remaining partition (the *floor*) still exists. A recount from scratch is therefore valid when

- the counter's first event (``Checkpoint.first_event_ts``, set by its first rollup) is at or after
  the floor: nothing of it was ever dropped; or
- a clear at or before ``last_rollup_ts`` is still in retention: the count only depends on the
  events after the last clear, and those are all newer than it.

Otherwise the counter is reported ``unverifiable`` and left alone. We chose recounting from scratch
over recounting a window ``(from_ts, last_rollup_ts]`` against a stored earlier value because a
stored earlier value is itself a checkpoint that could be the wrong one; a full recount needs no
trusted base.

Repair is a compare-and-set on ``(last_rollup_ts, last_rollup_count)``: if a rollup moved the
checkpoint meanwhile, nothing is written and the next audit looks again. A rollup that had already
read the drifted value before the repair may write a newer checkpoint built on it; the next audit
finds and repairs that one in turn.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field

from django.db import connection

from counterproject import metrics
from counterproject.redis_client import get_redis
from counters import partitions
from counters.models import Namespace
from rollups import cache, pipeline
from rollups.models import Checkpoint

logger = logging.getLogger(__name__)

OK = "ok"
REPAIRED = "repaired"
DRIFT = "drift"
UNVERIFIABLE = "unverifiable"
NOT_FOUND = "not_found"

# Count of every event at or before %(until)s that follows the counter's last clear in that range.
_RECOUNT = """
WITH last_clear AS (
    SELECT e.event_time, e.id FROM counters_event e
    WHERE e.namespace = %(namespace)s AND e.counter = %(counter)s AND e.kind = 1 AND e.event_time <= %(until)s
    ORDER BY e.event_time DESC, e.id DESC
    LIMIT 1
)
SELECT COALESCE(sum(e.delta), 0), EXISTS (SELECT 1 FROM last_clear)
FROM counters_event e
WHERE e.namespace = %(namespace)s AND e.counter = %(counter)s AND e.event_time <= %(until)s
  AND NOT EXISTS (SELECT 1 FROM last_clear c WHERE (e.event_time, e.id) <= (c.event_time, c.id))
"""

# A random slice of checkpoints: a start id drawn uniformly, then the next rows by id (an index
# range scan, never a sort of the whole table).
_SAMPLE = """
SELECT c.namespace, c.counter FROM rollups_checkpoint c
WHERE c.id >= (SELECT floor(random() * (max(id) + 1)) FROM rollups_checkpoint)
ORDER BY c.id
LIMIT %s
"""


@dataclass
class AuditResult:
    """The outcome of recounting one counter; ``stored`` and ``recounted`` are counts as of
    ``rollup_ts`` (``recounted`` is None when the counter could not be recounted)."""

    namespace: str
    counter: str
    status: str
    stored: int | None = None
    recounted: int | None = None
    rollup_ts: dt.datetime | None = None

    @property
    def drift(self) -> int:
        if self.stored is None or self.recounted is None:
            return 0
        return self.recounted - self.stored


@dataclass
class AuditSummary:
    checked: int = 0
    drifted: int = 0
    repaired: int = 0
    unverifiable: int = 0
    results: list[AuditResult] = field(default_factory=list)

    def as_dict(self) -> dict:
        summary = asdict(self)
        summary["results"] = [
            {"namespace": r.namespace, "counter": r.counter, "status": r.status, "drift": r.drift}
            for r in self.results
            if r.status in (REPAIRED, DRIFT)
        ]
        return summary


def retention_floor() -> dt.datetime | None:
    """Every event at or after this instant still exists (None: the event log has no partition)."""
    existing = partitions.list_partitions()
    return existing[0].start if existing else None


def recount(namespace: Namespace, counter: str, repair: bool = True) -> AuditResult:
    """Recount ``counter`` from its raw events up to its checkpoint and compare; with ``repair``,
    write the recounted value (compare-and-set) and refresh the cache. Read-only otherwise."""
    return _recount(namespace.name, counter, repair, retention_floor())


def _recount(namespace: str, counter: str, repair: bool, floor: dt.datetime | None) -> AuditResult:
    checkpoint = Checkpoint.objects.filter(namespace=namespace, counter=counter).first()
    if checkpoint is None:
        return AuditResult(namespace, counter, NOT_FOUND)
    stored, until = int(checkpoint.last_rollup_count), checkpoint.last_rollup_ts
    result = AuditResult(namespace, counter, UNVERIFIABLE, stored=stored, rollup_ts=until)
    with pipeline.appending_no_events(), connection.cursor() as cursor:
        cursor.execute(_RECOUNT, {"namespace": namespace, "counter": counter, "until": until})
        recounted, has_clear = cursor.fetchone()
    complete = checkpoint.first_event_ts is not None and floor is not None and checkpoint.first_event_ts >= floor
    if not (complete or has_clear):
        return result
    result.recounted = int(recounted)
    if result.recounted == stored:
        result.status = OK
        return result
    result.status = DRIFT
    metrics.DRIFT.labels(namespace).inc()
    logger.error(
        "audit: %s/%s checkpoint at %s holds %d, its events sum to %d (drift %+d)",
        namespace,
        counter,
        until.isoformat(),
        stored,
        result.recounted,
        result.drift,
    )
    if repair and _repair(result):
        result.status = REPAIRED
    return result


def _repair(result: AuditResult) -> bool:
    updated = Checkpoint.objects.filter(
        namespace=result.namespace,
        counter=result.counter,
        last_rollup_ts=result.rollup_ts,
        last_rollup_count=result.stored,
    ).update(last_rollup_count=result.recounted)
    if not updated:
        logger.warning(
            "audit: %s/%s moved while being repaired; the next audit looks again", result.namespace, result.counter
        )
        return False
    # The cache only accepts newer timestamps, and the repaired value has the same one: drop the
    # wrong value first. A rollup racing us can only leave a newer value, which put_many keeps.
    get_redis().delete(cache.key(result.namespace, result.counter))
    cache.put_many(result.namespace, [(result.counter, result.recounted, result.rollup_ts)])
    logger.warning("audit: repaired %s/%s to %d", result.namespace, result.counter, result.recounted)
    return True


def audit_sample(size: int, repair: bool = True) -> AuditSummary:
    """Recount a random slice of ``size`` checkpoints of eventual/accurate namespaces."""
    summary = AuditSummary()
    with connection.cursor() as cursor:
        cursor.execute(_SAMPLE, [size])
        rows = cursor.fetchall()
    floor = retention_floor()
    for namespace, counter in rows:
        result = _recount(namespace, counter, repair, floor)
        if result.status == NOT_FOUND:
            continue
        summary.checked += 1
        summary.drifted += result.status in (DRIFT, REPAIRED)
        summary.repaired += result.status == REPAIRED
        summary.unverifiable += result.status == UNVERIFIABLE
        summary.results.append(result)
    return summary
