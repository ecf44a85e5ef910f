"""Drive a real `mcp-pyodide` server over stdio with the real MCP client, from synchronous tests.

The client runs on its own event loop in a background thread, so one server
can serve a whole test module and tests stay plain functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import mcp_types as types
import psutil
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from mcp_pyodide._paths import cache_root

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
POLICIES = Path(__file__).resolve().parent / "policies"
ALLOW_ALL = str(POLICIES / "allow-all.json")
CALL_TIMEOUT_S = 180.0


class ServerHandle:
    """A running server process plus a connected ClientSession."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, client_kwargs: dict[str, Any] | None = None):
        self.instance = uuid.uuid4().hex
        self.args = list(args)
        if "--output-dir" not in self.args:
            # Never write into the user's real output folder from a test.
            self.output_dir = Path(tempfile.mkdtemp(prefix="mcp-pyodide-test-out-"))
            self.args += ["--output-dir", str(self.output_dir)]
        else:
            self.output_dir = Path(self.args[self.args.index("--output-dir") + 1])
        self.env = {**os.environ, **(env or {}), "MCP_PYODIDE_TEST_INSTANCE": self.instance}
        self.client_kwargs = client_kwargs or {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.session: ClientSession | None = None
        self.stderr_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"mcp-pyodide-test-{self.instance}.log"

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def start(self) -> ServerHandle:
        self.ready: Future[None] = Future()
        self.main_task = asyncio.run_coroutine_threadsafe(self._main(), self.loop)
        self.ready.result(CALL_TIMEOUT_S)
        return self

    async def _main(self) -> None:
        """Hold the client open in one task: anyio scopes must close in the task that opened them."""
        self.stop_event = asyncio.Event()
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "mcp_pyodide", *self.args], env=self.env, cwd=str(REPO)
        )
        self.errlog = self.stderr_path.open("w")
        try:
            async with stdio_client(params, errlog=self.errlog) as (read, write):
                async with ClientSession(read, write, **self.client_kwargs) as session:
                    await session.initialize()
                    self.session = session
                    self.ready.set_result(None)
                    await self.stop_event.wait()
        except BaseException as exc:
            if not self.ready.done():
                self.ready.set_exception(exc)
            raise

    def call(
        self, name: str, arguments: dict[str, Any] | None = None, timeout: float = CALL_TIMEOUT_S
    ) -> types.CallToolResult:
        assert self.session is not None
        return self.run(self.session.call_tool(name, arguments or {}), timeout)

    def execute(self, code: str, timeout_ms: int | None = None) -> types.CallToolResult:
        args: dict[str, Any] = {"code": code}
        if timeout_ms is not None:
            args["timeout"] = timeout_ms
        return self.call("pyodide_execute", args)

    def run_async_call(self, name: str, arguments: dict[str, Any]) -> Future[types.CallToolResult]:
        """Start a call and return at once; `.result(timeout)` waits for it."""
        assert self.session is not None
        return asyncio.run_coroutine_threadsafe(self.session.call_tool(name, arguments), self.loop)

    def call_many(self, calls: list[tuple[str, dict[str, Any]]]) -> list[types.CallToolResult]:
        assert self.session is not None
        session = self.session

        async def gather() -> list[types.CallToolResult]:
            return list(await asyncio.gather(*(session.call_tool(n, a) for n, a in calls)))

        return self.run(gather())

    def list_tools(self) -> list[types.Tool]:
        assert self.session is not None
        return self.run(self.session.list_tools()).tools

    # -- the process tree ------------------------------------------------------------------

    def server_process(self) -> psutil.Process:
        for proc in psutil.Process(os.getpid()).children(recursive=True):
            try:
                if proc.environ().get("MCP_PYODIDE_TEST_INSTANCE") == self.instance:
                    return proc
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        raise LookupError("the server process was not found")

    def node_processes(self, server: psutil.Process | None = None, wait_s: float = 30.0) -> list[psutil.Process]:
        """The runtime's Node process(es), waiting briefly for one to be started."""
        server = server or self.server_process()
        deadline = time.monotonic() + wait_s
        while True:
            found = runtime_nodes(server)
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def wait_for_log(self, needle: str, count: int = 1, timeout_s: float = 120.0) -> str:
        """The server's log once `needle` has appeared in it `count` times (bounded wait)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.stderr_text()
            if text.count(needle) >= count:
                return text
            time.sleep(0.05)
        raise AssertionError(
            f"{needle!r} did not appear {count} time(s) in the server log:\n{self.stderr_text()[-2000:]}"
        )

    def close(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.stop_event.set)
            self.main_task.result(60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if hasattr(self, "errlog"):
                self.errlog.close()


def runs_per_session_policy(max_runs: int) -> dict[str, Any]:
    """A policy document that lets each session run `pyodide_execute` `max_runs` times an hour."""
    limit = {"counter": "runs", "window": "hour", "max": max_runs, "scope": "session"}
    return {"version": "1", "default": "allow", "tools": {"pyodide_execute": {"limits": [limit]}}}


def runtime_nodes(parent: psutil.Process) -> list[psutil.Process]:
    """Node processes running the runtime under `parent` (not short-lived `node --version` probes)."""
    found = []
    for proc in parent.children(recursive=True):
        try:
            if any(arg.endswith("host.mjs") for arg in proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def spawn_stdio_server(
    *args: str, stderr: int = subprocess.PIPE, env: dict[str, str] | None = None, text: bool = False
) -> subprocess.Popen[Any]:
    """The server as an MCP client starts it (stdin and stdout pipes), for tests that speak raw JSON-RPC."""
    return subprocess.Popen(
        [sys.executable, "-m", "mcp_pyodide", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=REPO,
        env=env,
        text=text,
    )


def wait_for_nodes(proc: subprocess.Popen[Any], count: int = 1, timeout_s: float = 60) -> list[psutil.Process]:
    """The runtime Node processes under `proc`, once `count` of them run (fewer if it never gets there)."""
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(runtime_nodes(parent)) < count:
        time.sleep(0.02)
    return runtime_nodes(parent)


def wait_listening(
    port: int, proc: subprocess.Popen[bytes] | None, log: Path | None, timeout: float = 60.0, host: str = "127.0.0.1"
) -> None:
    """Return once something accepts connections on host:port; fail with the server's log if it exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(log.read_text() if log else f"exited {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listening on {host}:{port} after {timeout} s")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class HttpServerProcess:
    """`mcp-pyodide --transport streamable-http` in a process of its own on a free port of ``host``.

    ``policy`` (a policy document) is written next to its log; None serves the built-in policy
    (or whatever ``--policy`` the ``extra`` arguments name).
    """

    def __init__(
        self,
        tmp: Path,
        policy: dict[str, Any] | None,
        *extra: str,
        name: str = "server",
        host: str = "127.0.0.1",
        start_timeout: float = 60.0,
    ) -> None:
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}/mcp"
        self.output_dir = tmp / f"{name}-out"
        arguments = ["--transport", "streamable-http", "--host", host, "--port", str(self.port)]
        arguments += ["--output-dir", str(self.output_dir)]
        if policy is not None:
            policy_path = tmp / f"{name}-policy.json"
            policy_path.write_text(json.dumps(policy))
            arguments += ["--policy", str(policy_path)]
        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mcp_pyodide", *arguments, *extra],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=dict(os.environ),
        )
        wait_listening(self.port, self.proc, self.log_path, start_timeout, host=host)

    def node_processes(self) -> list[psutil.Process]:
        return runtime_nodes(psutil.Process(self.proc.pid))

    def log_text(self) -> str:
        return self.log_path.read_text()

    def traceback(self) -> str:
        """The first traceback in the server's log with what led to it; empty when there is none."""
        log = self.log_text()
        at = log.find("Traceback")
        return "" if at < 0 else log[max(0, at - 1500) :][:4000]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Ask it to stop with ``sig`` (killed after 30 s); its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def offline_packages_dir() -> Path:
    """The verified offline Pyodide package set; tests that need it fail (never skip) without it."""
    folder = os.environ.get("MCP_PYODIDE_TEST_PACKAGES")
    if not folder or not (Path(folder) / "numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl").exists():
        raise AssertionError(
            "MCP_PYODIDE_TEST_PACKAGES must point at the offline Pyodide packages: run "
            "`python3 scripts/test.py` (or scripts/prepare_test_packages.py) first"
        )
    return Path(folder)


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def fresh_cache_root(base: Path, *, snapshot: bool = False) -> Path:
    """A cache root as on a machine the server never ran on: only the installed runtime files
    (and, if asked, the memory snapshot, so the server still starts fast)."""
    root = base / "cache"
    shutil.copytree(cache_root() / "node-runtime", root / "node-runtime", symlinks=True)
    if snapshot:
        shutil.copytree(cache_root() / "snapshots", root / "snapshots")
    return root


def tree_digest(tree: Path) -> dict[str, str]:
    """Every file below `tree` by relative path, with its sha256: equal digests, untouched tree."""
    return {
        str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest() for p in tree.rglob("*") if p.is_file()
    }
