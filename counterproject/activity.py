"""Per-minute activity counts in Redis, for the dashboard's charts of the last hour.

Prometheus (counterproject/metrics.py) is the long-term record; these series exist so that the
dashboard can draw the last hour without a metrics server and without touching the event table.
Each series is one Redis integer per minute (``stats:{namespace}:{kind}:{unix minute}``) that
expires after two hours; every record also feeds the ``*`` series of all namespaces, so the
overall chart is one MGET whatever the number of namespaces.

Recording is telemetry: a Redis failure is logged and swallowed, never failing the request or
the rollup that reported it.
"""

from __future__ import annotations

import logging
import time

import redis

from counterproject.redis_client import get_redis

logger = logging.getLogger(__name__)

INGEST = "ingest"
ROLLUP = "rollup"
THROTTLED = "throttled"
ROLLUP_FAILED = "rollup_failed"
KINDS = (INGEST, ROLLUP, THROTTLED, ROLLUP_FAILED)
ALL = "*"

# Twice the charted hour, so a minute is never read after it expired.
TTL_SECONDS = 2 * 3600


def minute(at: float | None = None) -> int:
    return int((time.time() if at is None else at) // 60)


def key(namespace: str, kind: str, at_minute: int) -> str:
    return f"stats:{namespace}:{kind}:{at_minute}"


def record(namespace: str, kind: str, amount: int = 1, pipe=None) -> None:
    """Add ``amount`` to this minute of ``kind`` for ``namespace`` and for all namespaces; with
    ``pipe``, only add the commands to that Redis pipeline (its caller executes it and handles
    its errors)."""
    if amount <= 0:
        return
    now = minute()
    own = pipe is None
    try:
        if own:
            pipe = get_redis().pipeline(transaction=False)
        for scope in (namespace, ALL):
            pipe.incrby(key(scope, kind, now), amount)
            pipe.expire(key(scope, kind, now), TTL_SECONDS)
        if own:
            pipe.execute()
    except redis.RedisError as error:
        logger.warning("activity of %s/%s not recorded: %s", namespace, kind, error)


def series(namespace: str, kind: str, minutes: int = 60) -> list[tuple[int, int]]:
    """``(unix seconds of the minute, count)`` for the last ``minutes`` minutes, oldest first,
    zeros included (the current, still-filling minute is the last one)."""
    last = minute()
    window = range(last - minutes + 1, last + 1)
    values = get_redis().mget([key(namespace, kind, m) for m in window])
    return [(m * 60, int(value or 0)) for m, value in zip(window, values)]
