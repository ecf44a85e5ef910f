"""Session handles in Redis, so every replica can tell a live handle of this principal from a guessed one.

One hash per handle, ``<prefix>:handle:<sha256 of the id>`` = {principal,
label, created, last_used}, with the idle timeout as its TTL (the key
is a digest, so whoever reads Redis does not learn the handles): each use restarts it,
so an idle handle disappears from every replica at once and nothing needs
sweeping. Lookup and refresh are one Lua script each (check the principal,
stamp, extend), so a handle cannot expire between the check and the refresh.
Only the record is shared: the interpreter stays in the replica whose process
runs it (`Handle.here` says whether this process minted the handle).

Redis unreachable: :class:`~mcp_pyodide.policy.store.StoreUnavailable` naming
the store, and the call runs nothing (never a local handle other replicas lack).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any

from ..server.handles import MAX_HANDLES, Handle, folder_of, new_handle
from .redis_store import PREFIX, RedisLimitStore

MAX_ID_CHARS = 64
"""Longer than any minted id (32 characters): not even looked up."""

# KEYS[1]: the handle's key. ARGV: principal, now (wall seconds), ttl (ms). Returns {label, created} or nil.
LOOKUP_LUA = """
local v = redis.call('HMGET', KEYS[1], 'principal', 'label', 'created')
if not v[1] or v[1] ~= ARGV[1] then return false end
redis.call('HSET', KEYS[1], 'last_used', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {v[2], v[3]}
"""
# KEYS[1]: the handle's key. ARGV: now, ttl (ms). Extends a handle that is still there; never recreates one.
TOUCH_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'last_used', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


def handle_key(handle_id: str, prefix: str = PREFIX) -> str:
    """Where a handle's record lives: named by a digest, never by the secret itself."""
    return f"{prefix}:handle:{hashlib.sha256(handle_id.encode()).hexdigest()}"


class RedisHandles:
    """:class:`~mcp_pyodide.server.handles.HandleRegistry` on Redis, shared by every replica."""

    def __init__(self, store: RedisLimitStore, client: Any, idle_timeout_s: float, prefix: str = PREFIX) -> None:
        self.idle_timeout_s = idle_timeout_s
        self._store = store  # its `run` names the store and fails closed
        self._client = client
        self._ttl_ms = max(1, round(idle_timeout_s * 1000))
        self._prefix = prefix
        self._lookup = client.register_script(LOOKUP_LUA)
        self._touch = client.register_script(TOUCH_LUA)
        self._known: OrderedDict[str, bool] = OrderedDict()  # ids seen here -> minted here (bounded)

    def key(self, handle_id: str) -> str:
        return handle_key(handle_id, self._prefix)

    def _remember(self, handle_id: str, minted: bool) -> None:
        self._known[handle_id] = minted or self._known.get(handle_id, False)
        self._known.move_to_end(handle_id)
        while len(self._known) > MAX_HANDLES:
            self._known.popitem(last=False)

    async def mint(self, principal: str) -> Handle:
        handle = new_handle(principal, time.time())
        handle.created = handle.last_used  # one wall-clock reading for both
        fields = {
            "principal": principal,
            "label": handle.label,
            "created": repr(handle.created),
            "last_used": repr(handle.last_used),
        }

        async def write() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self.key(handle.id), mapping=fields)
                pipe.pexpire(self.key(handle.id), self._ttl_ms)
                await pipe.execute()

        await self._store.run(write)
        self._remember(handle.id, minted=True)
        return handle

    async def lookup(self, handle_id: str, principal: str) -> Handle | None:
        if len(handle_id) > MAX_ID_CHARS:
            return None
        now = time.time()
        found = await self._store.run(
            lambda: self._lookup(keys=[self.key(handle_id)], args=[principal, repr(now), self._ttl_ms])
        )
        if not found:
            return None
        label, created = (str(value) for value in found)
        self._remember(handle_id, minted=False)
        return Handle(
            id=handle_id,
            label=label,
            principal=principal,
            created=float(created),
            last_used=now,
            folder=folder_of(handle_id),
            here=self._known[handle_id],
        )

    async def touch(self, handle_id: str) -> None:
        now = time.time()
        await self._store.run(lambda: self._touch(keys=[self.key(handle_id)], args=[repr(now), self._ttl_ms]))

    async def end(self, handle_id: str) -> None:
        self._known.pop(handle_id, None)
        await self._store.run(lambda: self._client.delete(self.key(handle_id)))

    async def sweep(self) -> list[str]:
        ids = list(self._known)
        if not ids:
            return []

        async def exists() -> list[Any]:
            async with self._client.pipeline(transaction=False) as pipe:
                for handle_id in ids:
                    pipe.exists(self.key(handle_id))
                return list(await pipe.execute())

        alive = await self._store.run(exists)
        gone = [handle_id for handle_id, there in zip(ids, alive, strict=True) if not there]
        for handle_id in gone:
            self._known.pop(handle_id, None)
        return gone
