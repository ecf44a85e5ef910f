# ruff: noqa: RUF001  (multiplication signs and en dashes in the tables are meant)
"""Benchmark mcp-pyodide against bare Pyodide in Node, side by side, in one run.

Over 300 lines on purpose: a stand-alone benchmark script, run and never imported; its rows share the
measuring helpers and the report, so one file shows what each figure measured.

    python benchmarks/run.py [--quick] [--repeat N] [--json PATH] [--package-source PATH]
                             [--checkout DIR] [--no-peer]

The contenders are interleaved: every repetition runs the bare-Pyodide floor,
a trivial Python MCP server (the MCP floor), a fresh mcp-pyodide server and
pydantic's mcp-run-python (an offline copy, benchmarks/peers/; --no-peer leaves
it out), rotating which goes first, so noise on a shared machine hits all of them;
then fresh servers for the other rows (first start without a snapshot, runaway
as the first call, full output, spare interpreter, matplotlib with and without
--preload, HTTP with 1/2/4 sessions). Servers are driven through the real MCP
client (`mcp.ClientSession` over `stdio_client` or `streamable_http_client`),
except for the shutdown measurement, which speaks JSON-RPC by hand so it can
close stdin itself. Every target of issue 13 is checked against a reference
measured in the same run.

Prints a plain table, a targets section and a Markdown table (for the
README); writes everything, raw samples included, to JSON. See
docs/benchmarks.md for what each row means.

One file on purpose: it is a script, not a library, and each row's measuring,
analysis and rendering are easiest to check side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import anyio
import mcp_types as types
import psutil
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from peers import mcp_run_python as peer_mod  # benchmarks/ is on sys.path when this script runs

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BARE_SCRIPT = HERE / "bare_pyodide.mjs"
TRIVIAL_SERVER = HERE / "trivial_server.py"
ALLOW_ALL = REPO / "tests" / "policies" / "allow-all.json"
DEFAULT_JSON = HERE / "results" / "latest.json"
MARKER = "MCP_PYODIDE_BENCH_INSTANCE"
SERVER_CWD = REPO  # --checkout changes it: the server is `python -m mcp_pyodide` run from here

CALL_TIMEOUT_S = 120.0  # no single step may hang the run
EXIT_GRACE_S = 10.0  # for a process that has sent its last line to exit on its own
WARMUP_CALLS = 10  # untimed calls before a timed loop, on both sides
GROWTH_CALLS = 1000
MPL_CODE = "import matplotlib.pyplot as plt; plt.plot([1,2,3]); plt.show()"
PRINT_CODE = "for i in range(100000): print(i)"
LINE_CODE = "print('x' * 10_000_000)"
RUNAWAY_CODE = "while True: pass"
FULL_OUTPUT = 20_000_000  # --max-output for the "in full" rows: nothing is cut
PRELOAD = "numpy,matplotlib"
HOST_TOOL = "pyodide_get-mount-points"  # answered by the Python server alone: shows event-loop stalls
HTTP_SESSIONS = (1, 2, 4)
MIB = 1024 * 1024
# mcp-run-python is measured in the same run (benchmarks/peers/mcp_run_python.py); when it cannot
# be (--no-peer, or its set-up failed), its figures from the side-by-side run of 2026-12-02
# (issue 13) are the bars, and the targets say so.
PEER_LINE10M_MS = 1168.0
PEER_WARM_P50_MS = 1.63
PEER_EARLIER = "2026-12-02"
TODAY_MPL_MS = 3400.0  # first figure past cold start before issue 13: "no slower than today"


def data_cell(size: int) -> str:
    """A cell of about `size` bytes that embeds data, as agents do (CSV in a string literal)."""
    row = "2026-12-02,station-17,23.5,61,1013.2\n"
    body = row * ((size - 40) // len(row))
    return f'data = """\n{body}"""\nlen(data)'


CELL_1M = data_cell(999_000)  # just under the default code limit (1,000,000 bytes)
CELL_100K = data_cell(100_000)

# Targets from issue 13: key -> (description, limit, unit). "x" is a ratio to the reference
# measured in the same run.
TARGETS = {
    "warm_vs_peer": ("Warm `1+1` p50 vs mcp-run-python's", PEER_WARM_P50_MS, "ms"),
    "warm_vs_mcp": ("Warm `1+1` p50 vs the MCP floor (same run)", 1.25, "x"),
    "warm_p90_vs_mcp": ("Warm `1+1` p90 vs the MCP floor's p90", 1.5, "x"),
    "cold_ratio": ("Cold start with a snapshot vs bare boot", 0.5, "x"),
    "first_start_ratio": ("First start (snapshot cache cleared) vs bare boot", 1.0, "x"),
    "rss_vs_bare": ("Whole-tree RSS minus bare Pyodide RSS (stdio)", 60.0, "MiB"),
    "print_full": ("100,000-line print in full vs bare", 1.2, "x"),
    "line_full": ("One 10 MB line in full vs mcp-run-python's", PEER_LINE10M_MS, "ms"),
    "print_capped": ("100,000-line print, default cap: past bare's own run time", 50.0, "ms"),
    "line_capped": ("One 10 MB line, default cap: past bare's own run time", 50.0, "ms"),
    "mpl_plain": ("First matplotlib figure past cold start, no --preload (today 3.4 s)", TODAY_MPL_MS, "ms"),
    "mpl_preload_now": ("First figure past cold start, --preload, asked at once", 1000.0, "ms"),
    "mpl_preload_ready": ("First figure, --preload, asked once preloading is done", 1000.0, "ms"),
    "reset": ("`pyodide_reset` answered (default)", 100.0, "ms"),
    "reset_spare": ("`pyodide_reset` answered with `--spare-interpreter`", 100.0, "ms"),
    "cell1m_host": ("1 MB cell: host-side time outside the worker, past the MCP floor", 50.0, "ms"),
    "stall": ("Event-loop stall during a 1 MB call past the MCP floor's (host tool latency past its p50)", 20.0, "ms"),
    "http_per_session": ("HTTP: RSS per extra session's interpreter", 150.0, "MiB"),
    "rss_growth": ("RSS growth over 1,000 `1+1` calls", 10.0, "%"),
    "rss_growth_100k": ("RSS growth over 1,000 calls of 100 KB cells", 10.0, "%"),
    "runaway": ("Runaway loop (timeout 1000 ms) answered", 1500.0, "ms"),
    "runaway_first": ("Runaway loop as the first call of a fresh server", 1500.0, "ms"),
    "after_runaway": ("Next call after the runaway loop", 100.0, "ms"),
    "shutdown": ("Exit after stdin closes", 300.0, "ms"),
}
STRICT = {"rss_growth", "rss_growth_100k", "shutdown"}  # "<" in the issue; the others are "<="


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


# -- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
    }


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


# -- process bookkeeping ---------------------------------------------------------------------


class Reaper:
    """Remembers every process this run started (and their children) and ends the survivors."""

    def __init__(self) -> None:
        self.procs: dict[int, psutil.Process] = {}

    def adopt(self, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            self.procs.setdefault(pid, proc)
            for child in proc.children(recursive=True):
                self.procs.setdefault(child.pid, child)

    def sweep(self) -> None:
        """Adopt every current descendant (catches Node before its parent could orphan it)."""
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process().children(recursive=True):
                self.procs.setdefault(child.pid, child)

    def kill_all(self) -> list[int]:
        self.sweep()
        killed = []
        for pid, proc in list(self.procs.items()):
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()  # psutil refuses if the pid was reused by someone else
                    killed.append(pid)
            except psutil.Error:
                pass
        self.procs.clear()
        return killed


REAPER = Reaper()


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def process_label(proc: psutil.Process) -> str:
    """'node' for a Node process whatever its thread name (Node 24 names itself MainThread)."""
    with contextlib.suppress(psutil.Error):
        cmdline = proc.cmdline()
        if cmdline and Path(cmdline[0]).name.startswith("node"):
            return "node"
    return proc.name()


def cmdline(proc: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return " ".join(proc.cmdline())
    return ""


def tree_rss(root: psutil.Process) -> tuple[int, dict[str, int]]:
    """RSS of a process and all its descendants, and a per-process breakdown."""
    parts: dict[str, int] = {}
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            rss = proc.memory_info().rss
            parts[f"{process_label(proc)}:{proc.pid}"] = rss
            total += rss
    return total, parts


# -- machine ---------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {}


def machine_info(node_path: str) -> dict[str, Any]:
    node_version = subprocess.run([node_path, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "node": node_version,
        "node_path": node_path,
        "mcp": importlib.metadata.version("mcp"),
        "mcp_pyodide": importlib.metadata.version("mcp-pyodide"),
        "git": git_state(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


# -- the floor: bare Pyodide in Node ----------------------------------------------------------


async def run_bare(node: str, pyodide_dir: Path, calls: int, errlog: IO[str]) -> dict[str, Any]:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        node,
        str(BARE_SCRIPT),
        str(pyodide_dir),
        str(calls),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=errlog,
        limit=2**24,
    )
    REAPER.adopt(proc.pid)
    try:
        assert proc.stdout is not None
        with anyio.fail_after(CALL_TIMEOUT_S):
            first_line = await proc.stdout.readline()
            spawn_to_first = ms_since(started)
            done_line = await proc.stdout.readline()
        with anyio.move_on_after(EXIT_GRACE_S):
            await proc.wait()
        if proc.returncode is None and done_line:
            # Node 24 sometimes deadlocks in process.exit() after heavy JIT work (nodejs/node#54918);
            # the figures are already in, so end it instead of failing the run.
            log("bare_pyodide.mjs did not exit after its last line; killed (nodejs/node#54918)")
            proc.kill()
            await proc.wait()
            proc_ok = True
        else:
            proc_ok = proc.returncode == 0
        if not proc_ok or not done_line:
            raise RuntimeError(f"bare_pyodide.mjs failed (exit {proc.returncode}); see the stderr log")
        first, done = json.loads(first_line), json.loads(done_line)
        return {
            "spawn_to_first_ms": spawn_to_first,
            "boot_ms": first["boot_ms"],
            "first_call_ms": first["first_call_ms"],
            "per_call_ms": done["per_call_ms"],
            "rss_bytes": done["rss_bytes"],
            "print100k_ms": done["print100k"]["ms"],
            "line10m_ms": done["line10m"]["ms"],
            "pyodide_version": first["pyodide_version"],
        }
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


# -- our server through the MCP client --------------------------------------------------------


@dataclass
class Server:
    session: ClientSession
    instance: str
    spawned_at: float
    initialized_ms: float
    _proc: psutil.Process | None = field(default=None, repr=False)

    def process(self) -> psutil.Process:
        if self._proc is None:
            for _ in range(200):
                for child in psutil.Process().children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        if child.environ().get(MARKER) == self.instance:
                            self._proc = child
                            break
                if self._proc is not None:
                    break
                time.sleep(0.01)
            else:
                raise LookupError("the server process was not found")
        return self._proc

    def rss(self) -> tuple[int, dict[str, int]]:
        REAPER.adopt(self.process().pid)
        return tree_rss(self.process())

    async def call(self, name: str, arguments: dict[str, Any], timeout: float = CALL_TIMEOUT_S) -> tuple[float, Any]:
        started = time.perf_counter()
        with anyio.fail_after(timeout):
            result = await self.session.call_tool(name, arguments)
        return ms_since(started), result

    async def execute(
        self, code: str, timeout_ms: int | None = None, timeout: float = CALL_TIMEOUT_S
    ) -> tuple[float, Any]:
        args: dict[str, Any] = {"code": code}
        if timeout_ms is not None:
            args["timeout"] = timeout_ms
        return await self.call("pyodide_execute", args, timeout)


def server_args(extra: Sequence[str] = ()) -> list[str]:
    return ["-m", "mcp_pyodide", "--policy", str(ALLOW_ALL), *extra]


def server_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(SERVER_CWD), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


@contextlib.asynccontextmanager
async def mcp_server(
    errlog: IO[str], extra: Sequence[str] = (), env: dict[str, str] | None = None
) -> AsyncIterator[Server]:
    async with stdio_server(
        errlog, sys.executable, server_args(extra), SERVER_CWD, server_env(**(env or {}))
    ) as server:
        yield server


@contextlib.asynccontextmanager
async def stdio_server(
    errlog: IO[str], command: str, args: Sequence[str], cwd: Path, env: dict[str, str]
) -> AsyncIterator[Server]:
    """Any stdio MCP server, driven by the same client; its process is found by a marker in its environment."""
    instance = uuid.uuid4().hex
    params = StdioServerParameters(command=command, args=list(args), env={**env, MARKER: instance}, cwd=str(cwd))
    started = time.perf_counter()
    async with stdio_client(params, errlog=errlog) as (read, write):
        async with ClientSession(read, write) as session:
            with anyio.fail_after(CALL_TIMEOUT_S):
                await session.initialize()
            server = Server(session, instance, started, ms_since(started))
            REAPER.sweep()
            try:
                yield server
            finally:
                REAPER.sweep()


READY_RE = re.compile(r"runtime ready\b.*?\bin (\d+(?:\.\d+)?) ?ms")


def log_mark(errlog: IO[str], label: str) -> int:
    """Write a header into the shared child-stderr log and return the offset after it."""
    errlog.write(f"\n===== {label} =====\n")
    errlog.flush()
    return os.lseek(errlog.fileno(), 0, os.SEEK_CUR)


def why_unavailable(exc: BaseException, errlog: IO[str], mark: int, source: str) -> str:
    """A row that could not be measured: the first real exception, and the last line its process logged."""
    cause = exc
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    lines = [line for line in log_since(errlog, mark).splitlines() if line.strip()]
    hint = f" ({source}: {lines[-1].strip()[:200]})" if lines else ""
    return f"{type(cause).__name__}: {cause}".strip() + hint


def log_since(errlog: IO[str], start: int) -> str:
    errlog.flush()
    end = os.lseek(errlog.fileno(), 0, os.SEEK_CUR)
    with open(errlog.name, "rb") as f:
        f.seek(start)
        return f.read(max(0, end - start)).decode("utf-8", "replace")


def ready_times(errlog: IO[str], start: int) -> list[float]:
    """The server's own "runtime ready ... in N ms" lines written since `start` (empty if it logs none)."""
    return [float(x) for x in READY_RE.findall(log_since(errlog, start))]


