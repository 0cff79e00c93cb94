"""Durable, coalescing rollup queues in Redis.

A queue is a sorted set of counter names: the member is the counter (so repeated triggers coalesce
into one entry) and the score is the earliest time a rollup is due (``ZADD LT`` keeps the earliest).
A counter always hashes to the same queue (xxhash of its name modulo the namespace's
``num_queues``). Claiming moves members atomically into the queue's in-flight set with a lease
deadline; a worker that dies mid-batch leaves them there and the next claim after the lease expires
hands them to another worker. A trigger carries no delta, so losing one only delays a rollup, and
the stale sweep (rollups/pipeline.py) re-creates triggers from the event log.

Keys of one queue share a ``{hash tag}`` so the claim script stays in one Redis Cluster slot.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable

import xxhash

from counterproject.redis_client import get_redis

# Queues of a namespace are numbered 0..MAX_QUEUES-1; num_queues may change at run time, so
# draining looks at every index a namespace could have used.
MAX_QUEUES = 64


def queue_index(counter: str, num_queues: int) -> int:
    return xxhash.xxh64_intdigest(counter.encode()) % num_queues


def queue_key(namespace: str, index: int) -> str:
    return f"rq:{{{namespace}:{index}}}"


def inflight_key(namespace: str, index: int) -> str:
    return f"rq:{{{namespace}:{index}}}:inflight"


def now_ms() -> int:
    return int(time.time() * 1000)


def trigger(namespace: str, num_queues: int, counters: Iterable[str], due_at_ms: int, pipe=None) -> None:
    """Ask for a rollup of ``counters`` no later than ``due_at_ms`` (unix milliseconds); with
    ``pipe``, only add the commands to that Redis pipeline (its caller executes it)."""
    by_queue: dict[int, dict[str, int]] = defaultdict(dict)
    for counter in counters:
        by_queue[queue_index(counter, num_queues)][counter] = due_at_ms
    own = pipe is None
    if own:
        pipe = get_redis().pipeline(transaction=False)
    for index, members in by_queue.items():
        pipe.zadd(queue_key(namespace, index), members, lt=True)
    if own:
        pipe.execute()


_CLAIM = """
local queue, inflight = KEYS[1], KEYS[2]
local now, limit, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
-- A lease that ran out belongs to a dead or stuck worker: its counters are due again.
local expired = redis.call('ZRANGEBYSCORE', inflight, '-inf', now)
for _, member in ipairs(expired) do
  redis.call('ZREM', inflight, member)
  redis.call('ZADD', queue, 'LT', now, member)
end
local members = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'LIMIT', 0, limit)
for _, member in ipairs(members) do
  redis.call('ZREM', queue, member)
  redis.call('ZADD', inflight, now + lease, member)
end
return members
"""

_ACK = """
local inflight = KEYS[1]
local deadline = tonumber(ARGV[1])
local removed = 0
for i = 2, #ARGV do
  -- Only our own lease: after it expired the member may belong to another worker now.
  if tonumber(redis.call('ZSCORE', inflight, ARGV[i])) == deadline then
    removed = removed + redis.call('ZREM', inflight, ARGV[i])
  end
end
return removed
"""


def claim(namespace: str, index: int, limit: int, lease_ms: int) -> tuple[list[str], int]:
    """Take up to ``limit`` due counters; return them and the lease deadline to acknowledge with."""
    now = now_ms()
    members = get_redis().eval(
        _CLAIM, 2, queue_key(namespace, index), inflight_key(namespace, index), now, limit, lease_ms
    )
    return members, now + lease_ms


def acknowledge(namespace: str, index: int, members: list[str], deadline_ms: int) -> int:
    """Release the claimed counters of a finished batch (those whose lease is still ours)."""
    if not members:
        return 0
    return get_redis().eval(_ACK, 1, inflight_key(namespace, index), deadline_ms, *members)


def due_queues(namespace: str) -> list[int]:
    """Indexes of this namespace's queues holding a due counter or an expired lease."""
    now = now_ms()
    pipe = get_redis().pipeline(transaction=False)
    for index in range(MAX_QUEUES):
        pipe.zrangebyscore(queue_key(namespace, index), "-inf", now, start=0, num=1)
        pipe.zrangebyscore(inflight_key(namespace, index), "-inf", now, start=0, num=1)
    replies = pipe.execute()
    return [index for index in range(MAX_QUEUES) if replies[2 * index] or replies[2 * index + 1]]


def depths(namespace: str) -> dict[int, int]:
    """Queued plus in-flight counters per queue index (only non-empty queues)."""
    pipe = get_redis().pipeline(transaction=False)
    for index in range(MAX_QUEUES):
        pipe.zcard(queue_key(namespace, index))
        pipe.zcard(inflight_key(namespace, index))
    replies = pipe.execute()
    result = {}
    for index in range(MAX_QUEUES):
        total = replies[2 * index] + replies[2 * index + 1]
        if total:
            result[index] = total
    return result


def drain_sent_key(namespace: str, index: int) -> str:
    return f"rq:{{{namespace}:{index}}}:drain-sent"


def mark_drain_sent(namespace: str, index: int, ttl_ms: int) -> bool:
    """True when no drain task for this queue is waiting to start (and marks one as sent).

    Dispatch runs every second while a drain may run for seconds: without the mark, every second
    would queue one more drain for the same queue. A drain clears the mark as it starts; the mark
    also expires by itself, so a lost task only delays the next one by ``ttl_ms``.
    """
    return bool(get_redis().set(drain_sent_key(namespace, index), 1, nx=True, px=ttl_ms))


def clear_drain_sent(namespace: str, index: int) -> None:
    get_redis().delete(drain_sent_key(namespace, index))


def purge(namespace: str) -> None:
    keys = [key(namespace, i) for key in (queue_key, inflight_key, drain_sent_key) for i in range(MAX_QUEUES)]
    get_redis().delete(*keys)
