"""Rate-limit windows and pending approvals in Redis, so N replicas enforce one policy exactly.

Each (counter, scope key) is a sorted set of admitted calls scored by the time
they were admitted. One Lua script (sent once, then run by EVALSHA) prunes,
counts and records in a single atomic step, so concurrent calls on any number
of replicas can never overshoot a limit. The script reads the clock with the
Redis server's ``TIME``: every replica's calls are stamped by one clock, so
skew between the replicas' own clocks cannot split or stretch a window.

A reservation held while the user is asked (an approval) is recorded in one
sorted set of held tickets scored by when the hold expires. The acquire script
first gives back the quota of every hold past its expiry, so a client that never
returns with its answer frees the slot exactly when its approval expires, on
every replica, with no sweeper process. Taking a ticket is a script too, so a
hold is taken or expired, never both.

Redis unreachable: :class:`StoreUnavailable` naming the store; the engine
refuses limited tools (fail closed). redis-py reconnects on the next call, so
service resumes by itself when Redis is back. Counts survive a Redis restart
only if Redis persists them (AOF/RDB); without persistence a restart empties
the windows.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..policy.model import Limit
from ..policy.ratelimit import Blocked, counter_key
from ..policy.store import StoreUnavailable

T = TypeVar("T")
PREFIX = "mcp-pyodide"
HOLD_GRACE_S = 60
"""A held ticket's record outlives its expiry and the longest window by this much: until then the acquire
script can still give its quota back (after it, the quota has slid out of every window anyway)."""
SWEEP_BATCH = 100
"""Expired holds given back per acquire (the rest at the next one)."""
TIMEOUT_S = 2.0

# Gives back the quota of up to SWEEP_BATCH holds past their expiry. Expects `now` (microseconds) and `holds`
# (the sorted set of held tickets) to be defined; `pending` is the ticket records' key prefix.
SWEEP_LUA = """
local expired = redis.call('ZRANGEBYSCORE', holds, '-inf', string.format('%.0f', now), 'LIMIT', 0, SWEEP_BATCH)
for _, ticket in ipairs(expired) do
  local value = redis.call('GET', pending .. ticket)
  if value then
    local record = cjson.decode(value)
    for _, key in ipairs(record.keys) do redis.call('ZREM', key, record.member) end
    redis.call('DEL', pending .. ticket)
  end
  redis.call('ZREM', holds, ticket)
end
""".replace("SWEEP_BATCH", str(SWEEP_BATCH))
CLOCK_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

# KEYS: the call's distinct counter keys. ARGV[1]: this call's member id; ARGV[2..1+#KEYS]: each key's horizon
# (longest window over it, microseconds); then one (key index, window us, max) triple per limit.
# Numbers go to Redis through string.format('%.0f'): Lua's default number-to-string keeps 14 digits only.
# The holds' keys are not in KEYS: one Redis server (or a Sentinel primary), not Cluster.
ACQUIRE_LUA = (
    CLOCK_LUA
    + """
local holds, pending = HOLDS, PENDING
"""
    + SWEEP_LUA
    + """
local nkeys = #KEYS
for k = 1, nkeys do
  redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', string.format('%.0f', now - tonumber(ARGV[1 + k])))
end
local worst, worst_retry, limit_no = 0, 0, 0
local i = 2 + nkeys
while i <= #ARGV do
  limit_no = limit_no + 1
  local key = KEYS[tonumber(ARGV[i])]
  local window, max = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local from = string.format('(%.0f', now - window)
  local count = redis.call('ZCOUNT', key, from, '+inf')
  if count >= max then
    local retry = -1
    if max > 0 then
      local oldest = redis.call('ZRANGEBYSCORE', key, from, '+inf', 'WITHSCORES', 'LIMIT', count - max, 1)
      retry = tonumber(oldest[2]) + window - now
    end
    if worst == 0 or (retry == -1 and worst_retry ~= -1) or (worst_retry ~= -1 and retry > worst_retry) then
      worst, worst_retry = limit_no, retry
    end
  end
  i = i + 3
end
if worst > 0 then
  return {0, worst, string.format('%.0f', worst_retry)}
end
for k = 1, nkeys do
  redis.call('ZADD', KEYS[k], string.format('%.0f', now), ARGV[1])
  redis.call('PEXPIRE', KEYS[k], string.format('%.0f', math.ceil(tonumber(ARGV[1 + k]) / 1000) + 1000))