def data_of(result: Any) -> dict[str, Any]:
    return dict(getattr(result, "structured_content", None) or {})


def text_of(result: Any) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, types.TextContent))


def is_two(result: Any) -> bool:
    return not result.is_error and data_of(result).get("result") == "2"


def describe_error(result: Any) -> str:
    data = data_of(result)
    error = data.get("error") or {}
    if error:
        return f"{error.get('type')}: {error.get('message')}".strip()
    return text_of(result).strip().splitlines()[0] if text_of(result).strip() else "error with no text"


async def timed_ones(server: Server, count: int, inner: list[float] | None = None) -> tuple[list[float], int]:
    """`count` sequential `1+1` calls; client-side times, and the server's own duration_ms into `inner`."""
    times, bad = [], 0
    for _ in range(count):
        elapsed, result = await server.execute("1+1")
        times.append(elapsed)
        bad += not is_two(result)
        reported = data_of(result).get("duration_ms")
        if inner is not None and isinstance(reported, int | float):
            inner.append(float(reported))
    return times, bad


async def run_trivial(calls: int, errlog: IO[str]) -> dict[str, Any]:
    """The MCP floor: the same client calling a do-nothing tool on a trivial Python MCP server."""
    params = StdioServerParameters(command=sys.executable, args=[str(TRIVIAL_SERVER)], env=dict(os.environ))
    times: list[float] = []
    async with stdio_client(params, errlog=errlog) as (read, write):
        async with ClientSession(read, write) as session:
            with anyio.fail_after(CALL_TIMEOUT_S):
                await session.initialize()
            REAPER.sweep()
            for i in range(WARMUP_CALLS + calls):
                started = time.perf_counter()
                with anyio.fail_after(CALL_TIMEOUT_S):
                    await session.call_tool("echo", {"code": "1+1"})
                if i >= WARMUP_CALLS:
                    times.append(ms_since(started))
            rss = sum(tree_rss(p)[0] for p in psutil.Process().children() if str(TRIVIAL_SERVER) in cmdline(p))
            big = []
            for _ in range(5):
                started = time.perf_counter()
                with anyio.fail_after(CALL_TIMEOUT_S):
                    await session.call_tool("size", {"code": CELL_1M})
                big.append(ms_since(started))
            stalls = [await floor_stall(session) for _ in range(3)]
            started = time.perf_counter()
            with anyio.fail_after(CALL_TIMEOUT_S):
                await session.call_tool("repeat", {"n": 10_000_000})
            line10m = ms_since(started)
    return {"per_call_ms": times, "cell1m_ms": big, "stall_ms": stalls, "line10m_ms": line10m, "rss_bytes": rss}


async def floor_stall(session: ClientSession) -> float:
    """The MCP floor's own stall while it takes a 1 MB argument: the client's share of the stall row."""

    async def echo() -> float:
        started = time.perf_counter()
        await session.call_tool("echo", {"code": "x"})
        return ms_since(started)

    async def size() -> None:
        with anyio.fail_after(CALL_TIMEOUT_S):
            await session.call_tool("size", {"code": CELL_1M})

    baseline, probes, _ = await probed(echo, size())
    return max(probes) - statistics.median(baseline)


def peer_ok(result: Any, value: str | None = None) -> bool:
    """mcp-run-python answers in XML text: a success status, and the return value if one is expected."""
    text = text_of(result)
    ok = not result.is_error and "<status>success</status>" in text
    return ok and (value is None or f"<return_value>\n{value}\n</return_value>" in text)


async def peer_output(server: Server, code: str, complete: Callable[[str], bool]) -> dict[str, Any]:
    elapsed, result = await server.call(peer_mod.TOOL, {peer_mod.CODE_ARG: code})
    text = text_of(result)
    return {"ms": elapsed, "ok": peer_ok(result), "text_chars": len(text), "complete": complete(text)}


PRINT_LAST = "\n99999\n"  # the last line of PRINT_CODE, as the peer's XML output holds it
PRINT_DIGITS = sum(len(str(i)) for i in range(100_000))


