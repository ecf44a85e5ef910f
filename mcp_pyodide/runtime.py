"""The runtime broker: owns the Node process, queues calls, and recovers from crashes.

One Node process hosts one Pyodide worker. Calls run one at a time in arrival
order; a call's timeout counts from when it starts. The Node side enforces the
timeout (interrupt, then replace the worker); this side keeps a second, looser
watchdog that kills the whole process if Node itself stops answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from . import netbroker
from ._connection import Connection, RemoteError
from ._isolation import Isolation, child_setup
from ._isolation import choose as choose_isolation
from ._node import NodeBinary, find_node
from ._paths import cache_root
from ._protocol import (
    PROTOCOL_VERSION,
    ErrorInfo,
    Event,
    ExecuteReply,
    ExecuteRequest,
    FetchRequest,
    GuestOptions,
    InitReply,
    InitRequest,
    Limits,
    LoadPackagesReply,
    LoadPackagesRequest,
    MountSpec,
    OutputBudget,
    ResetReply,
    ResetRequest,
    RestartingEvent,
    SnapshotEvent,
)
from ._runtime_files import PYODIDE_VERSION, RuntimeFiles, ensure_runtime, lock_digest
from ._transport import Transport
from .config import RuntimeConfig
from .errors import MCPPyodideError, RuntimeCrashed, RuntimeUnavailable, SetupError
from .mounts import GUEST_ROOT, OUTPUT_NAME
from .netbroker import NetworkDenied
from .packages.cache import default_cache_dir
from .result import Result

log = logging.getLogger("mcp_pyodide.runtime")
node_log = logging.getLogger("mcp_pyodide.node")

OutputListener = Callable[[str, str], None]
WATCHDOG_SLACK_S = 15.0
OUTPUT_GUEST_PATH = f"{GUEST_ROOT}/{OUTPUT_NAME}"


GUEST_MODULES = ("mcp_guest_executor", "mcp_guest_figures")


def _guest_modules() -> dict[str, str]:
    """The Python that runs inside the sandbox, read from real .py files in this package."""
    folder = resources.files("mcp_pyodide.guest")
    return {name: folder.joinpath(f"{name}.py").read_text(encoding="utf-8") for name in GUEST_MODULES}


class Runtime:
    """A long-lived sandbox: start it once, run code many times, close it at the end."""

    def __init__(self, config: RuntimeConfig | None = None) -> None:
        self.config = config or RuntimeConfig()
        self.node: NodeBinary | None = None
        self.files: RuntimeFiles | None = None
        self.info = InitReply()
        self._process: asyncio.subprocess.Process | None = None
        self._connection: Connection | None = None
        self._boot_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closing = False
        self._stderr_task: asyncio.Task[None] | None = None
        self._spawns = 0
        self._snapshot_file: Path | None = None
        self.isolation: Isolation | None = None
        self._worker_generation = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Begin booting in the background, so the MCP handshake and the boot overlap."""
        if self._boot_task is None:
            self._boot_task = asyncio.get_running_loop().create_task(self._boot())

    async def wait_ready(self) -> None:
        self.start()
        assert self._boot_task is not None
        await asyncio.shield(self._boot_task)

    def _child_setup(self) -> Callable[[], None] | None:
        if not sys.platform.startswith("linux"):
            return None
        assert self.node is not None and self.isolation is not None
        readable, writable = self.grants()
        return child_setup(self.isolation, self.node, readable, writable)

    async def _boot(self) -> None:
        started = time.perf_counter()
        if self.node is None:
            self.node = await asyncio.to_thread(find_node, self.config.node)
        if self.isolation is None:
            node = self.node
            self.isolation = await asyncio.to_thread(choose_isolation, node, self.config.isolation)
            log.info("isolation %s", self.isolation.describe())
        if self.files is None:
            node = self.node
            self.files = await asyncio.to_thread(ensure_runtime, node, cache_dir=self.config.runtime_cache_dir)
        await self._spawn()
        log.info(
            "runtime ready: Pyodide %s on Node %s in %.0f ms",
            self.info.pyodide_version,
            self.node.version_text,
            (time.perf_counter() - started) * 1000,
        )

    def package_cache_dir(self) -> Path:
        return self.config.package_cache_dir or default_cache_dir()

    def snapshot_path(self) -> Path:
        """A memory image of a freshly booted interpreter: restoring it is ~10x faster than booting.

        Written by this (trusted) side only; the Node process may read it, never write it.
        """
        assert self.node is not None and self.files is not None
        if self._snapshot_file is None:
            key = f"pyodide-{PYODIDE_VERSION}-{lock_digest(self.files.host_dir)}-node{self.node.major}"
            self._snapshot_file = cache_root() / "snapshots" / f"{key}.bin"
        return self._snapshot_file

    def mpl_config_dir(self) -> Path:
        """matplotlib's font cache, kept between runs so only the first figure ever pays for it."""
        return cache_root() / "matplotlib"

    def grants(self) -> tuple[list[Path], list[Path]]:
        """(readable, writable) host paths: every file grant is decided here and nowhere else."""
        assert self.files is not None
        readable = [
            *self.files.readable_paths(),
            self.package_cache_dir(),
            self.snapshot_path().parent,
            self.mpl_config_dir(),
        ]
        writable: list[Path] = []
        for mount in self.config.mounts:
            readable.append(mount.host_path)
            if not mount.read_only:
                writable.append(mount.host_path)
        if self.config.output_dir is not None:
            writable.append(self.config.output_dir)
        readable.extend(path for path in writable if path not in readable)
        return readable, writable

    def node_command(self) -> list[str]:
        """The exact command line, with the permission flags that fence Node in."""
        assert self.node is not None and self.files is not None
        readable, writable = self.grants()
        return [
            self.node.path,
            self.node.permission_flag,
            *(f"--allow-fs-read={path}" for path in readable),
            *(f"--allow-fs-write={path}" for path in writable),
            "--allow-worker",
            "--disallow-code-generation-from-strings",
            # Python lives in wasm memory; a small JS young generation saves 10-20 MiB per process.
            "--max-semi-space-size=1",
            "--no-warnings",
            str(self.files.host_script),
        ]

    async def _spawn(self) -> None:
        assert self.files is not None
        self.package_cache_dir().mkdir(parents=True, exist_ok=True)
        self.mpl_config_dir().mkdir(parents=True, exist_ok=True)
        snapshot_file = self.snapshot_path()
        snapshot_file.parent.mkdir(parents=True, exist_ok=True)
        snapshot = snapshot_file if self.config.use_snapshot and snapshot_file.exists() else None
        process = await asyncio.create_subprocess_exec(
            *self.node_command(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={},
            cwd=str(self.files.host_dir),
            start_new_session=True,
            preexec_fn=self._child_setup(),
            limit=2**20,
        )
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        self._process = process
        self._spawns += 1
        self._stderr_task = asyncio.get_running_loop().create_task(self._pump_stderr(process.stderr))
        connection = Connection(
            Transport(process.stdout, process.stdin),
            on_event=self._on_event,
            on_request=self._serve_request,
            limits=Limits(output=self.config.max_output_chars),
        )
        connection.start()
        self._connection = connection
        pyodide_dir = self.files.pyodide_dir
        request = InitRequest(
            protocol_version=PROTOCOL_VERSION,
            pyodide_dir=str(pyodide_dir) + os.sep,
            pyodide_module=(pyodide_dir / "pyodide.mjs").as_uri(),
            package_cache_dir=str(self.package_cache_dir()),
            guest_modules=_guest_modules(),
            guest_options=GuestOptions(output_dir=OUTPUT_GUEST_PATH if self.config.output_dir else None),
            mounts=self._mount_table(),
            mpl_config_dir=str(self.mpl_config_dir()),
            memory_limit_bytes=self.config.memory_limit_mb * 1024 * 1024,
            max_output_chars=self.config.max_output_chars,
            grace_ms=self.config.grace_ms,
            snapshot_path=str(snapshot_file) if self.config.use_snapshot else None,
            make_snapshot=self.config.use_snapshot and snapshot is None,
        )
        try:
            self.info = await connection.request(request)
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

    def _mount_table(self) -> list[MountSpec]:
        table = [MountSpec(m.guest_path, str(m.host_path), m.read_only) for m in self.config.mounts]
        if self.config.output_dir is not None:
            table.append(MountSpec(OUTPUT_GUEST_PATH, str(self.config.output_dir), False))
        return table

    async def _pump_stderr(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            node_log.info("%s", line.decode("utf-8", "replace").rstrip())

    def _on_event(self, event: Event) -> None:
        if isinstance(event, SnapshotEvent):
            self._save_snapshot(event.data)
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
        return await netbroker.fetch(policy, request.as_netbroker())

    def _save_snapshot(self, raw: bytes) -> None:
        target = self.snapshot_path()
        if target.exists():
            return
        try:
            partial = target.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(raw)
            os.replace(partial, target)
            log.info("saved a %.1f MiB memory snapshot for fast starts: %s", len(raw) / 2**20, target)
        except (OSError, ValueError) as exc:
            log.warning("could not save the memory snapshot: %s", exc)

    async def _kill_process(self) -> None:
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

        def collect(stream: str, text: str) -> None:
            text = budget.take(stream, text)
            if not text:
                return
            if stream == "stderr":
                result.stderr += text
            else:
                result.stdout += text
            if on_output is not None:
                on_output(stream, text)

        reply: ExecuteReply | None = None
        remote_message = ""
        async with self._lock:
            connection = await self._ensure_process()
            watchdog = timeout / 1000 + self.config.grace_ms / 1000 + WATCHDOG_SLACK_S
            started = time.perf_counter()
            try:
                reply = await asyncio.wait_for(
                    connection.request(ExecuteRequest(code=code, timeout_ms=timeout), on_output=collect),
                    watchdog,
                )
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
        if reply is not None:
            self._fill(result, reply, remote_message)
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

    async def load_packages(self, names: list[str], timeout_ms: int = 300_000) -> LoadPackagesReply:
        """Load lock-file packages whose files are already in the package cache."""
        async with self._lock:
            connection = await self._ensure_process()
            try:
                reply: LoadPackagesReply = await asyncio.wait_for(
                    connection.request(LoadPackagesRequest(names=names, timeout_ms=timeout_ms)),
                    timeout_ms / 1000 + WATCHDOG_SLACK_S,
                )
                return reply
            except (RuntimeCrashed, TimeoutError) as exc:
                await self._replace_process()
                raise RuntimeCrashed(f"the runtime died while loading packages ({exc}); state was reset") from exc

    @property
    def interpreter_id(self) -> tuple[int, int]:
        """Changes whenever the interpreter is replaced, so callers can forget what it had loaded."""
        return (self._spawns, self._worker_generation)

    async def reset(self) -> ResetReply:
        """Replace the interpreter with a fresh one; all globals are lost."""
        async with self._lock:
            connection = await self._ensure_process()
            try:
                info: ResetReply = await connection.request(ResetRequest())
                self._worker_generation = info.generation or self._worker_generation + 1
                return info
            except RuntimeCrashed:
                await self._replace_process()
                await self.wait_ready()
                return ResetReply(pyodide_version=self.info.pyodide_version, generation=self.info.generation)
