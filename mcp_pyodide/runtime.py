"""The runtime broker: owns the Node process, queues calls, and recovers from crashes.

One Node process hosts one Pyodide worker. Calls run one at a time in arrival
order; a call's timeout counts from when it starts. The Node side enforces the
timeout (interrupt, then replace the worker); this side keeps a second, looser
watchdog that kills the whole process if Node itself stops answering. How the
process is started lives in `_launch`, the caches it shares in `_caches`.
Over 300 lines on purpose: every way a call can end (reply, error, crash, watchdog, death while
idle) is handled here, in one place, so they are read together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from . import _snapshot_maker, netbroker
from ._connection import Connection, RemoteError
from ._launch import Launch, prepare, pump_stderr
from ._protocol import (
    PROTOCOL_VERSION,
    ErrorInfo,
    Event,
    ExecuteReply,
    ExecuteRequest,
    FetchRequest,
    InitReply,
    Limits,
    LoadPackagesReply,
    LoadPackagesRequest,
    OutputBudget,
    PackageTreeSpec,
    ResetReply,
    ResetRequest,
    RestartingEvent,
    SnapshotEvent,
)
from ._transport import Transport
from .config import RuntimeConfig
from .errors import MCPPyodideError, RuntimeCrashed, RuntimeUnavailable, SetupError
from .netbroker import NetworkDenied
from .result import Result

log = logging.getLogger("mcp_pyodide.runtime")

OutputListener = Callable[[str, str], None]
WATCHDOG_SLACK_S = 15.0


class Runtime:
    """A long-lived sandbox: start it once, run code many times, close it at the end."""

    def __init__(self, config: RuntimeConfig | None = None, *, helper: bool = False) -> None:
        """`helper`: the bytecode builder, the only runtime that may write its staging folder in the cache."""
        self.config = config or RuntimeConfig()
        self.info = InitReply()
        self._launch: Launch | None = None
        self._helper = helper
        self._process: asyncio.subprocess.Process | None = None
        self._connection: Connection | None = None
        self._boot_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closing = False
        self._stderr_task: asyncio.Task[None] | None = None
        self._spawns = 0
        self._worker_generation = 0
        self._network = netbroker.FetchBroker(self.config.network)
        self._watch_task: asyncio.Task[None] | None = None
        # Why the next run starts on a fresh interpreter although it did not ask (the process died idle).
        self._reset_note: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Begin booting in the background, so the MCP handshake and the boot overlap."""
        if self._boot_task is None:
            self._boot_task = asyncio.get_running_loop().create_task(self._boot())

    async def wait_ready(self) -> None:
        self.start()
        assert self._boot_task is not None
        await asyncio.shield(self._boot_task)

    async def lock_file(self) -> Path:
        """Pyodide's package lock file (after the runtime files are installed)."""
        return (await self._prepared()).files.lock_file

    async def package_cache_dir(self) -> Path:
        return (await self._prepared()).package_cache_dir

    async def _prepared(self) -> Launch:
        if self._launch is None:
            self._launch = await prepare(self.config, helper=self._helper)
            log.info("isolation %s", self._launch.isolation.describe())
        return self._launch

    async def _boot(self) -> None:
        started = time.perf_counter()
        launch = await self._prepared()
        await self._spawn(launch)
        _snapshot_maker.make_soon(launch)  # first start on this machine: in a process of its own
        log.info(
            "runtime ready: Pyodide %s on Node %s in %.0f ms",
            self.info.pyodide_version,
            launch.node.version_text,
            (time.perf_counter() - started) * 1000,
        )

    async def _spawn(self, launch: Launch) -> None:
        process = await launch.spawn()
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        self._process = process
        self._spawns += 1
        loop = asyncio.get_running_loop()
        self._stderr_task = loop.create_task(pump_stderr(process.stderr))
        self._watch_task = loop.create_task(self._watch(process))
        connection = Connection(
            Transport(process.stdout, process.stdin),
            on_event=self._on_event,
            on_request=self._serve_request,
            limits=Limits(output=self.config.max_output_chars),
        )
        connection.start()
        self._connection = connection
        try:
            self.info = await connection.request(launch.init_request())
        except RemoteError as exc:
            if exc.code == "protocol":
                raise SetupError(str(exc)) from None
            raise
        if self.info.protocol_version != PROTOCOL_VERSION:
            raise SetupError(
                f"the Node runtime speaks protocol version {self.info.protocol_version}, this broker "
                f"version {PROTOCOL_VERSION}: the runtime files are from another mcp-pyodide release "
                "(delete the runtime cache folder, or reinstall)"
            )
        self._worker_generation = self.info.generation or 1

    def _on_event(self, event: Event) -> None:
        if isinstance(event, SnapshotEvent):
            # Only a process that never runs user code may make one (`_snapshot_maker`).
            log.warning("ignored a memory snapshot from the serving Node process, which was not asked for one")
        elif isinstance(event, RestartingEvent):
            self._worker_generation = event.generation or self._worker_generation + 1
            log.warning("the interpreter is restarting (%s)", event.reason)

    async def _serve_request(self, request: Any) -> dict[str, Any]:
        """Requests from the sandbox side; only `fetch`, and only to allowed hosts."""
        if not isinstance(request, FetchRequest):
            raise LookupError(f"unknown request {type(request).__name__}")
        policy = self.config.network
        if not policy.enabled:
            raise NetworkDenied(
                "network access is disabled in the sandbox (the server can allow hosts with --allow-network)"
            )
        return await self._network.fetch(request.as_netbroker())

    async def _kill_process(self) -> None:
        self._network.cancel_all()
        process, self._process = self._process, None
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(process.wait(), 5)
        if self._stderr_task is not None:
            self._stderr_task.cancel()

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        """Notice the Node process ending between calls, and start its replacement at once."""
        code = await process.wait()
        boot = self._boot_task
        booted = boot is not None and boot.done() and not boot.cancelled() and boot.exception() is None
        if self._closing or self._process is not process or self._lock.locked() or not booted:
            return  # we ended it, or a call or a boot in progress deals with it
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        log.warning("the Node process %s while idle; starting a fresh one now", how)
        self._reset_note = (
            f"The Node process {how} between calls (perhaps the out-of-memory killer); "
            "this call ran on a fresh runtime, so all state was reset."
        )
        await self._replace_process()

    async def _replace_process(self) -> None:
        """End the current Node process (if any) and start booting a fresh one in the background."""
        await self._kill_process()
        self._boot_task = asyncio.get_running_loop().create_task(self._boot())

    async def _ensure_process(self) -> Connection:
        """The live connection, restarting the Node process first if it died."""
        if self._closing:
            raise RuntimeUnavailable("the server is shutting down")
        try:
            await self.wait_ready()
        except SetupError:
            self._boot_task = None  # the user may fix the machine; look again next call
            raise
        except (MCPPyodideError, RemoteError, OSError) as exc:
            # A failed boot: try once more from scratch on this call.
            log.warning("runtime boot failed (%s); starting again", exc)
            self._boot_task = None
            await self._kill_process()
            try:
                await self.wait_ready()
            except BaseException:
                self._boot_task = None
                raise
        if self._connection is None or self._connection.closed or self._process is None:
            log.warning("the Node process is gone; starting a fresh one")
            self._reset_note = self._reset_note or (
                "The Node process had ended between calls; this call ran on a fresh runtime, so all state was reset."
            )
            await self._replace_process()
            await self.wait_ready()
        assert self._connection is not None
        return self._connection

    async def close(self) -> None:
        """End the Node process; safe to call more than once."""
        self._closing = True
        if self._boot_task is not None and not self._boot_task.done():
            self._boot_task.cancel()
            with contextlib.suppress(BaseException):
                await self._boot_task
        await self._kill_process()

    # -- calls -----------------------------------------------------------------------------

    async def execute(
        self, code: str, *, timeout_ms: int | None = None, on_output: OutputListener | None = None
    ) -> tuple[Result, ExecuteReply | None]:
        """Run one cell: the result, and the run's decoded reply (None if the runtime died).

        Never raises for problems in the code itself: they are in the result.
        """
        timeout = timeout_ms or self.config.timeout_ms
        result = Result()
        budget = OutputBudget(self.config.max_output_chars)
        chunks: dict[str, list[str]] = {"stdout": [], "stderr": []}

        def collect(stream: str, text: str) -> None:
            text = budget.take(stream, text)
            if not text:
                return
            chunks["stderr" if stream == "stderr" else "stdout"].append(text)  # joined once, not += per chunk
            if on_output is not None:
                on_output(stream, text)

        reply: ExecuteReply | None = None
        remote_message = ""
        async with self._lock, self._requests_end_with_the_call():
            connection = await self._ensure_process()
            note, self._reset_note = self._reset_note, None
            watchdog = timeout / 1000 + self.config.grace_ms / 1000 + WATCHDOG_SLACK_S
            started = time.perf_counter()
            try:
                # asyncio.timeout, not wait_for: no task of its own, so the reply wakes this call directly.
                async with asyncio.timeout(watchdog):
                    reply = await connection.request(ExecuteRequest(code=code, timeout_ms=timeout), on_output=collect)
            except RemoteError as exc:
                reply, remote_message = exc.outcome, str(exc)
                result.timed_out = exc.code == "timeout"
                result.state_reset = exc.reply.state_reset
                result.duration_ms = exc.reply.duration_ms
                if reply is None or reply.error is None:
                    result.error = ErrorInfo(
                        type="TimeoutError" if result.timed_out else "RuntimeCrashed",
                        message=str(exc),
                        traceback="",
                    )
            except (RuntimeCrashed, TimeoutError) as exc:
                reason = str(exc) if isinstance(exc, RuntimeCrashed) else "the Node process stopped answering"
                await self._replace_process()
                result.state_reset = True
                result.error = ErrorInfo(
                    type="RuntimeCrashed",
                    message=f"{reason}; a fresh runtime is starting and all state was reset.",
                    traceback="",
                )
                result.duration_ms = (time.perf_counter() - started) * 1000
        result.stdout, result.stderr = "".join(chunks["stdout"]), "".join(chunks["stderr"])
        if reply is not None:
            self._fill(result, reply, remote_message)
        if note:
            result.state_reset = True
            result.stderr = f"[mcp-pyodide] {note}\n" + result.stderr
        result.stdout_truncated_chars += budget.dropped["stdout"]
        result.stderr_truncated_chars += budget.dropped["stderr"]
        return result, reply

    def _fill(self, result: Result, reply: ExecuteReply, remote_message: str) -> None:
        result.duration_ms = reply.duration_ms or result.duration_ms
        result.state_reset = result.state_reset or reply.state_reset
        if reply.notice:
            result.state_reset = True
            result.stderr = f"[mcp-pyodide] {reply.notice}\n" + result.stderr
        result.stdout_truncated_chars = reply.stdout_truncated_chars
        result.stderr_truncated_chars = reply.stderr_truncated_chars
        if reply.ok:
            result.result = reply.result
            return
        if reply.error is not None:
            result.error = reply.error
        if result.timed_out and result.error is not None:
            # Keep the user's traceback, but lead with what happened.
            message = remote_message or "timed out"
            result.error = ErrorInfo(type="TimeoutError", message=message, traceback=result.error.traceback)

    async def load_packages(
        self, names: list[str], timeout_ms: int = 300_000, trees: list[PackageTreeSpec] | None = None
    ) -> LoadPackagesReply:
        """Load lock-file packages whose files are already in the package cache (`trees`: those unpacked)."""
        async with self._lock:
            connection = await self._ensure_process()
            try:
                reply: LoadPackagesReply = await asyncio.wait_for(
                    connection.request(LoadPackagesRequest(names=names, timeout_ms=timeout_ms, trees=trees or [])),
                    timeout_ms / 1000 + WATCHDOG_SLACK_S,
                )
            except (RuntimeCrashed, TimeoutError) as exc:
                await self._replace_process()
                raise RuntimeCrashed(f"the runtime died while loading packages ({exc}); state was reset") from exc
        return reply

    @property
    def interpreter_id(self) -> tuple[int, int]:
        """Changes whenever the interpreter is replaced, so callers can forget what it had loaded."""
        return (self._spawns, self._worker_generation)

    @contextlib.asynccontextmanager
    async def _requests_end_with_the_call(self) -> AsyncIterator[None]:
        """Network requests a call started end with it (returned, timed out, crashed or reset)."""
        try:
            yield
        finally:
            self._network.cancel_all()

    async def reset(self) -> ResetReply:
        """Replace the interpreter with a fresh one; all globals are lost."""
        async with self._lock, self._requests_end_with_the_call():
            connection = await self._ensure_process()
            self._reset_note = None  # a reset was asked for: nothing to explain
            try:
                info: ResetReply = await connection.request(ResetRequest())
                self._worker_generation = info.generation or self._worker_generation + 1
                return info
            except RuntimeCrashed:
                await self._replace_process()
                await self.wait_ready()
                return ResetReply(pyodide_version=self.info.pyodide_version, generation=self.info.generation)