async def run_peer(launch: peer_mod.Launch, calls: int, errlog: IO[str], *, big: bool) -> dict[str, Any]:
    """pydantic's mcp-run-python: cold start, warm `1+1`, tree RSS, and (with `big`) the output rows in full.

    A failure is recorded, not raised: the peer is optional and must not end the run.
    """
    out: dict[str, Any] = {}
    mark = log_mark(errlog, "mcp-run-python")
    try:
        env = {**os.environ, **launch.env}
        async with stdio_server(errlog, launch.command, launch.args, launch.cwd, env) as server:
            args = {peer_mod.CODE_ARG: "1+1"}
            elapsed, first = await server.call(peer_mod.TOOL, args)
            out["cold_start_ms"] = ms_since(server.spawned_at)
            out["initialize_ms"] = server.initialized_ms
            out["first_call_ms"] = elapsed
            if not peer_ok(first, "2"):
                return {**out, "unavailable": f"1+1 did not answer 2: {text_of(first)[:200]}"}
            REAPER.sweep()
            for _ in range(WARMUP_CALLS):
                await server.call(peer_mod.TOOL, args)
            out["warm_ms"], out["warm_bad"] = [], 0
            for _ in range(calls):
                elapsed, result = await server.call(peer_mod.TOOL, args)
                out["warm_ms"].append(elapsed)
                out["warm_bad"] += not peer_ok(result, "2")
            out["rss_after_warm_bytes"], out["rss_parts"] = server.rss()
            if big:
                out["print100k"] = await peer_output(
                    server, PRINT_CODE, lambda t: PRINT_LAST in t and len(t) >= PRINT_DIGITS + 99_999
                )
                out["line10m"] = await peer_output(server, LINE_CODE, lambda t: t.count("x") >= 10_000_000)
    except Exception as exc:  # noqa: BLE001 - an optional contender must not end the run
        return {**out, "unavailable": why_unavailable(exc, errlog, mark, "stderr")}
    return out


async def run_server(calls: int, errlog: IO[str], *, growth_calls: int = 0) -> dict[str, Any]:
    """One fresh server: cold start, warm loop, memory, big output, runaway loop, reset."""
    out: dict[str, Any] = {}
    mark = log_mark(errlog, "server")
    async with mcp_server(errlog) as server:
        elapsed, first = await server.execute("1+1")
        out["cold_start_ms"] = ms_since(server.spawned_at)
        out["initialize_ms"] = server.initialized_ms
        out["first_call_ms"] = elapsed
        if not is_two(first):
            raise RuntimeError(f"the first call did not answer 2: {describe_error(first)}")
        REAPER.sweep()

        await timed_ones(server, WARMUP_CALLS)
        out["warm_reported_ms"] = []
        out["warm_ms"], out["warm_bad"] = await timed_ones(server, calls, out["warm_reported_ms"])
        rss, parts = server.rss()
        out["rss_after_warm_bytes"], out["rss_parts"] = rss, parts

        if growth_calls:
            _, bad = await timed_ones(server, growth_calls)
            rss_after, parts_after = server.rss()
            out["growth"] = {
                "calls": growth_calls,
                "bad": bad,
                "before_bytes": rss,
                "after_bytes": rss_after,
                "percent": (rss_after - rss) / rss * 100,
                "parts_after": parts_after,
            }

        if growth_calls:
            # The JS heaps saw-tooth by 60-70 MiB with 100 KB strings passing through (collected,
            # not leaked; one tooth is about 250 calls), so compare what stays after collection:
            # the lowest of the first and of the last third of samples taken every 10 calls.
            samples = []
            for i in range(growth_calls):
                await server.execute(CELL_100K)
                if i % 10 == 9:
                    samples.append(server.rss()[0])
            third = max(1, len(samples) // 3)
            before, after = min(samples[:third]), min(samples[-third:])
            out["growth_100k"] = {
                "calls": growth_calls,
                "before_bytes": before,
                "after_bytes": after,
                "percent": (after - before) / before * 100,
                "samples": samples,
            }

        out["print100k"] = await big_output(server, PRINT_CODE)
        out["line10m"] = await big_output(server, LINE_CODE)
        out["cell1m"] = await big_cell(server)

        elapsed, result = await server.execute(RUNAWAY_CODE, timeout_ms=1000, timeout=60)
        data = data_of(result)
        out["runaway"] = {
            "ms": elapsed,
            "timed_out": data.get("timed_out"),
            "state_reset": data.get("state_reset"),
            "error": describe_error(result) if result.is_error or data.get("error") else None,
        }
        elapsed, result = await server.execute("1+1")
        out["after_runaway"] = {"ms": elapsed, "ok": is_two(result)}

        elapsed, result = await server.call("pyodide_reset", {})
        out["reset"] = {"ms": elapsed, "ok": not result.is_error, "text": text_of(result)[:300]}
        elapsed, result = await server.execute("1+1")
        out["after_reset"] = {"ms": elapsed, "ok": is_two(result)}
    out["log_ready_ms"] = ready_times(errlog, mark)
    return out


async def big_output(server: Server, code: str) -> dict[str, Any]:
    elapsed, result = await server.execute(code)
    data = data_of(result)
    return {
        "ms": elapsed,
        "ok": not result.is_error,
        "stdout_chars": len(data.get("stdout", "")),
        "stdout_truncated_chars": data.get("stdout_truncated_chars"),
        "text_chars": len(text_of(result)),  # the text part stops at --max-text-output
        "duration_ms_reported": data.get("duration_ms"),
    }


T = TypeVar("T")


async def probed(probe: Callable[[], Awaitable[float]], big: Awaitable[T]) -> tuple[list[float], list[float], T]:
    """`big`'s outcome while `probe` (one quick call, its latency in ms) runs every 2 ms on the same
    connection; with 20 probe latencies measured just before as the baseline."""
    baseline = [await probe() for _ in range(20)]
    probes: list[float] = []
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            probes.append(await probe())
            await asyncio.sleep(0.002)

    task = asyncio.ensure_future(loop())
    try:
        outcome = await big
    finally:
        stop.set()
        await task
    return baseline, probes, outcome


async def big_cell(server: Server) -> dict[str, Any]:
    """A 1 MB cell, while a host-side tool is called over and over on the same connection."""

    async def host_tool() -> float:
        elapsed, _ = await server.call(HOST_TOOL, {})
        return elapsed

    baseline, probes, (elapsed, result) = await probed(host_tool, server.execute(CELL_1M))
    reported = data_of(result).get("duration_ms")
    return {
        "ms": elapsed,
        "ok": not result.is_error and data_of(result).get("result") is not None,
        "error": describe_error(result) if result.is_error else None,
        "duration_ms_reported": reported if isinstance(reported, int | float) else None,
        "probe_baseline_ms": baseline,
        "probe_ms": probes,
    }


async def run_full_output(errlog: IO[str]) -> dict[str, Any]:
    """A server keeping output in full (`--max-output` 20 M): the two big-output rows."""
    async with mcp_server(errlog, ["--max-output", str(FULL_OUTPUT)]) as server:
        await timed_ones(server, 3)
        return {"print100k": await big_output(server, PRINT_CODE), "line10m": await big_output(server, LINE_CODE)}


async def run_first_start(errlog: IO[str]) -> dict[str, Any]:
    """Spawn → first `1+1` with no memory snapshot: a cache root that shares everything else."""
    from mcp_pyodide._paths import cache_root

    real = cache_root()
    with tempfile.TemporaryDirectory(prefix="mcp-pyodide-bench-cache-") as tmp:
        # Copies, not links: Node's permission model checks the real paths. The package cache
        # is left out (a `1+1` needs none), the snapshot is what this row is about.
        for name in ("node-runtime", "matplotlib"):
            if (real / name).is_dir():
                shutil.copytree(real / name, Path(tmp) / name, symlinks=True)
        async with mcp_server(errlog, env={"MCP_PYODIDE_CACHE_ROOT": tmp}) as server:
            _, first = await server.execute("1+1")
            cold = ms_since(server.spawned_at)
            if not is_two(first):
                raise RuntimeError(f"first start did not answer 2: {describe_error(first)}")
            return {"first_start_ms": cold}


async def run_spare(errlog: IO[str]) -> dict[str, Any]:
    """A server with `--spare-interpreter`: RSS with the spare ready, then resets."""
    mark = log_mark(errlog, "spare-interpreter server")
    async with mcp_server(errlog, ["--spare-interpreter"]) as server:
        await timed_ones(server, 3)
        with anyio.fail_after(CALL_TIMEOUT_S):
            while "spare interpreter" not in log_since(errlog, mark):
                await asyncio.sleep(0.02)
        await timed_ones(server, WARMUP_CALLS)
        rss, _ = server.rss()
        elapsed, result = await server.call("pyodide_reset", {})
        after, nxt = await server.execute("1+1")
        return {"rss_bytes": rss, "reset_ms": elapsed, "ok": not result.is_error and is_two(nxt), "after_ms": after}


async def run_runaway_first(errlog: IO[str]) -> dict[str, Any]:
    """A fresh server whose very first call is the runaway loop."""
    async with mcp_server(errlog) as server:
        elapsed, result = await server.execute(RUNAWAY_CODE, timeout_ms=1000, timeout=60)
        after, nxt = await server.execute("1+1")
        return {
            "ms": elapsed,
            "timed_out": data_of(result).get("timed_out"),
            "after_ms": after,
            "after_ok": is_two(nxt),
        }


async def run_http(errlog: IO[str], calls: int) -> dict[str, Any]:
    """One HTTP server; 1, 2 then 4 sessions (each its own interpreter): warm p50 and tree RSS."""
    from mcp.client.streamable_http import streamable_http_client

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *server_args(["--transport", "streamable-http", "--port", str(port)]),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=errlog,
        stderr=errlog,
        cwd=str(SERVER_CWD),
        env=server_env(),
    )
    REAPER.adopt(proc.pid)
    out: dict[str, Any] = {}
    try:
        with anyio.fail_after(60):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{port}/mcp"
        async with contextlib.AsyncExitStack() as stack:
            sessions: list[ClientSession] = []
            for count in HTTP_SESSIONS:
                while len(sessions) < count:
                    read, write = await stack.enter_async_context(streamable_http_client(url))
                    session = await stack.enter_async_context(ClientSession(read, write))
                    with anyio.fail_after(CALL_TIMEOUT_S):
                        await session.initialize()
                        await session.call_tool("pyodide_execute", {"code": "1+1"})
                    sessions.append(session)
                times = []
                for i in range(WARMUP_CALLS + calls):
                    started = time.perf_counter()
                    with anyio.fail_after(CALL_TIMEOUT_S):
                        result = await sessions[0].call_tool("pyodide_execute", {"code": "1+1"})
                    if i >= WARMUP_CALLS:
                        times.append(ms_since(started))
                    if not is_two(result):
                        raise RuntimeError(f"HTTP 1+1 did not answer 2: {describe_error(result)}")
                REAPER.adopt(proc.pid)
                rss, _ = tree_rss(psutil.Process(proc.pid))
                out[str(count)] = {"warm_ms": times, "rss_bytes": rss}
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    return out


