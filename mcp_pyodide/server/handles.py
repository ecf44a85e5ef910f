"""Interpreter-session handles: the secret a client passes back (`session` argument) to reach its interpreter.

A handle has three names: `id`, the unguessable secret the client holds
(`secrets.token_urlsafe`); `label`, a public name for logs, the audit log and
policy `"scope": "session"` counters, so the secret is never written anywhere;
and `folder`, naming the session's output sub-folder, a one-way digest of the
id (so a shared registry need not store it), so a session's files can be read
(by the resource links its results carry) but not found by anyone else.

A handle is bound to the principal that minted it (the authenticated caller;
`ANONYMOUS` without authentication): `lookup` answers only that principal, so
another principal's handle, a guessed one and an expired one are
indistinguishable. Handles end after `idle_timeout_s` without a call.

`HandleRegistry` is the one interface; `InMemoryHandles` serves one process,
`mcp_pyodide.state.redis_handles.RedisHandles` shares the records between
replicas (`--state redis://`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

MAX_HANDLES = 10_000
"""Handles remembered at once in memory; past this the least recently used one is forgotten."""
NEW_SESSION = "new"
"""The `session` value that asks for a fresh interpreter and a new handle."""
ANONYMOUS = ""
"""The principal of every request when authentication is off (stdio, loopback HTTP without auth)."""


@dataclass
class Handle:
    id: str
    label: str
    principal: str
    created: float  # wall-clock seconds
    last_used: float  # the registry's clock
    folder: str = ""
    here: bool = True  # minted by this process (False: another replica made it; its interpreter is there)


def folder_of(handle_id: str) -> str:
    """The output sub-folder's secret name: derived from the handle, and revealing nothing about it."""
    return hashlib.sha256(b"mcp-pyodide output folder:" + handle_id.encode()).hexdigest()[:32]


def new_handle(principal: str, now: float) -> Handle:
    handle_id = secrets.token_urlsafe(24)
    return Handle(
        id=handle_id,
        label=secrets.token_hex(6),
        principal=principal,
        created=time.time(),
        last_used=now,
        folder=folder_of(handle_id),
    )


def same_principal(owner: str, principal: str) -> bool:
    return hmac.compare_digest(owner.encode(), principal.encode())


class HandleRegistry(Protocol):
    """Where handles live; a shared implementation lets several servers honour one handle."""

    idle_timeout_s: float

    async def mint(self, principal: str) -> Handle:
        """A new handle bound to ``principal``, remembered from now on."""
        ...

    async def lookup(self, handle_id: str, principal: str) -> Handle | None:
        """The live handle with this id if ``principal`` made it, marked as used now; else None."""
        ...

    async def touch(self, handle_id: str) -> None:
        """Restart the idle time of a handle this call already looked up (a call just ended or is running)."""
        ...

    async def end(self, handle_id: str) -> None:
        """Forget a handle (its session ended)."""
        ...

    async def sweep(self) -> list[str]:
        """Forget and return the ids of handles this process knew that are no longer alive."""
        ...


class InMemoryHandles:
    """Handles in a dict, for one server process; thread-safe, bounded, timed by an injected clock."""

    def __init__(
        self, idle_timeout_s: float, *, clock: Callable[[], float] = time.monotonic, max_handles: int = MAX_HANDLES
    ) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.max_handles = max_handles
        self._clock = clock
        self._lock = threading.Lock()
        self._handles: OrderedDict[str, Handle] = OrderedDict()  # least recently used first

    async def mint(self, principal: str) -> Handle:
        handle = new_handle(principal, self._clock())
        with self._lock:
            self._handles[handle.id] = handle
            while len(self._handles) > self.max_handles:
                self._handles.popitem(last=False)
        return handle

    async def lookup(self, handle_id: str, principal: str) -> Handle | None:
        now = self._clock()
        with self._lock:
            handle = self._handles.get(handle_id)
            if handle is None:
                return None
            if now - handle.last_used > self.idle_timeout_s:
                del self._handles[handle_id]
                return None
            if not same_principal(handle.principal, principal):
                return None
            handle.last_used = now
            self._handles.move_to_end(handle_id)
            return handle

    async def touch(self, handle_id: str) -> None:
        with self._lock:
            handle = self._handles.get(handle_id)
            if handle is not None:
                handle.last_used = self._clock()
                self._handles.move_to_end(handle_id)

    async def end(self, handle_id: str) -> None:
        with self._lock:
            self._handles.pop(handle_id, None)

    async def sweep(self) -> list[str]:
        now = self._clock()
        with self._lock:
            gone = [h.id for h in self._handles.values() if now - h.last_used > self.idle_timeout_s]
            for handle_id in gone:
                del self._handles[handle_id]
        return gone

    def __len__(self) -> int:
        return len(self._handles)
