"""Per-key rate limits: a fixed one-second window counted in Redis, shared by every web process."""

from __future__ import annotations

import logging
import time

import redis
from django.conf import settings
from rest_framework.throttling import BaseThrottle

from counterproject.redis_client import get_redis
from counters.models import ApiKey

logger = logging.getLogger(__name__)


def key_rate(key: ApiKey) -> int:
    """Requests per second allowed to ``key``: its own limit, else the service default; 0 is unlimited."""
    if key.rate_limit_per_second is not None:
        return key.rate_limit_per_second
    return settings.COUNTERS["RATE_LIMIT_PER_SECOND"]


class ApiKeyRateThrottle(BaseThrottle):
    """Allows ``key_rate(key)`` requests per key per wall-clock second.

    INCR and EXPIRE run in one MULTI, so concurrent requests on any number of processes never lose
    a count (DRF's SimpleRateThrottle reads, appends and writes back a history list, which races).
    A fixed window admits at most twice the rate across a window boundary, which is acceptable for
    protecting the service. When Redis is unreachable the request is let through: the limit
    protects capacity, not correctness, and the request's own Redis use reports the outage.
    """

    def __init__(self):
        self.retry_after: float | None = None

    def allow_request(self, request, view) -> bool:
        key = request.auth
        if not isinstance(key, ApiKey):
            return True
        rate = key_rate(key)
        if rate <= 0:
            return True
        now = time.time()
        window = int(now)
        try:
            pipe = get_redis().pipeline(transaction=True)
            pipe.incr(f"throttle:{key.pk}:{window}")
            pipe.expire(f"throttle:{key.pk}:{window}", 2)
            used, _ = pipe.execute()
        except redis.RedisError as error:
            logger.warning("rate limit not checked, Redis unavailable: %s", error)
            return True
        if used <= rate:
            return True
        self.retry_after = window + 1 - now
        return False

    def wait(self) -> float | None:
        return self.retry_after
