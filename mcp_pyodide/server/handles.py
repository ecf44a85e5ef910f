"""Interpreter-session handles: the secret a client passes back (`session` argument) to reach its interpreter.

A handle has three names: `id`, the unguessable secret the client holds
(`secrets.token_urlsafe`); `label`, a public name for logs, the audit log and
policy `"scope": "session"` counters, so the secret is never written anywhere;
and `folder`, another secret naming the session's output sub-folder, so a
session's files can be read (by the resource links its results carry) but not
found by anyone else. Handles end after `idle_timeout_s`
without a call; the registry is bounded (the least recently used handle goes
first). `HandleRegistry` is the interface; `InMemoryHandles` serves one process.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

MAX_HANDLES = 10_000
"""Handles remembered at once; past this the least recently used one is forgotten."""
NEW_SESSION = "new"
"""The `session` value that asks for a fresh interpreter and a new handle."""


@dataclass
class Handle:
    id: str
    label: str
    last_used: float
    folder: str = ""


class HandleRegistry(Protocol):
    """Where handles live; a shared implementation (e.g. Redis) lets several servers honour one handle."""

    def mint(self) -> Handle:
        """A new handle, remembered from now on."""
        ...

    def lookup(self, handle_id: str) -> Handle | None:
        """The live handle with this id, marked as used now; None when unknown or expired."""
        ...

    def end(self, handle_id: str) -> None:
        """Forget a handle (its session ended)."""
        ...

    def sweep(self) -> list[Handle]:
        """Forget and return every handle idle for longer than the timeout."""
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

    def mint(self) -> Handle:
        handle = Handle(
            id=secrets.token_urlsafe(24),
            label=secrets.token_hex(6),
            last_used=self._clock(),
            folder=secrets.token_hex(16),
        )
        with self._lock:
            self._handles[handle.id] = handle
            while len(self._handles) > self.max_handles:
                self._handles.popitem(last=False)
        return handle

    def lookup(self, handle_id: str) -> Handle | None:
        now = self._clock()
        with self._lock:
            handle = self._handles.get(handle_id)
            if handle is None:
                return None
            if now - handle.last_used > self.idle_timeout_s:
                del self._handles[handle_id]
                return None
            handle.last_used = now
            self._handles.move_to_end(handle_id)
            return handle

    def end(self, handle_id: str) -> None:
        with self._lock:
            self._handles.pop(handle_id, None)

    def sweep(self) -> list[Handle]:
        now = self._clock()
        with self._lock:
            gone = [h for h in self._handles.values() if now - h.last_used > self.idle_timeout_s]
            for handle in gone:
                del self._handles[handle.id]
        return gone

    def __len__(self) -> int:
        return len(self._handles)
