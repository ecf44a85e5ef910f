"""A Redis server of the test's own and a client that carries a bearer token, for the auth and shared-state tests.

`HttpServerProcess` (the server under test) lives in support.py and is re-exported here.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from support import HttpServerProcess, free_port, wait_listening

__all__ = ["HttpServerProcess", "RedisServer", "connect", "execute"]


@contextlib.asynccontextmanager
async def connect(url: str, token: str | None = None) -> AsyncIterator[ClientSession]:
    """The official MCP client over Streamable HTTP (handshake era), with ``Authorization: Bearer token``."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with (
        create_mcp_http_client(headers=headers) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def execute(session: ClientSession, code: str) -> dict[str, Any]:
    result = await session.call_tool("pyodide_execute", {"code": code})
    assert result.structured_content is not None or result.is_error, result
    text = " ".join(getattr(block, "text", "") for block in result.content)
    return {**(result.structured_content or {}), "is_error": result.is_error, "text": text}


class RedisServer:
    """A real `redis-server` of the test's own, on a free loopback port, in a temp folder (no persistence)."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server is not installed (.ci/run installs it: apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(self.port, self.proc, self.dir / "redis.log", 20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.proc = None
