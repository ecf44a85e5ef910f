"""Which sandbox serves a call: one for stdio, one per MCP session over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..config import RuntimeConfig
from ..errors import RuntimeUnavailable
from ..sandbox import Sandbox

log = logging.getLogger("mcp_pyodide.server")


class SandboxProvider:
    """Hands out sandboxes by session id and owns their lifetimes."""

    config: RuntimeConfig

    def start(self) -> None:
        """Begin booting whatever can be booted ahead of the first call."""

    async def get(self, session_id: str) -> Sandbox:
        raise NotImplementedError

    async def release(self, session_id: str) -> None:
        """The MCP session ended: its interpreter, if it has one of its own, can go."""

    @contextlib.contextmanager
    def in_use(self, session_id: str) -> Iterator[None]:
        """Mark a tool call in flight for this session, so its interpreter is not ended under it."""
        yield

    async def close(self) -> None:
        raise NotImplementedError


class SingleSandbox(SandboxProvider):
    """stdio: one client, one interpreter, booted while the handshake runs."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.config = sandbox.config

    def start(self) -> None:
        self.sandbox.start_soon()

    async def get(self, session_id: str) -> Sandbox:
        return self.sandbox

    async def close(self) -> None:
        await self.sandbox.close()


@dataclass
class _Entry:
    sandbox: Sandbox
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0


class PerSessionSandboxes(SandboxProvider):
    """HTTP: each MCP session gets its own interpreter; bounded in number, ended when idle."""

    def __init__(self, config: RuntimeConfig, *, max_sessions: int = 4, idle_timeout_s: float = 900.0) -> None:
        self.config = config
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self._entries: dict[str, _Entry] = {}
        self._lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self._busy: dict[str, int] = {}  # session id -> tool calls in flight

    @contextlib.contextmanager
    def in_use(self, session_id: str) -> Iterator[None]:
        self._busy[session_id] = self._busy.get(session_id, 0) + 1
        try:
            yield
        finally:
            left = self._busy.pop(session_id) - 1
            if left:
                self._busy[session_id] = left
            entry = self._entries.get(session_id)
            if entry is not None:
                entry.last_used = time.monotonic()  # idle time counts from the end of the last call

    def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    async def get(self, session_id: str) -> Sandbox:
        async with self._lock:
            if self._closed:
                raise RuntimeUnavailable("the server is shutting down")
            entry = self._entries.get(session_id)
            if entry is None:
                if len(self._entries) >= self.max_sessions:
                    await self._evict_one()
                entry = _Entry(Sandbox(config=self.config))
                entry.sandbox.start_soon()
                self._entries[session_id] = entry
                log.info("session %s: new interpreter (%d running)", session_id, len(self._entries))
            entry.last_used = time.monotonic()
            return entry.sandbox

    async def release(self, session_id: str) -> None:
        async with self._lock:
            entry = self._entries.pop(session_id, None)
        if entry is not None:
            log.info("session %s: ended; interpreter closed (%d running)", session_id, len(self._entries))
            await entry.sandbox.close()

    def running(self) -> int:
        """How many interpreters are up (for tests and the log)."""
        return len(self._entries)

    async def _evict_one(self) -> None:
        free = [(sid, e) for sid, e in self._entries.items() if not self._busy.get(sid)]
        idle = sorted(free, key=lambda item: item[1].last_used)
        if not idle or time.monotonic() - idle[0][1].last_used < 1.0:
            raise RuntimeUnavailable(
                f"all {self.max_sessions} interpreters are in use by other sessions; try again shortly "
                "(the server's --max-sessions sets the bound)"
            )
        session_id, entry = idle[0]
        log.info("session %s: interpreter ended to make room", session_id)
        del self._entries[session_id]
        await entry.sandbox.close()

    async def _reap_idle(self) -> None:
        while not self._closed:
            await asyncio.sleep(min(30.0, self.idle_timeout_s / 2))
            now = time.monotonic()
            async with self._lock:
                for session_id, entry in list(self._entries.items()):
                    if now - entry.last_used > self.idle_timeout_s and not self._busy.get(session_id):
                        log.info("session %s: interpreter ended after %.0f s idle", session_id, self.idle_timeout_s)
                        del self._entries[session_id]
                        await entry.sandbox.close()

    async def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        entries, self._entries = list(self._entries.values()), {}
        await asyncio.gather(*(entry.sandbox.close() for entry in entries), return_exceptions=True)
