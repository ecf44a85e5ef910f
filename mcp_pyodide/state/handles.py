"""Interpreter-session handles bound to the principal that made them, in memory or in Redis.

A minimal registry interface of our own (the protocol work's registry is to
converge on it): ``create`` mints an unguessable handle for a principal;
``resolve`` answers only for that same principal and only while the handle
is alive (each use restarts its idle time); another principal's handle, a
guessed one and an expired one all look the same: unknown, and run nothing.
In Redis a handle is one key with the idle timeout as its TTL, so every
replica sees the same handles and expiry needs no sweeper.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

HANDLE_BYTES = 24


def new_handle() -> str:
    return "ps_" + secrets.token_urlsafe(HANDLE_BYTES)


class HandleRegistry(Protocol):
    async def create(self, principal: str) -> str: ...

    async def resolve(self, handle: str, principal: str) -> bool:
        """True when ``handle`` is alive and belongs to ``principal`` (and then its idle time restarts)."""
        ...

    async def drop(self, handle: str) -> None: ...


class MemoryHandles:
    """One process's handles (stdio, or a single HTTP replica)."""

    def __init__(self, idle_timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_timeout_s = idle_timeout_s
        self._clock = clock
        self._handles: dict[str, tuple[str, float]] = {}

    async def create(self, principal: str) -> str:
        now = self._clock()
        for handle, (_, last) in list(self._handles.items()):
            if now - last > self.idle_timeout_s:
                del self._handles[handle]
        handle = new_handle()
        self._handles[handle] = (principal, now)
        return handle

    async def resolve(self, handle: str, principal: str) -> bool:
        entry = self._handles.get(handle)
        if entry is None:
            return False
        owner, last = entry
        now = self._clock()
        if now - last > self.idle_timeout_s:
            del self._handles[handle]
            return False
        if not hmac.compare_digest(owner.encode(), principal.encode()):
            return False
        self._handles[handle] = (owner, now)
        return True

    async def drop(self, handle: str) -> None:
        self._handles.pop(handle, None)


class RedisHandles:
    """Handles shared by every replica: ``<prefix>:handle:<handle> = principal`` with the idle timeout as TTL."""

    def __init__(self, store: Any, client: Any, idle_timeout_s: float, prefix: str = "mcp-pyodide") -> None:
        self._store = store  # a RedisLimitStore: its error handling names the store and fails closed
        self._client = client
        self._ttl_ms = max(1, round(idle_timeout_s * 1000))
        self._prefix = prefix

    def _key(self, handle: str) -> str:
        return f"{self._prefix}:handle:{handle}"

    async def create(self, principal: str) -> str:
        handle = new_handle()
        await self._store.run(lambda: self._client.set(self._key(handle), principal, px=self._ttl_ms, nx=True))
        return handle

    async def resolve(self, handle: str, principal: str) -> bool:
        if not handle.startswith("ps_") or len(handle) > 64:
            return False
        owner = await self._store.run(lambda: self._client.get(self._key(handle)))
        if owner is None or not hmac.compare_digest(str(owner).encode(), principal.encode()):
            return False
        await self._store.run(lambda: self._client.pexpire(self._key(handle), self._ttl_ms))
        return True

    async def drop(self, handle: str) -> None:
        await self._store.run(lambda: self._client.delete(self._key(handle)))
