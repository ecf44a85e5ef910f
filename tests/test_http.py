"""Streamable HTTP: a real server process, the real MCP client, one interpreter per MCP session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from support import HttpServerProcess, runs_per_session_policy

REPO = Path(__file__).resolve().parent.parent
SESSION_LIMIT = 4


SESSION_POLICY = runs_per_session_policy(SESSION_LIMIT)


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServerProcess]:
    server = HttpServerProcess(tmp_path, SESSION_POLICY)
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[ClientSession]:
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def run(session: ClientSession, code: str) -> dict[str, Any]:
    result = await session.call_tool("pyodide_execute", {"code": code})
    assert result.structured_content is not None, result
    return {**result.structured_content, "is_error": result.is_error}


def wait_for(predicate: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())


def test_sessions_get_their_own_interpreter_and_quota_and_sigterm_ends_every_node(
    http_server: HttpServerProcess,
) -> None:
    nodes_seen: list[psutil.Process] = []

    async def scenario() -> None:
        async with connect(http_server.url) as a, connect(http_server.url) as b:
            assert (await run(a, "x = 'from a'"))["error"] is None
            assert (await run(b, "x = 'from b'"))["error"] is None
            assert (await run(a, "x"))["result"] == "'from a'"  # state persists within a session
            assert (await run(b, "x"))["result"] == "'from b'"  # and is separate between sessions
            assert (await run(a, "y = 1"))["error"] is None
            assert (await run(a, "y"))["result"] == "1"
            # a has used its 4 runs, b only 2: the limit follows the MCP session, not the server.
            denied = await a.call_tool("pyodide_execute", {"code": "1"})
            assert denied.is_error
            assert "[POLICY DENIED]" in str(denied.content)
            assert (await run(b, "x"))["result"] == "'from b'"
            nodes_seen.extend(http_server.node_processes())
            assert len(nodes_seen) == 2, "one interpreter per session"
            async with connect(http_server.url) as c:  # a new session starts with a fresh quota
                assert (await run(c, "'x' in globals()"))["result"] == "False"
                assert len(http_server.node_processes()) == 3
            # c ended (the client sent DELETE): its interpreter goes with it
            assert await asyncio.to_thread(wait_for, lambda: len(http_server.node_processes()) == 2)

    asyncio.run(asyncio.wait_for(scenario(), 240))
    assert http_server.stop() == 0
    assert wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in nodes_seen))
    log = http_server.log_path.read_text()
    assert "received SIGTERM" in log and "Traceback" not in log


def test_sigint_also_shuts_down_cleanly(http_server: HttpServerProcess) -> None:
    async def scenario() -> None:
        async with connect(http_server.url) as a:
            assert (await run(a, "1 + 1"))["result"] == "2"

    asyncio.run(asyncio.wait_for(scenario(), 120))
    assert wait_for(lambda: len(http_server.node_processes()) == 0)  # session ended: interpreter released

    async def keep_open() -> None:
        async with connect(http_server.url) as a:
            await run(a, "1")
            nodes = http_server.node_processes()
            assert nodes
            http_server.proc.send_signal(signal.SIGINT)
            assert await asyncio.to_thread(http_server.proc.wait, 30) == 0
            assert await asyncio.to_thread(wait_for, lambda: not any(p.is_running() for p in nodes))

    with contextlib.suppress(Exception):  # the client notices the server going away
        asyncio.run(asyncio.wait_for(keep_open(), 120))
    assert http_server.proc.poll() == 0
    assert "Traceback" not in http_server.log_path.read_text()


def test_a_busy_interpreter_is_never_taken_for_a_new_session(tmp_path: Path) -> None:
    server = HttpServerProcess(tmp_path, SESSION_POLICY, "--max-sessions", "1")
    try:

        async def scenario() -> None:
            async with connect(server.url) as a, connect(server.url) as b:
                assert (await run(a, "kept = 'a'"))["error"] is None
                await asyncio.sleep(1.2)  # a is idle now: b may take its interpreter
                busy_loop = "import time\nt = time.time()\nwhile time.time() - t < 4: pass\n'a done'"
                long_run = asyncio.ensure_future(run(a, busy_loop))
                await asyncio.sleep(2.0)  # a is running, and has been for more than a second
                refused = await b.call_tool("pyodide_execute", {"code": "'b'"})
                assert refused.is_error and "in use by other sessions" in str(refused.content)
                assert "this call did not count against the rate limit" in str(refused.content)
                assert (await long_run)["result"] == "'a done'"  # not killed to make room
                await asyncio.sleep(1.2)
                assert (await run(b, "'b'"))["result"] == "'b'"  # idle now: a's interpreter made room
                for _ in range(SESSION_LIMIT - 1):  # b has all its quota: the refused call was given back
                    assert (await run(b, "1"))["result"] == "1"
                assert "[POLICY DENIED]" in str((await b.call_tool("pyodide_execute", {"code": "1"})).content)
                await asyncio.sleep(1.2)
                assert (await run(a, "'kept' in globals()"))["result"] == "False"  # a starts over

        asyncio.run(asyncio.wait_for(scenario(), 180))
        assert server.stop() == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()


def test_sessionless_protocol_requests_are_served(http_server: HttpServerProcess) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/list",
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        },
    }
    request = urllib.request.Request(
        http_server.url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "mcp-protocol-version": "2026-07-28",
            "mcp-method": "tools/list",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        payload = response.read().decode()
    assert response.status == 200 and "pyodide_execute" in payload and '"ttlMs"' in payload


def test_a_non_loopback_host_is_refused_without_allow_remote(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mcp_pyodide",
            "--transport",
            "streamable-http",
            "--host",
            "0.0.0.0",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert "not a loopback address" in proc.stderr and "--allow-remote" in proc.stderr