async def fill_caches(errlog: IO[str], package_source: str | None) -> None:
    """`mcp-pyodide run` of a matplotlib import: it waits for the caches the import starts (the
    compiled modules, the font list) before it exits, as a server does only if it stays up."""
    extra = ["--package-source", package_source] if package_source else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mcp_pyodide",
        "run",
        *extra,
        "-c",
        "import matplotlib.pyplot",
        cwd=str(SERVER_CWD),
        env=server_env(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=errlog,
    )
    await asyncio.wait_for(proc.wait(), 900)


async def run_matplotlib(
    errlog: IO[str], package_source: str | None, preload: bool = False, wait_for_preload: bool = False
) -> dict[str, Any]:
    """A fresh server: cold start, then the first figure, then a second one.

    With `preload`, the server gets `--preload numpy,matplotlib`; with `wait_for_preload`, the
    figure is asked for only once the server logged that preloading finished.
    """
    extra = ["--package-source", package_source] if package_source else []
    if preload:
        extra += ["--preload", PRELOAD]
    out: dict[str, Any] = {"args": extra}
    mark = log_mark(errlog, "matplotlib server")
    try:
        async with mcp_server(errlog, extra) as server:
            _, first = await server.execute("1+1")
            out["cold_start_ms"] = ms_since(server.spawned_at)
            if not is_two(first):
                return {**out, "unavailable": f"server did not answer 1+1: {describe_error(first)}"}
            if wait_for_preload:
                with anyio.fail_after(CALL_TIMEOUT_S):
                    while "preloaded " not in log_since(errlog, mark):
                        await asyncio.sleep(0.02)
                out["spawn_to_preloaded_ms"] = ms_since(server.spawned_at)
            elapsed, result = await server.execute(MPL_CODE, timeout_ms=120_000, timeout=180)
            if result.is_error or data_of(result).get("error"):
                return {**out, "unavailable": describe_error(result), "ms": elapsed}
            out["first_figure_ms"] = elapsed
            out["first_figure_reported_ms"] = data_of(result).get("duration_ms")
            out["loaded_packages"] = data_of(result).get("loaded_packages")
            out["spawn_to_figure_ms"] = ms_since(server.spawned_at)
            out["images"] = sum(isinstance(b, types.ImageContent) for b in result.content)
            elapsed, result = await server.execute(MPL_CODE, timeout_ms=120_000, timeout=180)
            out["second_figure_ms"] = elapsed
            rss, _ = server.rss()
            out["rss_after_figures_bytes"] = rss
    except Exception as exc:  # noqa: BLE001 - a missing feature must not end the run
        return {**out, "unavailable": why_unavailable(exc, errlog, mark, "server stderr")}
    return out


# -- shutdown, by hand ------------------------------------------------------------------------


async def run_shutdown(errlog: IO[str]) -> dict[str, Any]:
    """Handshake and one call by hand, then close stdin and time the exit of the server and its tree."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *server_args(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=errlog,
        cwd=str(SERVER_CWD),
        env=server_env(),
        limit=2**24,
    )
    REAPER.adopt(proc.pid)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def send(message: dict[str, Any]) -> None:
        stdin.write((json.dumps(message) + "\n").encode())
        await stdin.drain()

    async def answer(request_id: int) -> dict[str, Any]:
        while True:
            line = await stdout.readline()
            if not line:
                raise RuntimeError(f"the server closed stdout (exit {proc.returncode}); see the stderr log")
            message = json.loads(line)
            if message.get("id") == request_id and "method" not in message:
                return message

    try:
        with anyio.fail_after(CALL_TIMEOUT_S):
            await send(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": types.LATEST_PROTOCOL_VERSION,
                        "capabilities": {},
                        "clientInfo": {"name": "mcp-pyodide-bench", "version": "0"},
                    },
                }
            )
            await answer(1)
            await send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            await send(
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {"name": "pyodide_execute", "arguments": {"code": "1+1"}},
                }
            )
            reply = await answer(2)
        cold = ms_since(started)
        if (reply.get("result") or {}).get("structuredContent", {}).get("result") != "2":
            raise RuntimeError(f"1+1 did not answer 2: {json.dumps(reply)[:300]}")
        REAPER.adopt(proc.pid)
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
        node_count = sum(process_label(p) == "node" for p in tree)

        stdin.close()
        closed = time.perf_counter()
        exited_ms: float | None = None
        children = [p for p in tree if p.pid != proc.pid]
        children_gone_ms: float | None = None

        async def watch_children() -> None:
            nonlocal children_gone_ms
            while any(alive(p) for p in children):
                await asyncio.sleep(0.002)
            children_gone_ms = ms_since(closed)

        watcher = asyncio.ensure_future(watch_children())
        try:
            with anyio.fail_after(10):
                await proc.wait()
            exited_ms = ms_since(closed)
        except TimeoutError:
            pass

        tree_ms: float | None = None
        deadline = closed + 10
        while time.perf_counter() < deadline:
            if not any(alive(p) for p in tree):
                tree_ms = ms_since(closed)
                break
            await asyncio.sleep(0.002)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watcher, 1)
        return {
            "cold_start_ms": cold,
            "children_gone_ms": children_gone_ms,
            "processes": len(tree),
            "node_processes": node_count,
            "exit_ms": exited_ms,
            "tree_gone_ms": tree_ms,
            "exit_code": proc.returncode,
        }
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


# -- the whole run ----------------------------------------------------------------------------


@dataclass
class Plan:
    repeat: int
    warm_calls: int
    mpl_repeat: int
    big_repeat: int
    http_repeat: int
    growth_calls: int
    package_source: str | None
    quick: bool


async def benchmark(
    plan: Plan, node: str, pyodide_dir: Path, errlog: IO[str], peer: peer_mod.Launch | None
) -> dict[str, Any]:
    per_rep = max(1, math.ceil(plan.warm_calls / plan.repeat))
    names = ["bare", "server", "trivial", "peer", "shutdown", "full_output", "first_start", "runaway_first"]
    names += ["http", "spare"]
    raw: dict[str, list[Any]] = {name: [] for name in names}
    for variant in MPL_VARIANTS:
        raw[variant] = []

    log("warm-up (untimed): bare Pyodide, one server, one shutdown")
    await run_bare(node, pyodide_dir, 20, errlog)
    async with mcp_server(errlog) as server:
        await timed_ones(server, 20)
    await run_shutdown(errlog)
    if peer is not None:
        log("warm-up (untimed): mcp-run-python")
        warm_peer = await run_peer(peer, 20, errlog, big=False)
        if warm_peer.get("unavailable"):
            log(f"mcp-run-python unavailable: {warm_peer['unavailable']}")
            raw["peer_unavailable"] = [warm_peer["unavailable"]]
            peer = None
    mpl_unavailable: str | None = None
    if plan.mpl_repeat:
        log("warm-up (untimed): matplotlib, to fill the package, bytecode and font caches")
        await fill_caches(errlog, plan.package_source)
        warm = await run_matplotlib(errlog, plan.package_source)
        raw["matplotlib_warmup"] = [warm]
        mpl_unavailable = warm.get("unavailable")
        if mpl_unavailable:
            log(f"matplotlib unavailable: {mpl_unavailable}")

    for rep in range(plan.repeat):
        last = rep == plan.repeat - 1
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("bare", lambda: run_bare(node, pyodide_dir, per_rep, errlog)),
            ("server", lambda last=last: run_server(per_rep, errlog, growth_calls=plan.growth_calls if last else 0)),
        ]
        if peer is not None:
            steps.append(("peer", lambda p=peer, big=rep < plan.big_repeat: run_peer(p, per_rep, errlog, big=big)))
        shift = rep % len(steps)  # each contender takes its turn first
        steps = steps[shift:] + steps[:shift]
        steps.insert(1, ("trivial", lambda: run_trivial(per_rep, errlog)))
        steps += [
            ("shutdown", lambda: run_shutdown(errlog)),
            ("first_start", lambda: run_first_start(errlog)),
            ("runaway_first", lambda: run_runaway_first(errlog)),
        ]
        if rep < plan.big_repeat:
            steps.append(("full_output", lambda: run_full_output(errlog)))
            steps.append(("spare", lambda: run_spare(errlog)))
        if rep < plan.mpl_repeat and not mpl_unavailable:
            for variant, (preload, wait) in MPL_VARIANTS.items():
                steps.append((variant, lambda p=preload, w=wait: run_matplotlib(errlog, plan.package_source, p, w)))
        if rep < plan.http_repeat:
            steps.append(("http", lambda: run_http(errlog, max(20, per_rep // 2))))
        for name, step in steps:
            log(f"repetition {rep + 1}/{plan.repeat}: {name}")
            raw[name].append(await step())
    return {"per_rep_calls": per_rep, "raw": raw, "mpl_unavailable": mpl_unavailable}


MPL_VARIANTS = {  # raw key -> (--preload, ask only once preloading finished)
    "matplotlib": (False, False),
    "mpl_preload_now": (True, False),
    "mpl_preload_ready": (True, True),
}


def values_of(items: Sequence[dict[str, Any]], *path: str) -> list[float]:
    out = []
    for item in items:
        value: Any = item
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            out.append(float(value))
    return out


def analyse_peer(runs: Sequence[dict[str, Any]], unavailable: str | None) -> dict[str, Any]:
    """mcp-run-python's figures; `unavailable` says why there are none (a run that failed counts too)."""
    ok = [p for p in runs if "unavailable" not in p]
    failed = [p["unavailable"] for p in runs if "unavailable" in p]
    if not ok:
        unavailable = unavailable or (f"every run failed: {failed[0]}" if failed else "not run")
    big = [p for p in ok if "print100k" in p]
    return {
        "unavailable": unavailable if not ok else None,
        "failed_runs": failed,
        "cold_start_ms": summary([p["cold_start_ms"] for p in ok]),
        "initialize_ms": summary([p["initialize_ms"] for p in ok]),
        "warm_ms": summary([x for p in ok for x in p["warm_ms"]]),
        "warm_bad_calls": sum(p["warm_bad"] for p in ok),
        "rss_after_warm_mib": summary([p["rss_after_warm_bytes"] / MIB for p in ok]),
        "print_full_ms": summary(values_of(big, "print100k", "ms")),
        "line_full_ms": summary(values_of(big, "line10m", "ms")),
        "print_full_complete": all(p["print100k"]["ok"] and p["print100k"]["complete"] for p in big),
        "line_full_complete": all(p["line10m"]["ok"] and p["line10m"]["complete"] for p in big),
    }


