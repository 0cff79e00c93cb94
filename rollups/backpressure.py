"""Load shedding: refuse new event-log writes while the rollup backlog is past its limit.

Queues coalesce per counter, so the backlog counts distinct counters waiting for a rollup; when it
passes ``MAX_ROLLUP_BACKLOG`` the workers are not keeping up and more writes would only grow it.
The depth is read from Redis at most once a second per process, so checking costs no round trip
on the hot path.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings

from counters.exceptions import Backpressure
from rollups import queues

_REFRESH_SECONDS = 1.0
_lock = threading.Lock()
_depths: dict[str, tuple[float, int]] = {}


def backlog(namespace_name: str) -> int:
    """Counters queued or in flight for this namespace, at most a second old."""
    now = time.monotonic()
    with _lock:
        cached = _depths.get(namespace_name)
    if cached and now - cached[0] < _REFRESH_SECONDS:
        return cached[1]
    depth = sum(queues.depths(namespace_name).values())
    with _lock:
        _depths[namespace_name] = (now, depth)
    return depth


def check(namespace) -> None:
    limit = settings.COUNTERS["MAX_ROLLUP_BACKLOG"]
    depth = backlog(namespace.name)
    if depth > limit:
        raise Backpressure(
            "The rollup backlog is over its limit; retry later.",
            retry_after=1,
            details={"backlog": depth, "limit": limit},
        )
