"""Which sandbox serves a call: one for stdio, one per MCP session over HTTP."""

from __future__ import annotations

import asyncio
import logging
import time
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

    async def close(self) -> None:
        raise NotImplementedError


class SingleSandbox(SandboxProvider):
    """stdio: one client, one interpreter, booted while the handshake runs."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.config = sandbox.config

    def start(self) -> None:
        self.sandbox.runtime.start()

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
                entry.sandbox.runtime.start()
                self._entries[session_id] = entry
                log.info("session %s: new interpreter (%d running)", session_id, len(self._entries))
            entry.last_used = time.monotonic()
            return entry.sandbox

    async def _evict_one(self) -> None:
        idle = sorted(self._entries.items(), key=lambda item: item[1].last_used)
        session_id, entry = idle[0]
        if time.monotonic() - entry.last_used < 1.0:
            raise RuntimeUnavailable(
                f"all {self.max_sessions} interpreters are in use by other sessions; try again shortly "
                "(the server's --max-sessions sets the bound)"
            )
        log.info("session %s: interpreter ended to make room", session_id)
        del self._entries[session_id]
        await entry.sandbox.close()

    async def _reap_idle(self) -> None:
        while not self._closed:
            await asyncio.sleep(min(30.0, self.idle_timeout_s / 2))
            now = time.monotonic()
            async with self._lock:
                for session_id, entry in list(self._entries.items()):
                    if now - entry.last_used > self.idle_timeout_s:
                        log.info("session %s: interpreter ended after %.0f s idle", session_id, self.idle_timeout_s)
                        del self._entries[session_id]
                        await entry.sandbox.close()

    async def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        entries, self._entries = list(self._entries.values()), {}
        await asyncio.gather(*(entry.sandbox.close() for entry in entries), return_exceptions=True)
