"""Real HTTP server processes for the auth and shared-state tests, and a client that carries a bearer token."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from support import REPO, runtime_nodes, wait_listening

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HttpServerProcess:
    """`mcp-pyodide --transport streamable-http` on a free loopback port, with a policy of the test's choosing."""

    def __init__(self, tmp: Path, policy: dict[str, Any], *extra: str, name: str = "server") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.output_dir = tmp / f"{name}-out"
        policy_path = tmp / f"{name}-policy.json"
        policy_path.write_text(json.dumps(policy))
        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mcp_pyodide",
                "--transport",
                "streamable-http",
                "--port",
                str(self.port),
                "--policy",
                str(policy_path),
                "--output-dir",
                str(self.output_dir),
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=dict(os.environ),
        )
        wait_listening(self.port, self.proc, self.log_path, START_TIMEOUT_S)

    def node_processes(self) -> list[psutil.Process]:
        return runtime_nodes(psutil.Process(self.proc.pid))

    def log_text(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


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
