"""The runtime broker: owns the Node process, queues calls, and recovers from crashes.

One Node process hosts one Pyodide worker. Calls run one at a time in arrival
order; a call's timeout counts from when it starts. The Node side enforces the
timeout (interrupt, then replace the worker); this side keeps a second, looser
watchdog that kills the whole process if Node itself stops answering.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from . import netbroker
from ._connection import Connection, RemoteError
from ._isolation import Isolation, child_setup
from ._isolation import choose as choose_isolation
from ._node import NodeBinary, find_node
from ._paths import cache_root
from ._runtime_files import PYODIDE_VERSION, RuntimeFiles, ensure_runtime, lock_digest
from ._transport import Transport
from .config import RuntimeConfig
from .errors import MCPPyodideError, RuntimeCrashed, RuntimeUnavailable, SetupError
from .mounts import GUEST_ROOT, OUTPUT_NAME
from .netbroker import NetworkDenied
from .packages.cache import default_cache_dir

log = logging.getLogger("mcp_pyodide.runtime")
node_log = logging.getLogger("mcp_pyodide.node")

OutputListener = Callable[[str, str], None]
WATCHDOG_SLACK_S = 15.0
OUTPUT_GUEST_PATH = f"{GUEST_ROOT}/{OUTPUT_NAME}"


@dataclass
class ExecutionError:
    type: str
    message: str
    traceback: str


@dataclass
class ExecutionResult:
    """What one run produced, as a user would want to read it."""

    stdout: str = ""
    stderr: str = ""
    result: str | None = None
    error: ExecutionError | None = None
    timed_out: bool = False
    state_reset: bool = False
    duration_ms: float = 0.0
    stdout_cut_chars: int = 0
    stderr_cut_chars: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


GUEST_MODULES = ("mcp_guest_executor", "mcp_guest_figures")


def _guest_modules() -> dict[str, str]:
    """The Python that runs inside the sandbox, read from real .py files in this package."""
    folder = resources.files("mcp_pyodide.guest")
    return {name: folder.joinpath(f"{name}.py").read_text(encoding="utf-8") for name in GUEST_MODULES}


def _cut(text: str, limit: int) -> str:
    """Bound error text the way output is bounded: the head, then how much was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit:,} more characters cut]"


