"""The Redis mirror of rollup checkpoints: one value per counter holding count and timestamp.

One combined value (``"<count>|<unix microseconds>"``) so a reader never sees a count from one
rollup with the timestamp of another. Writes go through a compare-and-set script that only moves
the value forward, so an old rollup finishing late cannot overwrite a newer checkpoint.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from counterproject.redis_client import get_redis, unlink_matching

# Cached checkpoints expire so that counters nobody reads do not hold Redis memory forever.
CACHE_TTL_SECONDS = 7 * 86400

_SET_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
  local ts = tonumber(string.match(current, '|(%d+)$'))
  if ts and ts >= tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'EX', ARGV[3])
return 1
"""


@dataclass(frozen=True)
class CachedCheckpoint:
    count: int
    rollup_ts: dt.datetime


def key(namespace: str, counter: str) -> str:
    return f"cp:{{{namespace}}}:{counter}"


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def micros(ts: dt.datetime) -> int:
    """Unix microseconds, as Redis values here hold times (PostgreSQL's own resolution)."""
    return (ts - EPOCH) // dt.timedelta(microseconds=1)


def from_micros(value: int | str) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=int(value))


def get(namespace: str, counter: str) -> CachedCheckpoint | None:
    value = get_redis().get(key(namespace, counter))
    if value is None:
        return None
    count, stamp = value.rsplit("|", 1)
    return CachedCheckpoint(int(count), from_micros(stamp))


def put_many(namespace: str, checkpoints: list[tuple[str, int, dt.datetime]]) -> None:
    """Mirror ``(counter, count, rollup_ts)`` checkpoints, each only if newer than the cached one."""
    if not checkpoints:
        return
    client = get_redis()
    script = client.register_script(_SET_IF_NEWER)
    pipe = client.pipeline(transaction=False)
    for counter, count, rollup_ts in checkpoints:
        script(keys=[key(namespace, counter)], args=[count, micros(rollup_ts), CACHE_TTL_SECONDS], client=pipe)
    pipe.execute()


def purge(namespace: str) -> None:
    unlink_matching(f"cp:{{{namespace}}}:*")
