"""Which interpreter serves a call: sessions named by handles, interpreters bounded and reclaimed.

A session is a handle (see `handles.py`); it costs nothing until it runs code.
Interpreters are the scarce thing: at most `max_sessions` run at once (the
stdio default interpreter is not counted). When one more is needed, the least
recently used idle one is ended, and the next call of the session it belonged
to starts on a fresh interpreter and is told so (`state_reset` and why). An
interpreter in the middle of a call is never taken. Each handle's interpreter
writes to its own output sub-folder, `<output>/.session-<secret>` (hidden, so
resources/list and other sessions do not list it; its files are reached through
the resource links its results carry); the file tools of that session see it as
the `output` mount. The other mounts are shared as configured.

stdio keeps one default interpreter (`DEFAULT_SESSION`) exactly as before,
writing to the output folder itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..config import RuntimeConfig
from ..errors import RuntimeUnavailable
from ..mounts import Mount, with_output
from ..sandbox import Sandbox
from .handles import Handle, HandleRegistry, InMemoryHandles

log = logging.getLogger("mcp_pyodide.server")

DEFAULT_SESSION = "stdio"
"""Session id of the stdio default interpreter (policy counters and the audit log use it)."""
EVICT_AFTER_IDLE_S = 1.0
"""An interpreter idle for less than this is not taken for another session."""


@dataclass
class _Entry:
    sandbox: Sandbox
    label: str
    last_used: float = field(default_factory=time.monotonic)


class SandboxProvider:
    """Hands out sandboxes by session id and owns their lifetimes."""

    config: RuntimeConfig
    handles: HandleRegistry

    def has_default(self) -> bool:
        """True when a call without a handle has an interpreter of its own to go to (stdio)."""
        return False

    def start(self) -> None:
        """Begin booting whatever can be booted ahead of the first call."""

    async def get(self, session_id: str) -> Sandbox:
        raise NotImplementedError

    def mounts_for(self, session_id: str) -> tuple[Mount, ...] | None:
        """The mounts as this session sees them (its own output folder); None: the server's."""
        return None

    def take_reset_note(self, session_id: str) -> str | None:
        """Why this session's state was lost since its last call, once; None when it was not."""
        return None

    async def release(self, session_id: str) -> None:
        """The session ended: its interpreter, if it has one of its own, can go."""

    @contextlib.contextmanager
    def in_use(self, session_id: str) -> Iterator[None]:
        """Mark a tool call in flight for this session, so its interpreter is not ended under it."""
        yield

    async def close(self) -> None:
        raise NotImplementedError