class Runtime:
    """A long-lived sandbox: start it once, run code many times, close it at the end."""

    def __init__(self, config: RuntimeConfig | None = None) -> None:
        self.config = config or RuntimeConfig()
        self.node: NodeBinary | None = None
        self.files: RuntimeFiles | None = None
        self.info: dict[str, Any] = {}
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
        self._network = netbroker.FetchBroker(self.config.network)

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
            self.info.get("pyodideVersion"),
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
            Transport(process.stdout, process.stdin), on_event=self._on_event, on_request=self._serve_request
        )
        connection.start()
        self._connection = connection
        pyodide_dir = self.files.pyodide_dir
        self.info = await connection.request(
            "init",
            {
                "pyodideDir": str(pyodide_dir) + os.sep,
                "pyodideModule": (pyodide_dir / "pyodide.mjs").as_uri(),
                "packageCacheDir": str(self.package_cache_dir()),
                "guestModules": _guest_modules(),
                "guestOptions": {"outputDir": OUTPUT_GUEST_PATH if self.config.output_dir else None},
                "mounts": self._mount_table(),
                "outputGuestPath": OUTPUT_GUEST_PATH if self.config.output_dir is not None else None,
                "mplConfigDir": str(self.mpl_config_dir()),
                "memoryLimitBytes": self.config.memory_limit_mb * 1024 * 1024,
                "maxOutputChars": self.config.max_output_chars,
                "graceMs": self.config.grace_ms,
                "snapshotPath": str(snapshot_file) if self.config.use_snapshot else None,
                "makeSnapshot": self.config.use_snapshot and snapshot is None,
            },
        )
        self._worker_generation = int(self.info.get("generation", 1))

    def _mount_table(self) -> list[dict[str, Any]]:
        table = [
            {"guestPath": m.guest_path, "hostPath": str(m.host_path), "readOnly": m.read_only}
            for m in self.config.mounts
        ]
        if self.config.output_dir is not None:
            table.append({"guestPath": OUTPUT_GUEST_PATH, "hostPath": str(self.config.output_dir), "readOnly": False})
        return table

    async def _pump_stderr(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            node_log.info("%s", line.decode("utf-8", "replace").rstrip())

    def _on_event(self, payload: dict[str, Any]) -> None:
        if payload.get("event") == "snapshot":
            self._save_snapshot(str(payload.get("data", "")))
        elif payload.get("event") == "restarting":
            self._worker_generation = int(payload.get("generation", self._worker_generation + 1))
            log.warning("the interpreter is restarting (%s)", payload.get("reason"))

    async def _serve_request(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Requests from the sandbox side; only `fetch`, and only to allowed hosts."""
        if kind != "fetch":
            raise LookupError(f"unknown request {kind!r}")
        policy = self.config.network
        if not policy.enabled:
            raise NetworkDenied(
                "network access is disabled in the sandbox (the server can allow hosts with --allow-network)"
            )
        return await self._network.fetch(payload)

    def _save_snapshot(self, data: str) -> None:
        target = self.snapshot_path()
        if target.exists():
            return
        try:
            raw = base64.b64decode(data, validate=True)
            partial = target.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(raw)
            os.replace(partial, target)
            log.info("saved a %.1f MiB memory snapshot for fast starts: %s", len(raw) / 2**20, target)
        except (OSError, ValueError) as exc:
            log.warning("could not save the memory snapshot: %s", exc)

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
    ) -> ExecutionResult:
        """Run one cell. Never raises for problems in the code itself: they are in the result."""
        timeout = timeout_ms or self.config.timeout_ms
        result = ExecutionResult()

        def collect(stream: str, text: str) -> None:
            if stream == "stderr":
                result.stderr += text
            else:
                result.stdout += text
            if on_output is not None:
                on_output(stream, text)

        async with self._lock, self._requests_end_with_the_call():
            connection = await self._ensure_process()
            watchdog = timeout / 1000 + self.config.grace_ms / 1000 + WATCHDOG_SLACK_S
            started = time.perf_counter()
            try:
                payload = await asyncio.wait_for(
                    connection.request("execute", {"code": code, "timeoutMs": timeout}, on_output=collect),
                    watchdog,
                )
            except RemoteError as exc:
                payload = exc.payload
                result.timed_out = exc.code == "timeout"
                result.state_reset = bool(payload.get("stateReset"))
                if exc.code in ("timeout", "crashed", "runtime") and not payload.get("error"):
                    result.error = ExecutionError(
                        type="TimeoutError" if result.timed_out else "RuntimeCrashed",
                        message=str(exc),
                        traceback="",
                    )
            except (RuntimeCrashed, TimeoutError) as exc:
                reason = str(exc) if isinstance(exc, RuntimeCrashed) else "the Node process stopped answering"
                await self._replace_process()
                result.state_reset = True
                result.error = ExecutionError(
                    type="RuntimeCrashed",
                    message=f"{reason}; a fresh runtime is starting and all state was reset.",
                    traceback="",
                )
                result.duration_ms = (time.perf_counter() - started) * 1000
                return result
        self._fill(result, payload)
        return result

    def _save_font_cache(self, text: str) -> None:
        """Keep matplotlib's font list so later interpreters skip building it (checked: it is data only)."""
        target = self.mpl_config_dir() / "fontlist.json"
        if target.exists() or len(text) > 2_000_000:
            return
        try:
            data = json.loads(text)
        except ValueError:
            return
        if not isinstance(data, dict) or "_version" not in data:
            return
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        try:
            partial.write_text(json.dumps(data), encoding="utf-8")
            os.replace(partial, target)
        except OSError as exc:
            log.warning("could not keep the matplotlib font cache: %s", exc)

    def _fill(self, result: ExecutionResult, payload: dict[str, Any]) -> None:
        result.duration_ms = float(payload.get("durationMs", 0.0))
        notice = payload.get("notice")
        if isinstance(notice, str) and notice:
            result.state_reset = True
            result.stderr = f"[mcp-pyodide] {notice}\n" + result.stderr
        result.stdout_cut_chars = int(payload.get("stdoutCut", 0))
        result.stderr_cut_chars = int(payload.get("stderrCut", 0))
        result.extra = dict(payload.get("extra") or {})
        font_cache = result.extra.pop("fontCache", None)
        if isinstance(font_cache, str):
            self._save_font_cache(font_cache)
        result.extra["written"] = [str(p) for p in payload.get("written") or [] if isinstance(p, str)]
        result.extra["removed"] = [str(p) for p in payload.get("removed") or [] if isinstance(p, str)]
        if payload.get("ok"):
            result.result = payload.get("result")
            return
        error = payload.get("error")
        if isinstance(error, dict):
            limit = self.config.max_output_chars
            result.error = ExecutionError(
                type=_cut(str(error.get("type", "Error")), 200),
                message=_cut(str(error.get("message", "")), limit),
                traceback=_cut(str(error.get("traceback", "")), limit),
            )
        if result.timed_out and result.error is not None:
            # Keep the user's traceback, but lead with what happened.
            result.error = ExecutionError(
                type="TimeoutError",
                message=str(payload.get("message", "timed out")),
                traceback=result.error.traceback,
            )

    async def load_packages(self, names: list[str], timeout_ms: int = 300_000) -> dict[str, Any]:
        """Load lock-file packages whose files are already in the package cache.

        Returns {"error": str | None, "logs": [...], "loaded": {name: source}, "generation": int}.
        """
        async with self._lock:
            connection = await self._ensure_process()
            try:
                return await asyncio.wait_for(
                    connection.request("load-packages", {"names": names, "timeoutMs": timeout_ms}),
                    timeout_ms / 1000 + WATCHDOG_SLACK_S,
                )
            except (RuntimeCrashed, TimeoutError) as exc:
                await self._replace_process()
                raise RuntimeCrashed(f"the runtime died while loading packages ({exc}); state was reset") from exc

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

    async def reset(self) -> dict[str, Any]:
        """Replace the interpreter with a fresh one; all globals are lost."""
        async with self._lock, self._requests_end_with_the_call():
            connection = await self._ensure_process()
            try:
                info = await connection.request("reset")
                self._worker_generation = int(info.get("generation", self._worker_generation + 1))
                return info
            except RuntimeCrashed:
                await self._replace_process()
                await self.wait_ready()
                return self.info
