"""Rate-limit windows and pending approvals in Redis, so N replicas enforce one policy exactly.

Each (counter, scope key) is a sorted set of admitted calls scored by the time
they were admitted. One Lua script (sent once, then run by EVALSHA) prunes,
counts and records in a single atomic step, so concurrent calls on any number
of replicas can never overshoot a limit. The script reads the clock with the
Redis server's ``TIME``: every replica's calls are stamped by one clock, so
skew between the replicas' own clocks cannot split or stretch a window.

Redis unreachable: :class:`StoreUnavailable` naming the store; the engine
refuses limited tools (fail closed). redis-py reconnects on the next call, so
service resumes by itself when Redis is back. Counts survive a Redis restart
only if Redis persists them (AOF/RDB); without persistence a restart empties
the windows.
"""

from __future__ import annotations

import json
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
PENDING_TTL_S = 900
"""A held approval reservation outlives any approval round trip; after this it is forgotten (quota still counted)."""
TIMEOUT_S = 2.0

# KEYS: the call's distinct counter keys. ARGV[1]: this call's member id; ARGV[2..1+#KEYS]: each key's horizon
# (longest window over it, microseconds); then one (key index, window us, max) triple per limit.
# Numbers go to Redis through string.format('%.0f'): Lua's default number-to-string keeps 14 digits only.
ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
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
        from redis.backoff import NoBackoff
        from redis.retry import Retry
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
        self._script = client.register_script(ACQUIRE_LUA)
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

    async def hold(self, reservation: object) -> str:
        assert isinstance(reservation, RedisReservation)
        ticket = secrets.token_urlsafe(18)
        value = json.dumps({"keys": list(reservation.keys), "member": reservation.member})
        await self.run(lambda: self._client.set(f"{self._prefix}:pending:{ticket}", value, ex=PENDING_TTL_S))
        return ticket

    async def take(self, ticket: str) -> object | None:
        value = await self.run(lambda: self._client.getdel(f"{self._prefix}:pending:{ticket}"))
        if value is None:
            return None
        data = json.loads(value)
        return RedisReservation(tuple(str(k) for k in data["keys"]), str(data["member"]))


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)
