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


def test_claude_entry_uses_the_installed_command_and_passes_server_options(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    env = {"HOME": str(tmp_path)}
    proc = cli("config", "claude", "--", "--mount", "data=~/data:ro", "--timeout", "5000", env=env)
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(proc.stdout)["mcpServers"]["pyodide"]
    assert Path(entry["command"]).is_absolute()
    assert Path(entry["command"]).name == "mcp-pyodide" or entry["args"][:2] == ["-m", "mcp_pyodide"]
    assert entry["args"][-4:] == ["--mount", "data=~/data:ro", "--timeout", "5000"]


def test_uvx_form_names_where_this_installation_came_from() -> None:
    """Not on PyPI yet: `uvx mcp-pyodide` alone fails, so the entry says `--from` this checkout."""
    claude = json.loads(cli("config", "claude", "--uvx", "--name", "py").stdout)
    assert claude == {"mcpServers": {"py": {"command": "uvx", "args": ["--from", str(REPO), "mcp-pyodide"]}}}
    cursor = json.loads(cli("config", "cursor", "--uvx").stdout)
    assert cursor == {"mcpServers": {"pyodide": {"command": "uvx", "args": ["--from", str(REPO), "mcp-pyodide"]}}}
    vscode = json.loads(cli("config", "vscode", "--uvx", "--", "--isolation", "standard").stdout)
    assert vscode == {
        "servers": {
            "pyodide": {
                "type": "stdio",
                "command": "uvx",
                "args": ["--from", str(REPO), "mcp-pyodide", "--isolation", "standard"],
            }
        }
    }


def test_install_source_reads_how_a_wheel_or_git_install_was_made(monkeypatch: Any, tmp_path: Path) -> None:
    from mcp_pyodide.commands import config

    class Dist:
        def __init__(self, text: str) -> None:
            self.text = text

        def read_text(self, name: str) -> str:
            return self.text

    monkeypatch.setattr(config, "__file__", str(tmp_path / "site" / "mcp_pyodide" / "commands" / "config.py"))
    git = '{"url": "https://github.com/me/mcp-pyodide", "vcs_info": {"vcs": "git", "commit_id": "abc123"}}'
    monkeypatch.setattr("importlib.metadata.distribution", lambda name: Dist(git))
    assert config.install_source() == "git+https://github.com/me/mcp-pyodide@abc123"
    wheel = '{"url": "file:///tmp/dist/mcp_pyodide-0.1.0-py3-none-any.whl", "archive_info": {}}'
    monkeypatch.setattr("importlib.metadata.distribution", lambda name: Dist(wheel))
    assert config.install_source() == "/tmp/dist/mcp_pyodide-0.1.0-py3-none-any.whl"
    monkeypatch.setattr("importlib.metadata.distribution", lambda name: Dist(""))
    assert config.install_source() == "mcp-pyodide"  # from an index: the short form


def test_an_entry_that_would_start_a_dead_server_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "claude_desktop_config.json"
    missing = tmp_path / "no-such-folder"
    cases = {
        f"data={missing}:ro": "does not exist",
        "data=relative/folder": "use an absolute path",
    }
    for spec, expected in cases.items():
        proc = cli("config", "claude", "--write", "--config-file", str(path), "--", "--mount", spec)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and expected in proc.stderr and "--mount" in proc.stderr
    bad_option = cli("config", "claude", "--write", "--config-file", str(path), "--", "--timeout", "-5")
    assert bad_option.returncode == 2 and "--timeout" in bad_option.stderr and "greater than zero" in bad_option.stderr
    bad_policy = tmp_path / "bad.json"
    bad_policy.write_text('{"version": "1", "default": "x"}')
    refused = cli("config", "cursor", "--", "--policy", str(bad_policy))
    assert refused.returncode == 2 and f"policy file {bad_policy}" in refused.stderr and refused.stdout == ""
    assert not path.exists() and not missing.exists()  # nothing written


def test_write_merges_keeps_everything_else_and_backs_up(tmp_path: Path) -> None:
    path = tmp_path / "claude_desktop_config.json"
    original: dict[str, Any] = {
        "globalShortcut": "Ctrl+Space",
        "mcpServers": {"other": {"command": "other-server", "args": ["--x"]}, "pyodide": {"command": "old"}},
    }
    path.write_text(json.dumps(original))
    proc = cli("config", "claude", "--write", "--config-file", str(path), "--", "--timeout", "9000")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(path.read_text())
    assert data["globalShortcut"] == "Ctrl+Space"
    assert data["mcpServers"]["other"] == {"command": "other-server", "args": ["--x"]}
    assert data["mcpServers"]["pyodide"]["args"][-2:] == ["--timeout", "9000"]
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
