"""Liveness of the Celery processes, as timestamps in Redis.

Beat publishes ``rollups.heartbeat`` every 15 seconds and a worker runs it: the publish stamps
``beat`` (rollups/tasks.py connects the hook) and the run stamps ``worker``. So a stale ``beat``
means no scheduler is sending periodic tasks (no dispatch, no sweeps, no retention), and a stale
``worker`` with a fresh ``beat`` means tasks are sent but nobody runs them.
"""

from __future__ import annotations

import time

from counterproject.redis_client import get_redis

BEAT = "beat"
WORKER = "worker"
# A stamp outlives any sensible staleness threshold, then goes, so an abandoned deployment's
# stamps do not linger in Redis for ever.
TTL_SECONDS = 86400


def key(process: str) -> str:
    return f"heartbeat:{process}"


def stamp(process: str, at: float | None = None) -> None:
    get_redis().set(key(process), repr(time.time() if at is None else at), ex=TTL_SECONDS)


def age(process: str) -> float | None:
    """Seconds since ``process`` last stamped, or None if it never did (or its stamp expired)."""
    value = get_redis().get(key(process))
    return None if value is None else max(0.0, time.time() - float(value))
