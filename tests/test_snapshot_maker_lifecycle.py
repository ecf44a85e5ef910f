"""The Node process that makes the first memory snapshot never outlives the server, however it ends."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from support import ALLOW_ALL, REPO, HttpServerProcess, fresh_cache_root, spawn_stdio_server, wait_for_nodes


def _fresh_server(tmp_path: Path) -> tuple[subprocess.Popen[bytes], list[psutil.Process], Path]:
    """A server on a cache without a snapshot, once both its Node processes (serving, maker) run."""
    root = fresh_cache_root(tmp_path)
    proc = spawn_stdio_server(
        "--policy", str(ALLOW_ALL), stderr=subprocess.DEVNULL, env={**os.environ, "MCP_PYODIDE_CACHE_ROOT": str(root)}
    )
    nodes = wait_for_nodes(proc, count=2)
    assert len(nodes) == 2, "the server did not start the snapshot maker"
    return proc, nodes, root / "snapshots"


def _assert_all_gone(nodes: list[psutil.Process], within: float = 10) -> None:
    deadline = time.monotonic() + within
    alive = nodes
    while time.monotonic() < deadline:
        alive = [n for n in nodes if n.is_running() and n.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return
        time.sleep(0.05)
    for node in alive:
        node.kill()
    pytest.fail(f"Node process(es) {[n.pid for n in alive]} outlived the server")


@pytest.mark.parametrize("how", ["stdin", "sigterm", "sigkill"])
def test_a_server_ended_while_the_maker_boots_leaves_no_node_and_no_partial_image(tmp_path: Path, how: str) -> None:
    proc, nodes, snapshots = _fresh_server(tmp_path)
    started = time.monotonic()
    if how == "stdin":
        assert proc.stdin is not None
        proc.stdin.close()
    else:
        os.kill(proc.pid, signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    code = proc.wait(20)
    took = time.monotonic() - started
    _assert_all_gone(nodes)
    if how == "stdin":
        assert code == 0
    if how != "sigkill":
        assert took < 5, f"shutdown took {took:.1f} s with the maker still booting"
    assert not list(snapshots.glob("*.tmp"))


def test_http_sessions_on_a_fresh_cache_share_one_maker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fresh_cache_root(tmp_path)
    monkeypatch.setenv("MCP_PYODIDE_CACHE_ROOT", str(root))
    server = HttpServerProcess(tmp_path, None, "--policy", str(ALLOW_ALL))
    peak: list[int] = []

    async def session() -> None:
        async with streamable_http_client(server.url) as (read, write), ClientSession(read, write) as client:
            await client.initialize()
            result = await client.call_tool("pyodide_execute", {"code": "6 * 7"})
            assert result.structured_content is not None and result.structured_content["result"] == "42"
            peak.append(len(server.node_processes()))
            await asyncio.sleep(0.5)  # the three sessions are all open at once

    async def three() -> None:
        await asyncio.wait_for(asyncio.gather(session(), session(), session()), 180)

    try:
        asyncio.run(three())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "memory snapshot for fast starts" not in server.log_text():
            time.sleep(0.1)
        assert server.log_text().count("memory snapshot for fast starts") == 1
        assert max(peak) <= 4  # three serving processes and one maker
        assert len(list((root / "snapshots").glob("*.bin"))) == 1
    finally:
        assert server.stop() == 0


def test_a_sync_sandbox_closed_at_once_on_a_fresh_cache_still_saves_the_snapshot(tmp_path: Path) -> None:
    """Its loop is stopped and closed, not run down: a maker left on it died silently, pending."""
    root = fresh_cache_root(tmp_path)
    code = "from mcp_pyodide.sync import SyncSandbox\nwith SyncSandbox() as sb:\n    print(sb.execute('6*7').result)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "MCP_PYODIDE_CACHE_ROOT": str(root)},
    )
    assert proc.returncode == 0 and proc.stdout == "42\n", proc.stderr
    assert "destroyed but it is pending" not in proc.stderr and "Event loop is closed" not in proc.stderr
    assert len(list((root / "snapshots").glob("*.bin"))) == 1
