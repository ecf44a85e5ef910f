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

With a shared registry (`--state redis://`) a handle minted by another replica
is recognised here, but its interpreter is a Node process of that replica: a
call reaching this one starts a fresh interpreter and says so (`state_reset`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from ..config import RuntimeConfig
from ..errors import MCPPyodideError, RuntimeUnavailable
from ..mounts import Mount, with_output
from ..sandbox import Sandbox
from .handles import ANONYMOUS, Handle, HandleRegistry, InMemoryHandles

log = logging.getLogger("mcp_pyodide.server")

DEFAULT_SESSION = "stdio"
"""Session id of the stdio default interpreter (policy counters and the audit log use it)."""
DEFAULT_HANDLE = Handle(id=DEFAULT_SESSION, label=DEFAULT_SESSION, principal=ANONYMOUS, created=0.0, last_used=0.0)
"""What a stdio call without a handle resolves to: the default interpreter, not in any registry."""
EVICT_AFTER_IDLE_S = 1.0
"""An interpreter idle for less than this is not taken for another session."""
ELSEWHERE = (
    "this session's interpreter runs in another server replica (interpreters stay in the replica that made them): "
    "this call started a fresh one here; variables and imports are gone. Route each session to one replica."
)


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

    async def get(self, handle: Handle) -> Sandbox:
        raise NotImplementedError

    def mounts_for(self, handle: Handle) -> tuple[Mount, ...] | None:
        """The mounts as this session sees them (its own output folder); None: the server's."""
        return None

    def take_reset_note(self, session_id: str) -> str | None:
        """Why this session's state was lost since its last call, once; None when it was not."""
        return None

    async def release(self, session_id: str) -> None:
        """The session ended: its interpreter, if it has one of its own, can go."""

    @contextlib.asynccontextmanager
    async def in_use(self, session_id: str) -> AsyncIterator[None]:
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
        self._seen: set[str] = set()  # handles that have had an interpreter here

    def has_default(self) -> bool:
        return self.default is not None

    @contextlib.asynccontextmanager
    async def in_use(self, session_id: str) -> AsyncIterator[None]:
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
                await self._touch(session_id)

    async def _touch(self, session_id: str) -> None:
        try:
            await self.handles.touch(session_id)
        except MCPPyodideError as exc:  # a shared registry that is down: the next lookup reports it
            log.warning("could not refresh a session handle: %s", exc)

    def start(self) -> None:
        if self.default is not None:
            self.default.start_soon()
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    def output_dir_for(self, handle: Handle) -> Path | None:
        if self.config.output_dir is None:
            return None
        return self.config.output_dir / f".session-{handle.folder}"

    def mounts_for(self, handle: Handle) -> tuple[Mount, ...] | None:
        if handle.id == DEFAULT_SESSION and self.default is not None:
            return None
        output_dir = self.output_dir_for(handle)
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            output_dir = output_dir.resolve()
        return with_output(self.config.mounts, output_dir)

    async def get(self, handle: Handle) -> Sandbox:
        """The interpreter of a handle the caller has looked up (so it is alive and the caller's)."""
        session_id = handle.id
        if session_id == DEFAULT_SESSION and self.default is not None:
            return self.default
        async with self._lock:
            if self._closed:
                raise RuntimeUnavailable("the server is shutting down")
            entry = self._entries.get(session_id)
            if entry is None:
                if not handle.here and session_id not in self._lost and session_id not in self._seen:
                    self._lost[session_id] = ELSEWHERE
                self._seen.add(session_id)
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
        with contextlib.suppress(MCPPyodideError):  # a shared registry that is down lets the TTL end it
            await self.handles.end(session_id)
        self._seen.discard(session_id)
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
            await self._touch(session_id)  # a call in flight keeps its handle alive
        try:
            gone = await self.handles.sweep()
        except MCPPyodideError as exc:
            log.warning("could not sweep session handles: %s", exc)
            gone = []
        for handle_id in gone:
            self._lost.pop(handle_id, None)
            self._notes.pop(handle_id, None)
            self._seen.discard(handle_id)
        async with self._lock:
            for session_id, entry in list(self._entries.items()):
                expired = session_id in gone or now - entry.last_used > self.idle_timeout_s
                if expired and not self._busy.get(session_id):
                    log.info("session %s: interpreter ended after %.0f s idle", entry.label, self.idle_timeout_s)
                    del self._entries[session_id]
                    self._seen.discard(session_id)
                    with contextlib.suppress(MCPPyodideError):
                        await self.handles.end(session_id)
                    await entry.sandbox.close()

    async def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        entries, self._entries = list(self._entries.values()), {}
        sandboxes = [entry.sandbox for entry in entries] + ([self.default] if self.default is not None else [])
        await asyncio.gather(*(sandbox.close() for sandbox in sandboxes), return_exceptions=True)
