"""best_effort counters: values in Redis, changed by one Lua script per request.

The script checks tokens, applies every mutation of the request with INCRBY, sets the TTL of a
counter it creates, and remembers tokens, all atomically. A request either applies whole or not at
all: an INCRBY that would leave int64 undoes the mutations before it (inside the same script, so
nobody sees the intermediate state) and the request fails with ``count_overflow``.

Keys of a namespace share the ``{namespace}`` hash tag, so a batch script stays in one Redis
Cluster slot; the price is that one namespace lives on one cluster node.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from counterproject.redis_client import get_redis, unlink_matching

_APPLY = """
local ttl, token_ttl, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local names = KEYS[1]
local undo = {}
local out = {}

local function rollback()
  for i = #undo, 1, -1 do
    local u = undo[i]
    if u[1] == 'token' then
      redis.call('DEL', u[2])
    elseif u[3] == false then
      redis.call('DEL', u[2])
    elseif u[4] > 0 then
      redis.call('SET', u[2], u[3], 'PX', u[4])
    else
      redis.call('SET', u[2], u[3])
    end
  end
end

for i = 0, n - 1 do
  local op, counter, delta, token = ARGV[4 + i * 4], ARGV[5 + i * 4], ARGV[6 + i * 4], ARGV[7 + i * 4]
  local key, token_key = KEYS[2 + i * 2], KEYS[3 + i * 2]
  local replayed = false
  if token ~= '' then
    local previous = redis.call('GET', token_key)
    if previous then
      local p_op, p_delta, p_count = string.match(previous, '^([^|]*)|([^|]*)|(.*)$')
      if p_op ~= op or p_delta ~= delta then
        rollback()
        return {'reused', tostring(i)}
      end
      out[#out + 1] = 'R|' .. p_count
      replayed = true
    end
  end
  if not replayed then
    local old = redis.call('GET', key)
    table.insert(undo, {'value', key, old, redis.call('PTTL', key)})
    local count
    if op == 'clear' then
      redis.call('DEL', key)
      count = '0'
    else
      local reply = redis.pcall('INCRBY', key, delta)
      if type(reply) == 'table' and reply.err then
        rollback()
        return {'overflow', tostring(i)}
      end
      if old == false and ttl > 0 then
        redis.call('EXPIRE', key, ttl)
      end
      -- GET, not INCRBY's reply: Lua numbers are doubles and would round counts past 2^53.
      count = redis.call('GET', key)
    end
    if token ~= '' then
      redis.call('SET', token_key, op .. '|' .. delta .. '|' .. count, 'EX', token_ttl)
      table.insert(undo, {'token', token_key})
    end
    redis.call('ZADD', names, 0, counter)
    out[#out + 1] = 'A|' .. count
  end
end
return out
"""


@dataclass(frozen=True)
class Applied:
    applied: bool
    count: int


class Rejected(Exception):
    def __init__(self, reason: str, index: int):
        super().__init__(reason)
        self.reason = reason
        self.index = index


def value_key(namespace: str, counter: str) -> str:
    return f"be:{{{namespace}}}:c:{counter}"


def token_key(namespace: str, counter: str, token: str) -> str:
    # \x1f cannot appear in a counter name (control character), so the split is unambiguous.
    return f"be:{{{namespace}}}:t:{counter}\x1f{token}"


def names_key(namespace: str) -> str:
    return f"be:{{{namespace}}}:names"


@lru_cache(maxsize=4)
def _apply_script(client):
    return client.register_script(_APPLY)


def apply(
    namespace: str, ttl_seconds: int | None, token_ttl: int, mutations: list[tuple[str, str, int, str]]
) -> list[Applied]:
    """Apply ``(op, counter, delta, token)`` mutations in order, all or none.

    Raises ``Rejected("reused" | "overflow", index)`` with nothing applied.
    """
    keys = [names_key(namespace)]
    args: list[object] = [ttl_seconds or 0, token_ttl, len(mutations)]
    for op, counter, delta, token in mutations:
        keys += [value_key(namespace, counter), token_key(namespace, counter, token or "-")]
        args += [op, counter, str(delta), token or ""]
    # EVALSHA (the script is sent again only after Redis lost it): EVAL sent all of _APPLY with
    # every add, a tenth of a best_effort add's CPU in py-spy.
    client = get_redis()
    reply = _apply_script(client)(keys=keys, args=args, client=client)
    if reply and reply[0] in ("reused", "overflow"):
        raise Rejected(reply[0], int(reply[1]))
    return [Applied(applied=item[0] == "A", count=int(item[2:])) for item in reply]


def get(namespace: str, counter: str) -> int:
    value = get_redis().get(value_key(namespace, counter))
    return int(value) if value is not None else 0


def list_counters(namespace: str, prefix: str, after: str | None, limit: int) -> list[tuple[str, int]]:
    """Live counters in code-point order (UTF-8 byte order is code-point order)."""
    client = get_redis()
    low = f"({after}" if after is not None and after >= prefix else f"[{prefix}"
    high = f"[{prefix}\U0010ffff" if prefix else "+"
    result: list[tuple[str, int]] = []
    while len(result) < limit:
        names = client.zrangebylex(names_key(namespace), low, high, start=0, num=limit - len(result))
        if not names:
            break
        values = client.mget([value_key(namespace, name) for name in names])
        expired = [name for name, value in zip(names, values) if value is None]
        if expired:
            client.zrem(names_key(namespace), *expired)
        result += [(name, int(value)) for name, value in zip(names, values) if value is not None]
        low = f"({names[-1]}"
    return result


def purge(namespace: str) -> None:
    unlink_matching(f"be:{{{namespace}}}:*")