def analyse(
    raw: dict[str, list[Any]], mpl_unavailable: str | None, peer_unavailable: str | None = None
) -> dict[str, Any]:
    bare, srv, down = raw["bare"], raw["server"], raw["shutdown"]
    trivial = raw.get("trivial", [])
    growth = next((s["growth"] for s in srv if "growth" in s), None)
    growth_100k = next((s["growth_100k"] for s in srv if "growth_100k" in s), None)
    m: dict[str, Any] = {
        "bare_spawn_to_first_ms": summary([b["spawn_to_first_ms"] for b in bare]),
        "bare_boot_ms": summary([b["boot_ms"] for b in bare]),
        "bare_call_ms": summary([x for b in bare for x in b["per_call_ms"]]),
        "bare_print100k_ms": summary(values_of(bare, "print100k_ms")),
        "bare_line10m_ms": summary(values_of(bare, "line10m_ms")),
        "mcp_floor_ms": summary([x for t in trivial for x in t["per_call_ms"]]),
        "mcp_floor_1m_ms": summary([x for t in trivial for x in t.get("cell1m_ms", [])]),
        "mcp_floor_stall_ms": summary([x for t in trivial for x in t.get("stall_ms", [])]),
        "mcp_floor_line10m_ms": summary(values_of(trivial, "line10m_ms")),
        "mcp_floor_rss_mib": summary([v / 2**20 for v in values_of(trivial, "rss_bytes") if v]),
        "bare_rss_mib": summary([b["rss_bytes"] / MIB for b in bare]),
        "cold_start_ms": summary([s["cold_start_ms"] for s in srv]),
        "first_start_ms": summary(values_of(raw["first_start"], "first_start_ms")),
        "initialize_ms": summary([s["initialize_ms"] for s in srv]),
        "log_ready_ms": summary([s["log_ready_ms"][0] for s in srv if s.get("log_ready_ms")]),
        "warm_ms": summary([x for s in srv for x in s["warm_ms"]]),
        "warm_bad_calls": sum(s["warm_bad"] for s in srv),
        "warm_reported_ms": summary([x for s in srv for x in s.get("warm_reported_ms", [])]),
        "rss_after_warm_mib": summary([s["rss_after_warm_bytes"] / MIB for s in srv]),
        "rss_python_mib": summary([sum(v for k, v in s["rss_parts"].items() if "node" not in k) / MIB for s in srv]),
        "rss_node_mib": summary([sum(v for k, v in s["rss_parts"].items() if "node" in k) / MIB for s in srv]),
        "print_capped_ms": summary(values_of(srv, "print100k", "ms")),
        "line_capped_ms": summary(values_of(srv, "line10m", "ms")),
        "print_capped_cut": max(values_of(srv, "print100k", "stdout_truncated_chars") or [0]),
        "line_capped_cut": max(values_of(srv, "line10m", "stdout_truncated_chars") or [0]),
        "print_full_ms": summary(values_of(raw["full_output"], "print100k", "ms")),
        "line_full_ms": summary(values_of(raw["full_output"], "line10m", "ms")),
        "print_full_cut": max(values_of(raw["full_output"], "print100k", "stdout_truncated_chars") or [0]),
        "line_full_cut": max(values_of(raw["full_output"], "line10m", "stdout_truncated_chars") or [0]),
        "line_full_text_chars": max(values_of(raw["full_output"], "line10m", "text_chars") or [0]),
        "cell1m_ms": summary(values_of(srv, "cell1m", "ms")),
        "cell1m_worker_ms": summary(values_of(srv, "cell1m", "duration_ms_reported")),
        "cell1m_ok": all(s["cell1m"]["ok"] for s in srv),
        "cell1m_host_ms": summary(
            [
                s["cell1m"]["ms"] - s["cell1m"]["duration_ms_reported"]
                for s in srv
                if s["cell1m"]["duration_ms_reported"] is not None
            ]
        ),
        "probe_baseline_ms": summary([x for s in srv for x in s["cell1m"]["probe_baseline_ms"]]),
        "probe_max_ms": summary([max(s["cell1m"]["probe_ms"]) for s in srv if s["cell1m"]["probe_ms"]]),
        "probe_count": summary([len(s["cell1m"]["probe_ms"]) for s in srv]),
        "runaway_ms": summary([s["runaway"]["ms"] for s in srv]),
        "runaway_timed_out": all(s["runaway"]["timed_out"] for s in srv),
        "runaway_state_reset": any(s["runaway"]["state_reset"] for s in srv),
        "after_runaway_ms": summary([s["after_runaway"]["ms"] for s in srv]),
        "after_runaway_ok": all(s["after_runaway"]["ok"] for s in srv),
        "runaway_first_ms": summary(values_of(raw["runaway_first"], "ms")),
        "runaway_first_ok": all(r["timed_out"] and r["after_ok"] for r in raw["runaway_first"]),
        "runaway_first_after_ms": summary(values_of(raw["runaway_first"], "after_ms")),
        "reset_ms": summary([s["reset"]["ms"] for s in srv]),
        "spare_reset_ms": summary(values_of(raw["spare"], "reset_ms")),
        "spare_after_ms": summary(values_of(raw["spare"], "after_ms")),
        "spare_ok": all(x["ok"] for x in raw["spare"]),
        "spare_rss_mib": summary([x["rss_bytes"] / MIB for x in raw["spare"]]),
        "reset_ok": all(s["reset"]["ok"] for s in srv),
        "after_reset_ms": summary([s["after_reset"]["ms"] for s in srv]),
        "growth": growth and {k: v for k, v in growth.items() if k != "parts_after"},
        "growth_100k": growth_100k,
        "shutdown_exit_ms": summary([d["exit_ms"] for d in down if d["exit_ms"] is not None]),
        "shutdown_tree_ms": summary([d["tree_gone_ms"] for d in down if d["tree_gone_ms"] is not None]),
        "shutdown_children_ms": summary([d["children_gone_ms"] for d in down if d.get("children_gone_ms") is not None]),
        "shutdown_failures": sum(d["exit_ms"] is None or d["tree_gone_ms"] is None for d in down),
        "raw_cold_start_ms": summary([d["cold_start_ms"] for d in down]),
        "mpl_unavailable": mpl_unavailable,
        "peer": analyse_peer(raw.get("peer", []), peer_unavailable),
        "http": {
            str(n): {
                "warm_ms": summary([x for h in raw["http"] for x in h[str(n)]["warm_ms"]]),
                "rss_mib": summary([h[str(n)]["rss_bytes"] / MIB for h in raw["http"]]),
            }
            for n in HTTP_SESSIONS
            if raw["http"]
        },
    }
    for variant in MPL_VARIANTS:
        runs = raw.get(variant, [])
        ok = [x for x in runs if "first_figure_ms" in x]
        if not mpl_unavailable and runs and not ok:
            m["mpl_unavailable"] = runs[0].get("unavailable", "no figure was produced")
        m[variant] = {
            "first_figure_ms": summary([x["first_figure_ms"] for x in ok]),
            "spawn_to_figure_ms": summary([x["spawn_to_figure_ms"] for x in ok]),
            "second_figure_ms": summary([x["second_figure_ms"] for x in ok]),
            "reported_ms": summary(values_of(ok, "first_figure_reported_ms")),
            "spawn_to_preloaded_ms": summary(values_of(ok, "spawn_to_preloaded_ms")),
            "rss_mib": summary([x["rss_after_figures_bytes"] / MIB for x in ok if "rss_after_figures_bytes" in x]),
            "images": [x.get("images") for x in ok],
        }

    def median_of(key: str, field_name: str = "median") -> float:
        return float(m[key].get(field_name, math.nan))

    bare_first = median_of("bare_spawn_to_first_ms")
    http = m["http"]
    per_session = math.nan
    if http:
        one, four = http["1"]["rss_mib"].get("median", math.nan), http["4"]["rss_mib"].get("median", math.nan)
        per_session = (four - one) / 3
    m["ratios"] = {
        "cold_vs_bare_spawn_to_first": median_of("cold_start_ms") / bare_first,
        "first_start_vs_bare": median_of("first_start_ms") / bare_first,
        "cold_vs_bare_loadpyodide": median_of("cold_start_ms") / median_of("bare_boot_ms"),
        "warm_p50_vs_floor_p50": median_of("warm_ms") / median_of("bare_call_ms"),
        "warm_p50_minus_floor_ms": median_of("warm_ms") - median_of("bare_call_ms"),
        "warm_p50_vs_mcp": median_of("warm_ms") / median_of("mcp_floor_ms"),
        "warm_p90_vs_mcp": median_of("warm_ms", "p90") / median_of("mcp_floor_ms", "p90"),
        "rss_vs_bare": median_of("rss_after_warm_mib") / median_of("bare_rss_mib"),
        "rss_minus_bare_mib": median_of("rss_after_warm_mib") - median_of("bare_rss_mib"),
        "print_full_vs_bare": median_of("print_full_ms") / median_of("bare_print100k_ms"),
        "print_capped_past_bare_ms": median_of("print_capped_ms") - median_of("bare_print100k_ms"),
        "line_capped_past_bare_ms": median_of("line_capped_ms") - median_of("bare_line10m_ms"),
        "cell1m_host_past_floor_ms": median_of("cell1m_host_ms") - median_of("mcp_floor_1m_ms"),
        "stall_ms": median_of("probe_max_ms") - median_of("probe_baseline_ms"),
        "stall_past_floor_ms": (
            median_of("probe_max_ms") - median_of("probe_baseline_ms") - median_of("mcp_floor_stall_ms")
        ),
        "http_per_session_mib": per_session,
    }
    peer = m["peer"]

    def peer_median(key: str, field_name: str = "median") -> float:
        return float(peer[key].get(field_name, math.nan))

    m["ratios"].update(
        {
            "peer_cold_vs_bare_spawn_to_first": peer_median("cold_start_ms") / bare_first,
            "peer_warm_p50_vs_mcp": peer_median("warm_ms") / median_of("mcp_floor_ms"),
            "peer_warm_p90_vs_mcp": peer_median("warm_ms", "p90") / median_of("mcp_floor_ms", "p90"),
            "peer_rss_minus_bare_mib": peer_median("rss_after_warm_mib") - median_of("bare_rss_mib"),
            "peer_print_full_vs_bare": peer_median("print_full_ms") / median_of("bare_print100k_ms"),
            "warm_p50_vs_peer": median_of("warm_ms") / peer_median("warm_ms"),
            "line_full_vs_peer": median_of("line_full_ms") / peer_median("line_full_ms"),
        }
    )
    r = m["ratios"]
    mpl_ok = not m["mpl_unavailable"]
    values: dict[str, float | None] = {
        "warm_vs_peer": m["warm_ms"].get("median"),
        "warm_vs_mcp": r["warm_p50_vs_mcp"],
        "warm_p90_vs_mcp": r["warm_p90_vs_mcp"],
        "cold_ratio": r["cold_vs_bare_spawn_to_first"],
        "first_start_ratio": r["first_start_vs_bare"],
        "rss_vs_bare": r["rss_minus_bare_mib"],
        "print_full": r["print_full_vs_bare"],
        "line_full": m["line_full_ms"].get("median"),
        "print_capped": r["print_capped_past_bare_ms"],
        "line_capped": r["line_capped_past_bare_ms"],
        "mpl_plain": m["matplotlib"]["first_figure_ms"].get("median") if mpl_ok else None,
        "mpl_preload_now": m["mpl_preload_now"]["first_figure_ms"].get("median") if mpl_ok else None,
        "mpl_preload_ready": m["mpl_preload_ready"]["first_figure_ms"].get("median") if mpl_ok else None,
        "reset": m["reset_ms"].get("median") if m["reset_ok"] else None,
        "reset_spare": m["spare_reset_ms"].get("median") if m["spare_ok"] else None,
        "cell1m_host": r["cell1m_host_past_floor_ms"] if m["cell1m_ok"] else None,
        "stall": r["stall_past_floor_ms"],
        "http_per_session": per_session,
        "rss_growth": growth["percent"] if growth else None,
        "rss_growth_100k": growth_100k["percent"] if growth_100k else None,
        "runaway": m["runaway_ms"].get("median"),
        "runaway_first": m["runaway_first_ms"].get("median"),
        "after_runaway": m["after_runaway_ms"].get("median"),
        "shutdown": m["shutdown_tree_ms"].get("median") if not m["shutdown_failures"] else None,
    }
    limits = {key: limit for key, (_, limit, _) in TARGETS.items()}
    labels = {key: label for key, (label, _, _) in TARGETS.items()}
    same_run = {"warm_vs_peer": peer_median("warm_ms"), "line_full": peer_median("line_full_ms")}
    for key, figure in same_run.items():
        if not math.isnan(figure) and (key != "line_full" or peer["line_full_complete"]):
            limits[key], labels[key] = figure, f"{labels[key]} (same run)"
        else:
            why = peer["unavailable"] or ("its output was incomplete" if not math.isnan(figure) else "no figure")
            why = why if len(why) <= 160 else why[:157] + "..."
            labels[key] += f" ({fmt(limits[key])} from the run of {PEER_EARLIER}; not measured here: {why})"
    m["targets"] = {}
    for key, (_, _, unit) in TARGETS.items():
        label, limit = labels[key], limits[key]
        value = values[key]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            reason = m["mpl_unavailable"] if key.startswith("mpl") and m["mpl_unavailable"] else "not measured"
            if key == "shutdown" and m["shutdown_failures"]:
                reason = f"{m['shutdown_failures']} run(s) did not exit within 10 s"
            m["targets"][key] = {
                "label": label,
                "limit": limit,
                "unit": unit,
                "value": None,
                "met": False,
                "note": f"unavailable: {reason}",
            }
            continue
        met = value < limit if key in STRICT else value <= limit
        if key == "runaway" and not m["runaway_timed_out"]:
            met = False
        if key == "runaway_first" and not m["runaway_first_ok"]:
            met = False
        if key == "after_runaway" and not m["after_runaway_ok"]:
            met = False
        m["targets"][key] = {
            "label": label,
            "limit": limit,
            "unit": unit,
            "value": value,
            "met": met,
            "margin": limit - value,
        }
    return m