class SessionSandboxes(SandboxProvider):
    """Interpreters by session: the optional stdio default plus one per handle, bounded in number."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        max_sessions: int = 4,
        idle_timeout_s: float = 900.0,
        default: Sandbox | None = None,
        handles: HandleRegistry | None = None,
    ) -> None:
        self.config = config
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self.default = default
        self.handles = handles if handles is not None else InMemoryHandles(idle_timeout_s)
        self._entries: dict[str, _Entry] = {}  # handle id -> its interpreter
        self._lost: dict[str, str] = {}  # handle id -> why its interpreter was taken away
        self._notes: dict[str, str] = {}  # handle id -> that reason, once a fresh interpreter replaced it
        self._lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self._busy: dict[str, int] = {}  # session id -> tool calls in flight

    def has_default(self) -> bool:
        return self.default is not None

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
                self.handles.lookup(session_id)

    def start(self) -> None:
        if self.default is not None:
            self.default.start_soon()
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    def output_dir_for(self, handle: Handle) -> Path | None:
        if self.config.output_dir is None:
            return None
        return self.config.output_dir / f".session-{handle.folder}"

    def mounts_for(self, session_id: str) -> tuple[Mount, ...] | None:
        if session_id == DEFAULT_SESSION and self.default is not None:
            return None
        handle = self.handles.lookup(session_id)
        if handle is None:
            return None
        output_dir = self.output_dir_for(handle)
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            output_dir = output_dir.resolve()
        return with_output(self.config.mounts, output_dir)

    async def get(self, session_id: str) -> Sandbox:
        if session_id == DEFAULT_SESSION and self.default is not None:
            return self.default
        async with self._lock:
            if self._closed:
                raise RuntimeUnavailable("the server is shutting down")
            entry = self._entries.get(session_id)
            if entry is None:
                handle = self.handles.lookup(session_id)
                if handle is None:
                    raise RuntimeUnavailable("this session handle is unknown or has expired")
                running = len(self._entries)
                if running >= self.max_sessions:
                    await self._evict_one()
                sandbox = Sandbox(config=self.config, output_dir=self.output_dir_for(handle))
                sandbox.start_soon()
                entry = _Entry(sandbox, handle.label)
                if session_id in self._lost:
                    self._notes[session_id] = self._lost.pop(session_id)
                self._entries[session_id] = entry
                log.info("session %s: new interpreter (%d running)", handle.label, len(self._entries))
            entry.last_used = time.monotonic()
            return entry.sandbox

    def take_reset_note(self, session_id: str) -> str | None:
        return self._notes.pop(session_id, None)

    async def release(self, session_id: str) -> None:
        self.handles.end(session_id)
        self._lost.pop(session_id, None)
        self._notes.pop(session_id, None)
        async with self._lock:
            entry = self._entries.pop(session_id, None)
        if entry is not None:
            log.info("session %s: ended; interpreter closed (%d running)", entry.label, len(self._entries))
            await entry.sandbox.close()

    def running(self) -> int:
        """How many per-session interpreters are up (for tests and the log)."""
        return len(self._entries)

    async def _evict_one(self) -> None:
        free = [(sid, e) for sid, e in self._entries.items() if not self._busy.get(sid)]
        idle = sorted(free, key=lambda item: item[1].last_used)
        if not idle or time.monotonic() - idle[0][1].last_used < EVICT_AFTER_IDLE_S:
            raise RuntimeUnavailable(
                f"all {self.max_sessions} interpreters are in use by other sessions; try again shortly "
                "(the server's --max-sessions sets the bound)"
            )
        session_id, entry = idle[0]
        log.info("session %s: interpreter ended to make room", entry.label)
        del self._entries[session_id]
        self._lost[session_id] = (
            f"this session's interpreter was ended to make room for another session (at most {self.max_sessions} "
            "run at once, --max-sessions); variables and imports are gone, files written so far are kept"
        )
        await entry.sandbox.close()

    async def _reap_idle(self) -> None:
        while not self._closed:
            await asyncio.sleep(min(30.0, self.idle_timeout_s / 2))
            await self.reap_idle_now()

    async def reap_idle_now(self) -> None:
        """End interpreters and handles idle for longer than the timeout (the reaper calls this)."""
        now = time.monotonic()
        for session_id in [sid for sid, n in self._busy.items() if n]:
            self.handles.lookup(session_id)  # a call in flight keeps its handle alive
        for handle in self.handles.sweep():
            self._lost.pop(handle.id, None)
            self._notes.pop(handle.id, None)
        async with self._lock:
            for session_id, entry in list(self._entries.items()):
                if now - entry.last_used > self.idle_timeout_s and not self._busy.get(session_id):
                    log.info("session %s: interpreter ended after %.0f s idle", entry.label, self.idle_timeout_s)
                    del self._entries[session_id]
                    self.handles.end(session_id)
                    await entry.sandbox.close()

    async def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        entries, self._entries = list(self._entries.values()), {}
        sandboxes = [entry.sandbox for entry in entries] + ([self.default] if self.default is not None else [])
        await asyncio.gather(*(sandbox.close() for sandbox in sandboxes), return_exceptions=True)


PerSessionSandboxes = SessionSandboxes
"""The name `mcp_pyodide.cli` builds the HTTP provider by (the server of old had a class by that name)."""
