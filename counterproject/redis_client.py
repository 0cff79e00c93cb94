"""The process-wide Redis client of counters, queues and caches."""

from functools import lru_cache

import redis
from django.conf import settings

from counterproject.settings import redis_url_with_db


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    url = redis_url_with_db(settings.REDIS_URL, settings.COUNTERS["REDIS_DB"])
    # Short timeouts: a request must fail fast with 503 when Redis is gone, not hang a worker.
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2)


def unlink_matching(pattern: str, chunk: int = 1000) -> int:
    """Delete every key matching ``pattern`` in chunks (SCAN, never KEYS); return how many."""
    client = get_redis()
    removed = 0
    batch: list[str] = []
    for name in client.scan_iter(match=pattern, count=chunk):
        batch.append(name)
        if len(batch) >= chunk:
            removed += client.unlink(*batch)
            batch = []
    if batch:
        removed += client.unlink(*batch)
    return removed
