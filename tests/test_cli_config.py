"""`mcp-pyodide config`: the printed entries, merging into a client's file, and that the entry starts a server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_pyodide", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def test_claude_entry_uses_the_installed_command_and_passes_server_options() -> None:
    proc = cli("config", "claude", "--", "--mount", "data=~/data:ro", "--timeout", "5000")
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(proc.stdout)["mcpServers"]["pyodide"]
    assert Path(entry["command"]).is_absolute()
    assert Path(entry["command"]).name == "mcp-pyodide" or entry["args"][:2] == ["-m", "mcp_pyodide"]
    assert entry["args"][-4:] == ["--mount", "data=~/data:ro", "--timeout", "5000"]


def test_uvx_name_and_other_clients() -> None:
    claude = json.loads(cli("config", "claude", "--uvx", "--name", "py").stdout)
    assert claude == {"mcpServers": {"py": {"command": "uvx", "args": ["mcp-pyodide"]}}}
    cursor = json.loads(cli("config", "cursor", "--uvx").stdout)
    assert cursor == {"mcpServers": {"pyodide": {"command": "uvx", "args": ["mcp-pyodide"]}}}
    vscode = json.loads(cli("config", "vscode", "--uvx", "--", "--isolation", "standard").stdout)
    assert vscode == {
        "servers": {"pyodide": {"type": "stdio", "command": "uvx", "args": ["mcp-pyodide", "--isolation", "standard"]}}
    }


def test_write_merges_keeps_everything_else_and_backs_up(tmp_path: Path) -> None:
    path = tmp_path / "claude_desktop_config.json"
    original: dict[str, Any] = {
        "globalShortcut": "Ctrl+Space",
        "mcpServers": {"other": {"command": "other-server", "args": ["--x"]}, "pyodide": {"command": "old"}},
    }
    path.write_text(json.dumps(original))
    proc = cli("config", "claude", "--write", "--config-file", str(path), "--uvx", "--", "--timeout", "9000")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(path.read_text())
    assert data["globalShortcut"] == "Ctrl+Space"
    assert data["mcpServers"]["other"] == {"command": "other-server", "args": ["--x"]}
    assert data["mcpServers"]["pyodide"] == {"command": "uvx", "args": ["mcp-pyodide", "--timeout", "9000"]}
    backups = list(tmp_path.glob("claude_desktop_config.json.*.bak"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == original
    assert "backup" in proc.stdout


def test_write_creates_a_missing_file_and_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "Claude" / "claude_desktop_config.json"
    assert cli("config", "claude", "--write", "--config-file", str(path), "--name", "py").returncode == 0
    assert list(json.loads(path.read_text())["mcpServers"]) == ["py"]


def test_write_uses_the_platform_default_place(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    assert cli("config", "claude", "--write", "--uvx", env=env).returncode == 0
    assert (tmp_path / "cfg" / "Claude" / "claude_desktop_config.json").exists()
    assert cli("config", "cursor", "--write", "--uvx", env=env).returncode == 0
    assert "pyodide" in json.loads((tmp_path / ".cursor" / "mcp.json").read_text())["mcpServers"]


def test_invalid_json_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "claude_desktop_config.json"
    path.write_text('{"mcpServers": {,}')
    proc = cli("config", "claude", "--write", "--config-file", str(path))
    assert proc.returncode == 1
    assert "not valid JSON" in proc.stderr and "not changed" in proc.stderr
    assert path.read_text() == '{"mcpServers": {,}'
    assert list(tmp_path.iterdir()) == [path]  # no backup, no temp file


def test_the_printed_entry_starts_a_working_server(tmp_path: Path) -> None:
    """What Claude Desktop would do with the entry: start it and call a tool with the real client."""
    proc = cli("config", "claude", "--", "--output-dir", str(tmp_path / "out"))
    entry = json.loads(proc.stdout)["mcpServers"]["pyodide"]

    async def call() -> types.CallToolResult:
        params = StdioServerParameters(command=entry["command"], args=entry["args"], env=dict(os.environ))
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await session.call_tool("pyodide_execute", {"code": "1 + 1"})

    result = asyncio.run(asyncio.wait_for(call(), 180))
    assert not result.is_error
    assert result.structured_content is not None and result.structured_content["result"] == "2"
