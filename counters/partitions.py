"""Daily range partitions of the event log.

Checked for a library first: django-postgres-extra's partition manager needs its own database
backend and drops partitions by age alone (it cannot ask whether their events are rolled up), and
pg_partman is an extension the embedded PostgreSQL does not ship. What we need is small: create
daily partitions ahead, and list old ones for retention (rollups/retention.py) to drop safely.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import connection, transaction

PARENT = "counters_event"
PREFIX = "counters_event_p"
# Arbitrary constant naming the advisory lock that serializes partition DDL.
PARTITION_LOCK_ID = 7_215_001


@dataclass(frozen=True)
class Partition:
    name: str
    start: dt.datetime
    end: dt.datetime


def name_for(day: dt.date) -> str:
    return f"{PREFIX}{day:%Y%m%d}"


def ensure_partitions(first_day: dt.date, days: int) -> list[str]:
    """Create the daily partitions covering ``days`` days from ``first_day``.

    Idempotent; concurrent callers serialize on an advisory lock, because two concurrent
    CREATE TABLE IF NOT EXISTS of one partition can still collide in the catalog.
    """
    existing = {p.name for p in list_partitions()}
    wanted = [first_day + dt.timedelta(days=offset) for offset in range(days)]
    missing = [day for day in wanted if name_for(day) not in existing]
    if not missing:
        return []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PARTITION_LOCK_ID])
        for day in missing:
            start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
            cursor.execute(
                f'CREATE TABLE IF NOT EXISTS "{name_for(day)}" PARTITION OF {PARENT} FOR VALUES FROM (%s) TO (%s)',
                [start, start + dt.timedelta(days=1)],
            )
    return [name_for(day) for day in missing]


def ensure_partitions_around_now(days_ahead: int) -> list[str]:
    """Partitions for yesterday (clock skew between hosts) through ``days_ahead`` days ahead."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT (now() AT TIME ZONE 'UTC')::date")
        today = cursor.fetchone()[0]
    return ensure_partitions(today - dt.timedelta(days=1), days_ahead + 2)


def list_partitions() -> list[Partition]:
    """Every daily partition of the event log, oldest first, with its bounds.

    Bounds come from the names this module gives partitions, not from ``pg_get_expr``: that
    opens each partition, and fails ("could not open relation") when retention drops one at the
    same moment, which would fail the write path's on-demand partition creation.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT child.relname
            FROM pg_inherits
            JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
            JOIN pg_class child ON child.oid = pg_inherits.inhrelid
            WHERE parent.relname = %s AND child.relname LIKE %s
            ORDER BY child.relname
            """,
            [PARENT, PREFIX + "%"],
        )
        names = [name for (name,) in cursor.fetchall()]
    partitions = []
    for name in names:
        try:
            day = dt.datetime.strptime(name.removeprefix(PREFIX), "%Y%m%d").replace(tzinfo=dt.UTC)
        except ValueError:
            continue  # not one of ours (created by hand): retention leaves it alone
        partitions.append(Partition(name, day, day + dt.timedelta(days=1)))
    return partitions
