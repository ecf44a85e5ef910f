"""What a newcomer sees when they get something wrong: one clear line, and a server that stays up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from support import REPO, spawn_stdio_server


def cli(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_pyodide", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def test_a_bad_option_is_one_line_naming_it_and_the_rule_not_serve() -> None:
    proc = cli("--timeout", "-5")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mcp-pyodide: argument --timeout: '-5' must be greater than zero (options: mcp-pyodide serve --help)"
    ]
    typed = cli("serve", "--max-output", "lots")
    assert typed.returncode == 2 and len(typed.stderr.strip().splitlines()) == 1
    assert typed.stderr.startswith("mcp-pyodide serve: argument --max-output: 'lots' is not a whole number")


def test_a_bad_environment_variable_is_named() -> None:
    proc = cli(env={"MCP_PYODIDE_TIMEOUT": "-5"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "mcp-pyodide: MCP_PYODIDE_TIMEOUT='-5' must be greater than zero"
    assert "MCP_PYODIDE_TIMEOUT='soon' is not a whole number" in cli(env={"MCP_PYODIDE_TIMEOUT": "soon"}).stderr


def test_an_invalid_policy_file_is_called_the_policy(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "1", "default": "maybe"}')
    served = cli("--policy", str(bad))
    assert served.returncode == 2
    assert served.stderr.startswith(f"mcp-pyodide: policy file {bad}: default: expected")
    checked = cli("policy", "check", str(bad))
    assert checked.returncode == 1 and checked.stderr.startswith(f"invalid policy file {bad}: default:")
    ran = cli("run", "-c", "1", "--policy", str(bad))
    assert ran.returncode == 2 and ran.stderr.startswith(f"mcp-pyodide run: policy file {bad}: default:")


def test_lines_that_are_not_json_rpc_get_an_error_reply_and_a_log_line(tmp_path: Path) -> None:
    """JSON-RPC 2.0: a parse error is answered with id null; the server stays up for the next request."""
    proc = spawn_stdio_server("--output-dir", str(tmp_path / "out"), text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write('hello\n{"not": "json-rpc"}\n{"jsonrpc": "2.0", "id": 7, "method": "ping"}\n')
        proc.stdin.flush()
        replies = [json.loads(proc.stdout.readline()) for _ in range(3)]
    finally:
        proc.stdin.close()
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read() if proc.stderr else ""
    assert replies[0] == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32700, "message": replies[0]["error"]["message"]},
    }
    assert "not valid JSON" in replies[0]["error"]["message"]
    assert replies[1]["id"] is None and replies[1]["error"]["code"] == -32600
    assert replies[2] == {"jsonrpc": "2.0", "id": 7, "result": {}}
    assert "ignored a line on stdin (Parse error: the line is not valid JSON): 'hello\\n'" in stderr


def test_a_notebook_name_outside_the_output_folder_or_over_http_is_refused(tmp_path: Path) -> None:
    climbing = cli("--notebook", "../escape.ipynb", "--output-dir", str(tmp_path / "out"))
    assert climbing.returncode == 2
    assert climbing.stderr.startswith("mcp-pyodide: --notebook: '../escape.ipynb': '..' and '.' are not allowed")
    http = cli("--notebook", "s.ipynb", "--transport", "streamable-http", "--output-dir", str(tmp_path / "out"))
    assert http.returncode == 2 and "--notebook works with stdio only" in http.stderr