end
return {1, 0, '0'}
"""
)
# KEYS[1]: the ticket's record; KEYS[2]: the holds. ARGV: ticket, record JSON, hold (us), record TTL (s).
HOLD_LUA = (
    CLOCK_LUA
    + """
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[4])
redis.call('ZADD', KEYS[2], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
return 1
"""
)
# KEYS[1]: the ticket's record; KEYS[2]: the holds. ARGV: ticket. Returns the record, or false when the ticket is
# unknown, taken or expired (an expired one's quota is given back here).
TAKE_LUA = (
    CLOCK_LUA
    + """
local until_ = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not until_ then return false end
redis.call('ZREM', KEYS[2], ARGV[1])
local value = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1])
if not value then return false end
if tonumber(until_) <= now then
  local record = cjson.decode(value)
  for _, key in ipairs(record.keys) do redis.call('ZREM', key, record.member) end
  return false
end
return value
"""
)


@dataclass(frozen=True)
class RedisReservation:
    keys: tuple[str, ...]
    member: str


def safe_url(url: str) -> str:
    """The store's URL without its password, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def connect(url: str) -> Any:
    """An asyncio Redis client that fails fast (2 s) and retries once (a pooled connection gone stale)."""
    try:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ValueError("--state redis://... needs the redis package: pip install 'mcp-pyodide[redis]'") from exc
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"--state {safe_url(url)}: expected a redis://, rediss:// or unix:// URL")
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=TIMEOUT_S,
        socket_timeout=TIMEOUT_S,
        retry=Retry(NoBackoff(), 1),
        decode_responses=True,
    )


class RedisLimitStore:
    """:class:`~mcp_pyodide.policy.store.LimitStore` on Redis (one server or a Sentinel primary; not Cluster)."""

    def __init__(self, client: Any, url: str, all_limits: Iterable[Limit], prefix: str = PREFIX) -> None:
        self._client = client
        self.name = f"the shared state store {safe_url(url)}"
        self._prefix = prefix
        self._holds = f"{prefix}:holds"
        self._pending = f"{prefix}:pending:"
        quoted = ACQUIRE_LUA.replace("HOLDS", json.dumps(self._holds)).replace("PENDING", json.dumps(self._pending))
        self._script = client.register_script(quoted)
        self._hold = client.register_script(HOLD_LUA)
        self._take = client.register_script(TAKE_LUA)
        self._horizon: dict[str, float] = {}
        for limit in all_limits:
            self._horizon[limit.counter] = max(self._horizon.get(limit.counter, 0.0), limit.window)

    def key(self, limit: Limit, session_id: str, principal: str) -> str:
        counter, scope, who = counter_key(limit, session_id, principal)
        return f"{self._prefix}:rl:{counter}:{scope}:{who}"

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation``; after a connection error drop every pooled connection (all stale once Redis
        restarted) and try once more; then give up with :class:`StoreUnavailable`."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisError

        try:
            try:
                return await operation()
            except RedisConnectionError:
                await self._client.connection_pool.disconnect()
                return await operation()
        except RedisError as exc:
            raise StoreUnavailable(f"{self.name} is unreachable ({type(exc).__name__}: {exc})") from exc

    async def try_acquire(self, limits: Sequence[Limit], session_id: str, principal: str) -> object | Blocked:
        by_key: dict[str, Limit] = {}
        for limit in limits:
            by_key.setdefault(self.key(limit, session_id, principal), limit)
        keys = list(by_key)
        member = secrets.token_hex(12)
        args: list[str | int] = [member]
        args += [_us(self._horizon.get(by_key[key].counter, by_key[key].window)) for key in keys]
        for limit in limits:
            args += [keys.index(self.key(limit, session_id, principal)) + 1, _us(limit.window), limit.max]
        admitted, which, retry = await self.run(lambda: self._script(keys=keys, args=args))
        if int(admitted) == 1:
            return RedisReservation(tuple(keys), member)
        retry_us = int(retry)
        return Blocked(limits[int(which) - 1], None if retry_us < 0 else retry_us / 1_000_000)

    async def release(self, reservation: object) -> None:
        assert isinstance(reservation, RedisReservation)

        async def remove() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in reservation.keys:
                    pipe.zrem(key, reservation.member)
                await pipe.execute()

        await self.run(remove)

    async def hold(self, reservation: object, ttl_s: float) -> str:
        assert isinstance(reservation, RedisReservation)
        ticket = secrets.token_urlsafe(18)
        value = json.dumps({"keys": list(reservation.keys), "member": reservation.member})
        keep = math.ceil(ttl_s + max(self._horizon.values(), default=0.0)) + HOLD_GRACE_S
        args = [ticket, value, _us(ttl_s), keep]
        await self.run(lambda: self._hold(keys=[self._pending + ticket, self._holds], args=args))
        return ticket

    async def take(self, ticket: str) -> object | None:
        value = await self.run(lambda: self._take(keys=[self._pending + ticket, self._holds], args=[ticket]))
        if not value:
            return None
        data = json.loads(value)
        return RedisReservation(tuple(str(k) for k in data["keys"]), str(data["member"]))


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)
