"""Load shedding: refuse new event-log writes while PostgreSQL or the rollups are falling behind.

Two signals, either of which sheds load with 429 + ``Retry-After`` before anything is applied:

- The rollup backlog. Queues coalesce per counter, so the backlog counts distinct counters waiting
  for a rollup; past ``MAX_ROLLUP_BACKLOG`` the workers are not keeping up and more writes would
  only grow it. The depth is read from Redis at most once a second per process, so checking costs
  no round trip on the hot path. With Redis unreachable the last known depth stands: the write
  path itself only needs PostgreSQL, and refusing writes because a cache is down would turn a
  Redis outage into a write outage.
- The write latency: an exponentially weighted moving average of the write-path transaction time,
  kept per process (each gunicorn process sees the same PostgreSQL, so each learns the same
  signal without a shared store). Past ``MAX_WRITE_LATENCY_MS`` PostgreSQL is saturated. A
  process that sheds writes takes no new samples, so the average decays with its age (half-life
  ``WRITE_LATENCY_HALF_LIFE_SECONDS``) and the process probes again shortly after.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import redis
from django.conf import settings

from counterproject import metrics
from counters.exceptions import Backpressure
from rollups import queues

logger = logging.getLogger(__name__)

_REFRESH_SECONDS = 1.0
# Weight of the newest sample in the write-latency average: about the last 10 writes matter.
_EWMA_ALPHA = 0.2
_lock = threading.Lock()
_depths: dict[str, tuple[float, int]] = {}


@dataclass
class _Latency:
    seconds: float = 0.0
    sampled_at: float = 0.0


_latency = _Latency()


def backlog(namespace_name: str) -> int:
    """Counters queued or in flight for this namespace, at most a second old."""
    now = time.monotonic()
    with _lock:
        cached = _depths.get(namespace_name)
    if cached and now - cached[0] < _REFRESH_SECONDS:
        return cached[1]
    try:
        depth = sum(queues.depths(namespace_name).values())
    except redis.RedisError as error:
        logger.warning("back-pressure: rollup backlog unknown (%s); keeping the last known depth", error)
        depth = cached[1] if cached else 0
    with _lock:
        _depths[namespace_name] = (now, depth)
    return depth


def record_write(seconds: float) -> None:
    """Fold one write-path transaction time into this process's latency average."""
    now = time.monotonic()
    with _lock:
        current = _decayed(now)
        _latency.seconds = seconds if _latency.sampled_at == 0.0 else current + _EWMA_ALPHA * (seconds - current)
        _latency.sampled_at = now


def write_latency() -> float:
    """The write-latency average in seconds, decayed by the time since its last sample."""
    with _lock:
        return _decayed(time.monotonic())


def _decayed(now: float) -> float:
    if _latency.sampled_at == 0.0:
        return 0.0
    half_life = settings.COUNTERS["WRITE_LATENCY_HALF_LIFE_SECONDS"]
    return _latency.seconds * math.pow(0.5, (now - _latency.sampled_at) / half_life)


def reset() -> None:
    """Forget every measurement (tests, and a process that just forked)."""
    with _lock:
        _depths.clear()
        _latency.seconds = 0.0
        _latency.sampled_at = 0.0


def check(namespace) -> None:
    """Raise Backpressure (429) when a write to ``namespace`` should wait; apply nothing then."""
    limit = settings.COUNTERS["MAX_ROLLUP_BACKLOG"]
    depth = backlog(namespace.name)
    if depth > limit:
        metrics.BACKPRESSURE.labels(namespace.name).inc()
        raise Backpressure(
            "The rollup backlog is over its limit; retry later.",
            retry_after=1,
            details={"reason": "rollup_backlog", "backlog": depth, "limit": limit},
        )
    latency_ms = write_latency() * 1000
    latency_limit_ms = settings.COUNTERS["MAX_WRITE_LATENCY_MS"]
    if latency_ms > latency_limit_ms:
        metrics.BACKPRESSURE.labels(namespace.name).inc()
        raise Backpressure(
            "PostgreSQL is slow to absorb writes; retry later.",
            retry_after=1,
            details={"reason": "write_latency", "latency_ms": round(latency_ms), "limit_ms": latency_limit_ms},
        )
