"""The Python API: public names from the package, and SyncSandbox for scripts without an event loop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from support import runtime_nodes

import mcp_pyodide
from mcp_pyodide import Mount, Result, RuntimeConfig, SyncSandbox


def node_children() -> list[psutil.Process]:
    return runtime_nodes(psutil.Process(os.getpid()))


def test_public_names_are_exported() -> None:
    for name in (
        "Sandbox",
        "Result",
        "Mount",
        "RuntimeConfig",
        "SyncSandbox",
        "MCPPyodideError",
        "SetupError",
        "RuntimeCrashed",
        "RuntimeUnavailable",
        "MountError",
        "PolicyError",
        "IsolationUnavailable",
    ):
        assert name in mcp_pyodide.__all__ and getattr(mcp_pyodide, name) is not None
    assert issubclass(mcp_pyodide.SetupError, mcp_pyodide.MCPPyodideError)
    with pytest.raises(AttributeError):
        _ = mcp_pyodide.NoSuchThing


def test_importing_the_package_stays_light() -> None:
    code = "import sys, mcp_pyodide; print(any(m.startswith(('mcp.', 'mcp_pyodide.runtime')) for m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "False"


def test_state_persists_errors_are_results_and_node_ends_on_close(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("from the host")
    before = {p.pid for p in node_children()}
    with SyncSandbox(
        mounts=[Mount.create("data", data, read_only=True)],
        output_dir=tmp_path / "out",
        config=RuntimeConfig(timeout_ms=5000),
    ) as sb:
        assert {p.pid for p in node_children()} - before, "a Node process should be running"
        assert sb.execute("x = 20").ok
        result = sb.execute("print(open('/mnt/data/in.txt').read())\nx + 22")
        assert isinstance(result, Result)
        assert (result.stdout, result.value) == ("from the host\n", "42")
        failed = sb.execute("1 / 0")
        assert failed.error is not None and failed.error.type == "ZeroDivisionError"
        written = sb.execute("open('/mnt/output/a.txt', 'w').write('hi')")
        assert written.files == [(tmp_path / "out" / "a.txt").resolve()]
        sb.reset()
        assert sb.execute("'x' in globals()").value == "False"
    assert not ({p.pid for p in node_children()} - before), "the Node process should be gone"
    with pytest.raises(mcp_pyodide.RuntimeUnavailable):
        sb.execute("1")


def test_works_where_an_event_loop_is_already_running(tmp_path: Path) -> None:
    """Like a Jupyter cell: asyncio.run() would fail here, SyncSandbox does not."""

    async def inside_a_loop() -> str | None:
        with SyncSandbox(output_dir=tmp_path) as sb:
            return sb.execute("'from inside'").value

    assert asyncio.run(inside_a_loop()) == "'from inside'"


def test_calls_from_several_threads_are_queued(tmp_path: Path) -> None:
    with SyncSandbox(output_dir=tmp_path) as sb:
        sb.execute("total = 0")
        threads = [threading.Thread(target=sb.execute, args=("total += 1",)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sb.execute("total").value == "8"


def test_streamed_output_callback(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []
    with SyncSandbox(output_dir=tmp_path) as sb:
        sb.execute("import sys\nprint('a')\nprint('b', file=sys.stderr)", on_output=lambda s, t: seen.append((s, t)))
    assert ("stdout", "a\n") in seen and ("stderr", "b\n") in seen