# -- output -----------------------------------------------------------------------------------


def fmt(value: float | None, unit: str = "ms", digits: int | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if digits is None:
        digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:,.{digits}f} {unit}".strip()


def spread(s: dict[str, Any], unit: str = "ms") -> str:
    if not s.get("n"):
        return "—"
    if s["n"] == 1:
        return f"{fmt(s['median'], unit)} (n=1)"
    return f"{fmt(s['median'], unit)} ({fmt(s['min'], '')}–{fmt(s['max'], '')}, n={s['n']})"


def median_diff(m: dict[str, Any], a: str, b: str) -> float:
    return float(m[a].get("median", math.nan)) - float(m[b].get("median", math.nan))


def cut_note(cut: float) -> str:
    return f"output cut: {cut:,.0f} chars past the cap" if cut else "nothing cut"


def peer_note(peer: dict[str, Any], text: str) -> str:
    return "" if peer["unavailable"] else f"; mcp-run-python {text}"


def complete_note(complete: bool) -> str:
    return "complete" if complete else "INCOMPLETE"


def rows(m: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(measure, mcp-pyodide, floor, mcp-run-python, ratio or note)."""
    r = m["ratios"]
    warm, floor, mcp, peer = m["warm_ms"], m["bare_call_ms"], m["mcp_floor_ms"], m["peer"]
    growth, growth_100k = m["growth"], m["growth_100k"]
    out: list[tuple[str, ...]] = [
        (
            "Cold start with snapshot: spawn → first `1+1`",
            spread(m["cold_start_ms"]),
            spread(m["bare_spawn_to_first_ms"]),
            spread(peer["cold_start_ms"]),
            f"{r['cold_vs_bare_spawn_to_first']:.2f}× bare boot"
            + peer_note(peer, f"{r['peer_cold_vs_bare_spawn_to_first']:.2f}×"),
        ),
        (
            "First start, snapshot cache cleared",
            spread(m["first_start_ms"]),
            "",
            f"{r['first_start_vs_bare']:.2f}× bare boot",
        ),
        ("↳ bare: `loadPyodide()` alone", "", spread(m["bare_boot_ms"]), ""),
        (
            "↳ server: spawn → MCP initialize answered",
            spread(m["initialize_ms"]),
            "",
            spread(peer["initialize_ms"]),
            "",
        ),
        ('↳ server\'s log: runtime boot ("runtime ready in")', spread(m["log_ready_ms"]), "", ""),
        (
            "Warm `1+1` p50 (MCP floor: trivial Python MCP server)",
            fmt(warm.get("median")),
            fmt(mcp.get("median")),
            fmt(peer["warm_ms"].get("median")),
            f"{r['warm_p50_vs_mcp']:.2f}× the MCP floor" + peer_note(peer, f"{r['peer_warm_p50_vs_mcp']:.2f}×"),
        ),
        (
            "Warm `1+1` p90",
            fmt(warm.get("p90")),
            fmt(mcp.get("p90")),
            fmt(peer["warm_ms"].get("p90")),
            f"{r['warm_p90_vs_mcp']:.2f}× the MCP floor's p90" + peer_note(peer, f"{r['peer_warm_p90_vs_mcp']:.2f}×"),
        ),
        (
            "↳ bare `runPython('1+1')` p50 / server's own `duration_ms` p50",
            fmt(m["warm_reported_ms"].get("median")),
            fmt(floor.get("median"), digits=3),
            f"n={warm.get('n')} calls",
        ),
        (
            "Whole-tree RSS after warm-up (stdio)",
            spread(m["rss_after_warm_mib"], "MiB"),
            spread(m["bare_rss_mib"], "MiB"),
            spread(peer["rss_after_warm_mib"], "MiB"),
            f"{r['rss_minus_bare_mib']:+,.0f} MiB vs bare"
            + peer_note(peer, f"{r['peer_rss_minus_bare_mib']:+,.0f} MiB"),
        ),
        (
            "↳ Python server process / Node process",
            f"{fmt(m['rss_python_mib'].get('median'), 'MiB')} / {fmt(m['rss_node_mib'].get('median'), 'MiB')}",
            fmt(m["mcp_floor_rss_mib"].get("median"), "MiB"),
            "floor: the trivial Python MCP server on the same SDK, after its warm loop",
        ),
        (
            "100,000-line print, in full (`--max-output 20M`)",
            spread(m["print_full_ms"]),
            spread(m["bare_print100k_ms"]),
            spread(peer["print_full_ms"]),
            f"{r['print_full_vs_bare']:.2f}× bare; {cut_note(m['print_full_cut'])}"
            + peer_note(peer, f"{r['peer_print_full_vs_bare']:.2f}×, {complete_note(peer['print_full_complete'])}"),
        ),
        (
            "One 10 MB line, in full",
            spread(m["line_full_ms"]),
            spread(m["bare_line10m_ms"]),
            spread(peer["line_full_ms"]),
            f"{cut_note(m['line_full_cut'])} (all of it in the structured result; the text part "
            f"{m['line_full_text_chars']:,} chars, `--max-text-output`); MCP floor returning the same 10 MB "
            f"{fmt(m['mcp_floor_line10m_ms'].get('median'))}"
            + (
                f"; mcp-run-python {fmt(PEER_LINE10M_MS)} in the run of {PEER_EARLIER}"
                if peer["unavailable"]
                else f"; {r['line_full_vs_peer']:.2f}× mcp-run-python's, {complete_note(peer['line_full_complete'])}"
            ),
        ),
        (
            "100,000-line print, default cap",
            spread(m["print_capped_ms"]),
            spread(m["bare_print100k_ms"]),
            f"{fmt(r['print_capped_past_bare_ms'])} past bare; {cut_note(m['print_capped_cut'])}",
        ),
        (
            "One 10 MB line, default cap",
            spread(m["line_capped_ms"]),
            spread(m["bare_line10m_ms"]),
            f"{fmt(r['line_capped_past_bare_ms'])} past bare; {cut_note(m['line_capped_cut'])}",
        ),
    ]
    if m["mpl_unavailable"]:
        out.append(("First matplotlib figure", f"unavailable: {m['mpl_unavailable']}", "", ""))
    else:
        for variant, label in (
            ("matplotlib", "First matplotlib figure past cold start, no `--preload`"),
            ("mpl_preload_now", "… with `--preload numpy,matplotlib`, asked right after the first answer"),
            ("mpl_preload_ready", "… with `--preload`, asked once preloading finished"),
        ):
            v = m[variant]
            note = f"second figure {fmt(v['second_figure_ms'].get('median'))}; images {v['images']}"
            if v["spawn_to_preloaded_ms"].get("n"):
                note = f"spawn → preloaded {fmt(v['spawn_to_preloaded_ms'].get('median'))}; " + note
            out.append((label, spread(v["first_figure_ms"]), "", note))
        out.append(
            (
                "↳ RSS with matplotlib, no preload / preloaded",
                f"{fmt(m['matplotlib']['rss_mib'].get('median'), 'MiB')} / "
                f"{fmt(m['mpl_preload_ready']['rss_mib'].get('median'), 'MiB')}",
                "",
                "",
            )
        )
    out += [
        ("`pyodide_reset` answered", spread(m["reset_ms"]), "", "ok" if m["reset_ok"] else "FAILED"),
        ("↳ next `1+1` after reset", spread(m["after_reset_ms"]), "", ""),
        (
            "`pyodide_reset` with `--spare-interpreter` / next `1+1`",
            f"{spread(m['spare_reset_ms'])} / {fmt(m['spare_after_ms'].get('median'))}",
            "",
            "ok" if m["spare_ok"] else "FAILED",
        ),
        (
            "↳ whole-tree RSS with the spare ready",
            spread(m["spare_rss_mib"], "MiB"),
            "",
            f"+{fmt(median_diff(m, 'spare_rss_mib', 'rss_after_warm_mib'), 'MiB')} over the default",
        ),
        (
            "1 MB cell: client time / worker's `duration_ms`",
            f"{fmt(m['cell1m_ms'].get('median'))} / {fmt(m['cell1m_worker_ms'].get('median'))}",
            fmt(m["mcp_floor_1m_ms"].get("median")),
            "floor: the trivial server taking the same 1 MB argument",
        ),
        (
            "↳ host-side time outside the worker, past the MCP floor",
            fmt(r["cell1m_host_past_floor_ms"]),
            "",
            "ok" if m["cell1m_ok"] else "FAILED",
        ),
        (
            "Event-loop stall during the 1 MB call (host tool: max latency − p50)",
            fmt(r["stall_ms"]),
            fmt(m["mcp_floor_stall_ms"].get("median")),
            f"{fmt(r['stall_past_floor_ms'])} past the MCP floor's (its `echo` probed while it takes the same 1 MB); "
            f"p50 {fmt(m['probe_baseline_ms'].get('median'))}, max {fmt(m['probe_max_ms'].get('median'))}, "
            f"{m['probe_count'].get('median', 0):.0f} probes",
        ),
    ]
    for n, h in m["http"].items():
        out.append(
            (
                f"HTTP, {n} session{'s' if n != '1' else ''}: warm `1+1` p50 / tree RSS",
                f"{fmt(h['warm_ms'].get('median'))} / {fmt(h['rss_mib'].get('median'), 'MiB')}",
                "",
                f"+{fmt(r['http_per_session_mib'], 'MiB')} per extra session" if n == "4" else "",
            )
        )
    out += [
        (
            f"RSS growth over {growth['calls']:,} `1+1` calls" if growth else "RSS growth over `1+1` calls",
            fmt(growth["percent"], "%") if growth else "—",
            "",
            f"{fmt(growth['before_bytes'] / MIB, 'MiB')} → {fmt(growth['after_bytes'] / MIB, 'MiB')}" if growth else "",
        ),
        (
            f"RSS growth over {growth_100k['calls']:,} calls of 100 KB cells" if growth_100k else "100 KB cells",
            fmt(growth_100k["percent"], "%") if growth_100k else "—",
            "",
            f"{fmt(growth_100k['before_bytes'] / MIB, 'MiB')} → {fmt(growth_100k['after_bytes'] / MIB, 'MiB')}"
            if growth_100k
            else "",
        ),
        (
            "Runaway `while True: pass`, timeout 1000 ms: answered",
            spread(m["runaway_ms"]),
            "",
            f"timed_out={m['runaway_timed_out']}, state_reset={m['runaway_state_reset']}",
        ),
        ("↳ next `1+1` after it", spread(m["after_runaway_ms"]), "", "ok" if m["after_runaway_ok"] else "FAILED"),
        (
            "↳ runaway as the first call of a fresh server / next call",
            f"{spread(m['runaway_first_ms'])} / {fmt(m['runaway_first_after_ms'].get('median'))}",
            "",
            "ok" if m["runaway_first_ok"] else "FAILED",
        ),
        (
            "Shutdown: stdin closed → whole tree gone",
            spread(m["shutdown_tree_ms"]),
            "",
            f"{m['shutdown_failures']} failed" if m["shutdown_failures"] else "",
        ),
    ]
    if peer["unavailable"]:
        out.insert(0, ("mcp-run-python", "", "", f"not measured: {peer['unavailable']}", ""))
    elif peer["failed_runs"]:
        failed = peer["failed_runs"]
        out.insert(0, ("mcp-run-python", "", "", f"{len(failed)} run(s) failed, left out: {failed[0][:120]}", ""))
    return [row if len(row) == 5 else (*row[:3], "", row[3]) for row in out]  # type: ignore[misc]


def target_lines(m: dict[str, Any]) -> list[str]:
    out = []
    for key, t in m["targets"].items():
        op = "<" if key in STRICT else "≤"
        limit = f"{op} {fmt(t['limit'], t['unit'])}" if t["unit"] != "x" else f"{op} {t['limit']:.2f}×"
        if t["value"] is None:
            out.append(f"  MISSED  {t['label']}: {t['note']} (target {limit})")
            continue
        value = fmt(t["value"], t["unit"]) if t["unit"] != "x" else f"{t['value']:.2f}×"
        margin = abs(t["margin"])
        margin_text = fmt(margin, t["unit"]) if t["unit"] != "x" else f"{margin:.2f}×"
        side = "under" if t["margin"] >= 0 else "over"
        status = "met   " if t["met"] else "MISSED"
        out.append(f"  {status}  {t['label']}: {value} (target {limit}; {margin_text} {side})")
    return out


def plain_table(table: list[tuple[str, str, str, str, str]]) -> str:
    head = ("Measure", "mcp-pyodide", "floor", "mcp-run-python", "ratio / note")
    widths = [max(len(row[i]) for row in [head, *table]) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    return "\n".join(lines)


def peer_line(machine: dict[str, Any]) -> str:
    if machine.get("peer_unavailable"):
        return f"mcp-run-python not measured: {machine['peer_unavailable']}."
    v = machine["peer"]
    return (
        f"mcp-run-python {v['mcp-run-python']} on Deno {v['deno']}, Pyodide {v['pyodide']}, in the same run "
        "(offline copy: benchmarks/peers/mcp_run_python.py)."
    )


def markdown(m: dict[str, Any], machine: dict[str, Any], plan: Plan) -> str:
    t = m["targets"]
    lines = [
        f"Measured {machine['date'][:10]} on {machine['cpu']}, {machine['logical_cores']} cores, "
        f"{machine['ram_gib']} GiB RAM; Node {machine['node']}, Python {machine['python']}, Pyodide "
        f"{machine.get('pyodide', '?')}; medians of {plan.repeat} fresh-process runs, `benchmarks/run.py"
        f"{' --quick' if plan.quick else ''}`. {peer_line(machine)}",
        "",
        "| Measure | mcp-pyodide | floor | mcp-run-python | ratio / note |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows(m)]
    lines += ["", "| Target | Measured | Met | Margin |", "| --- | --- | --- | --- |"]
    for key, target in t.items():
        label, limit, unit = target["label"], target["limit"], target["unit"]
        op = "<" if key in STRICT else "≤"
        value = target["value"]
        shown = "—" if value is None else (f"{value:.2f}×" if unit == "x" else fmt(value, unit))
        goal = f"{op} {limit:.2f}×" if unit == "x" else f"{op} {fmt(limit, unit)}"
        if value is None:
            margin = t[key].get("note", "")
        else:
            size = f"{abs(t[key]['margin']):.2f}×" if unit == "x" else fmt(abs(t[key]["margin"]), unit)
            margin = f"{size} {'under' if t[key]['margin'] >= 0 else 'over'}"
        lines.append(f"| {label} ({goal}) | {shown} | {'yes' if t[key]['met'] else '**no**'} | {margin} |")
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 repetitions, 100 warm calls, 1 matplotlib run")
    parser.add_argument(
        "--repeat", type=int, default=None, help="fresh-process repetitions (default 5, 3 with --quick)"
    )
    parser.add_argument(
        "--warm-calls", type=int, default=None, help="timed warm calls in total (default 300, 100 with --quick)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help="where to write the results (default benchmarks/results/latest.json)",
    )
    parser.add_argument(
        "--checkout", type=Path, default=None, help="run the server from this source tree (default: this repository)"
    )
    parser.add_argument(
        "--package-source", default=None, help="passed to the matplotlib servers as --package-source (only when given)"
    )
    parser.add_argument(
        "--no-peer",
        action="store_true",
        help="do not set up and run pydantic's mcp-run-python (its targets then use a figure from an earlier run)",
    )
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


async def amain(
    plan: Plan, node: str, pyodide_dir: Path, errlog: IO[str], peer: peer_mod.Launch | None
) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    return await benchmark(plan, node, pyodide_dir, errlog, peer)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan(
        repeat=args.repeat or (3 if args.quick else 5),
        warm_calls=args.warm_calls or (100 if args.quick else 300),
        mpl_repeat=1 if args.quick else 3,
        big_repeat=1 if args.quick else 3,
        http_repeat=1 if args.quick else 2,
        growth_calls=200 if args.quick else GROWTH_CALLS,
        package_source=args.package_source,
        quick=args.quick,
    )
    plan.mpl_repeat = min(plan.mpl_repeat, plan.repeat)
    plan.big_repeat = min(plan.big_repeat, plan.repeat)
    plan.http_repeat = min(plan.http_repeat, plan.repeat)

    global SERVER_CWD
    if args.checkout:
        SERVER_CWD = args.checkout.resolve()
    from mcp_pyodide._node import find_node
    from mcp_pyodide._runtime_files import ensure_runtime

    node = find_node(None)
    pyodide_dir = ensure_runtime(node).pyodide_dir
    machine = machine_info(node.path)
    machine["server_checkout"] = str(SERVER_CWD)
    peer: peer_mod.Launch | None = None
    peer_unavailable = "--no-peer given"
    if not args.no_peer:
        try:
            peer = peer_mod.ensure()
            machine["peer"] = peer.versions
        except peer_mod.PeerSetupError as exc:
            peer_unavailable = f"set-up failed: {exc}"
            log(f"mcp-run-python {peer_unavailable}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    stderr_log = args.json.with_name(args.json.stem + "-stderr.log")
    log(f"Node {machine['node']}, Pyodide in {pyodide_dir}; child stderr goes to {stderr_log}")
    started = time.perf_counter()
    try:
        with stderr_log.open("w") as errlog:
            result = asyncio.run(amain(plan, node.path, pyodide_dir, errlog, peer))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - report the cause plainly, not as nested exception groups
        cause: BaseException = exc
        while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
            cause = cause.exceptions[0]
        tail = stderr_log.read_text(errors="replace").splitlines()[-15:] if stderr_log.exists() else []
        log(f"benchmark failed: {type(cause).__name__}: {cause}")
        print("\n".join(["last lines of the child stderr log:", *tail]), file=sys.stderr)
        return 1
    finally:
        killed = REAPER.kill_all()
        if killed:
            log(f"killed leftover processes {killed}")
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    machine["pyodide"] = result["raw"]["bare"][0]["pyodide_version"]
    machine["total_seconds"] = round(time.perf_counter() - started, 1)
    raw_unavailable = result["raw"].get("peer_unavailable")
    if peer is None or raw_unavailable:
        machine["peer_unavailable"] = raw_unavailable[0] if raw_unavailable else peer_unavailable
    metrics = analyse(result["raw"], result["mpl_unavailable"], machine.get("peer_unavailable"))
    md = markdown(metrics, machine, plan)

    print(f"\nmcp-pyodide benchmark — {machine['date']}")
    print(
        f"Machine: {machine['cpu']}, {machine['logical_cores']} logical cores, {machine['ram_gib']} GiB RAM; "
        f"{machine['os']}"
    )
    print(
        f"Node {machine['node']}, Python {machine['python']}, Pyodide {machine['pyodide']}, mcp {machine['mcp']}, "
        f"git {machine['git'].get('commit')}{' (dirty)' if machine['git'].get('dirty') else ''}; "
        f"load average {machine['loadavg_start']} → {machine['loadavg_end']}"
    )
    print(peer_line(machine))
    print(
        f"{plan.repeat} repetitions (contenders interleaved), {result['per_rep_calls']} timed warm calls each; "
        f"took {machine['total_seconds']} s\n"
    )
    print(plain_table(rows(metrics)))
    print("\nTargets:")
    print("\n".join(target_lines(metrics)))
    print("\nMarkdown (for the README):\n")
    print(md)

    payload = {"machine": machine, "plan": plan.__dict__, "metrics": metrics, "raw": result["raw"]}
    args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    args.json.with_suffix(".md").write_text(md + "\n")
    log(f"wrote {args.json} and {args.json.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
