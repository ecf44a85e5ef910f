"""pytest fixtures for testing code against the sandbox, and MCP clients against the server.

Registered through the `pytest11` entry point, so installing mcp-pyodide is enough:

    def test_numpy_sum(pyodide_sandbox):
        result = pyodide_sandbox.execute("import numpy as np\\nint(np.arange(5).sum())")
        assert result.error is None and result.value == "10"

    def test_over_mcp(pyodide_mcp):
        assert pyodide_mcp.execute("6 * 7").structured_content["result"] == "42"

Override `pyodide_sandbox_options` (keyword arguments for `SyncSandbox`) or
`pyodide_server_args` (command-line options for the server) in a conftest.py
to change mounts, the package source or the policy. Both fixtures are
function-scoped: each test gets a fresh interpreter, and its output goes to
the test's tmp_path, never the user's real output folder.

This module is imported by every pytest run in an environment where
mcp-pyodide is installed, so it imports nothing heavy until a fixture is used.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    import mcp_types as types
    from mcp import ClientSession

    from .sync import SyncSandbox

T = TypeVar("T")
CALL_TIMEOUT_S = 180.0


@pytest.fixture
def pyodide_sandbox_options(tmp_path: Path) -> dict[str, Any]:
    """Keyword arguments for the `pyodide_sandbox` fixture's `SyncSandbox`; override to change them."""
    return {"output_dir": tmp_path / "pyodide-output"}


@pytest.fixture
def pyodide_sandbox(pyodide_sandbox_options: dict[str, Any]) -> Iterator[SyncSandbox]:
    """A started `SyncSandbox` (a fresh interpreter per test), closed after the test."""
    from .sync import SyncSandbox

    with SyncSandbox(**pyodide_sandbox_options) as sandbox:
        yield sandbox


@pytest.fixture
def pyodide_server_args(tmp_path: Path) -> list[str]:
    """Command-line options for the `pyodide_mcp` fixture's server; override to change them."""
    return ["--output-dir", str(tmp_path / "pyodide-output")]


@pytest.fixture
def pyodide_mcp(pyodide_server_args: list[str]) -> Iterator[MCPTestClient]:
    """An MCP client connected over stdio to a fresh `mcp-pyodide` server, closed after the test."""
    client = MCPTestClient(pyodide_server_args)
    client.start()
    try:
        yield client
    finally:
        client.close()


class MCPTestClient:
    """A synchronous face on the real MCP client, for plain (non-async) tests.

    The client and its server process live on an event loop in a background
    thread; each method hands one coroutine to it and waits for the answer.
    """

    def __init__(self, server_args: list[str], *, env: dict[str, str] | None = None) -> None:
        self.server_args = list(server_args)
        self.env = {**os.environ, **(env or {})}
        self.session: ClientSession | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pyodide-mcp-client", daemon=True)
        self._ready: Future[None] = Future()
        self._main: Future[None] | None = None
        self._stop: asyncio.Event | None = None

    def start(self) -> MCPTestClient:
        self._thread.start()
        self._main = asyncio.run_coroutine_threadsafe(self._hold_open(), self._loop)
        try:
            self._ready.result(CALL_TIMEOUT_S)
        except BaseException:
            self._stop_loop()
            raise
        return self

    async def _hold_open(self) -> None:
        """Open and close the client in one task, as anyio's scopes require."""
        from mcp import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client

        self._stop = asyncio.Event()
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "mcp_pyodide", *self.server_args], env=self.env
        )
        try:
            async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                self.session = session
                self._ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise
        finally:
            self.session = None

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _session(self) -> ClientSession:
        if self.session is None:
            raise RuntimeError("the MCP client is not connected")
        return self.session

    # -- what tests call -------------------------------------------------------------------

    def call(
        self, name: str, arguments: dict[str, Any] | None = None, timeout: float = CALL_TIMEOUT_S
    ) -> types.CallToolResult:
        """Call a tool; a tool's own failure is `result.is_error`, not an exception."""
        return self._run(self._session().call_tool(name, arguments or {}), timeout)

    def list_tools(self) -> list[types.Tool]:
        return self._run(self._session().list_tools()).tools

    def execute(self, code: str, timeout_ms: int | None = None) -> types.CallToolResult:
        """The execute tool; `result.structured_content` has stdout, stderr, result, error, figures, files."""
        arguments: dict[str, Any] = {"code": code}
        if timeout_ms is not None:
            arguments["timeout"] = timeout_ms
        from .tool_names import ToolName

        return self.call(ToolName.EXECUTE, arguments)

    @staticmethod
    def text(result: types.CallToolResult) -> str:
        """The result's text blocks joined, as a model would read them."""
        import mcp_types as types

        return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))

    def close(self) -> None:
        try:
            if self._stop is not None and self._main is not None:
                self._loop.call_soon_threadsafe(self._stop.set)
                self._main.result(60)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
