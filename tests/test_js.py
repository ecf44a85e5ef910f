"""The JavaScript unit tests (tests/js, `node --test`) and the protocol version check on the Node side."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from mcp_pyodide._node import find_node
from mcp_pyodide._protocol import PROTOCOL_VERSION
from mcp_pyodide._runtime_files import host_dir
from mcp_pyodide._transport import Transport

TESTS = Path(__file__).resolve().parent


def test_the_javascript_unit_tests_pass() -> None:
    node = find_node(None)
    files = sorted(str(p) for p in (TESTS / "js").glob("*.test.mjs"))
    proc = subprocess.run([node.path, "--test", *files], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_node_side_refuses_another_protocol_version() -> None:
    async def main() -> dict[str, object]:
        node = find_node(None)
        process = await asyncio.create_subprocess_exec(
            node.path,
            str(host_dir() / "host.mjs"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert process.stdin is not None and process.stdout is not None
        transport = Transport(process.stdout, process.stdin)
        try:
            await transport.send({"id": 1, "kind": "init", "payload": {"protocolVersion": PROTOCOL_VERSION + 1}})
            reply = await asyncio.wait_for(transport.receive(), 30)
        finally:
            transport.close()
            await asyncio.wait_for(process.wait(), 30)
        assert reply is not None
        return reply

    reply = asyncio.run(main())
    assert reply["kind"] == "error"
    payload = reply["payload"]
    assert isinstance(payload, dict) and payload["code"] == "protocol"
    assert "another mcp-pyodide release" in str(payload["message"])
