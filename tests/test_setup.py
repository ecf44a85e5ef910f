"""What a newcomer meets first: Node checks, and the built wheel carrying the Node runtime."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from support import REPO


def run_server(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_pyodide", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def test_missing_node_stops_start_up_naming_what_to_install() -> None:
    proc = run_server("--node", "/nonexistent/node")
    assert proc.returncode == 1
    assert "Node.js 20 or newer" in proc.stderr and "/nonexistent/node" in proc.stderr
    assert "nodejs.org" in proc.stderr


def test_too_old_node_is_refused_with_the_versions_that_work(tmp_path: Path) -> None:
    fake = tmp_path / "node"
    fake.write_text("#!/bin/sh\necho v18.19.0\n")
    fake.chmod(0o755)
    proc = run_server(env={"MCP_PYODIDE_NODE": str(fake)})
    assert proc.returncode == 1
    assert "v18.19.0, too old" in proc.stderr and "Node.js 20 or newer" in proc.stderr


def test_the_built_wheel_carries_the_node_runtime_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = dist.glob("mcp_pyodide-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    for script in sorted((REPO / "node_runtime").glob("*.mjs")):
        assert (target / "mcp_pyodide" / "node_runtime" / script.name).exists(), f"{script.name} is not in the wheel"
    assert (target / "mcp_pyodide" / "node_runtime" / "package-lock.json").exists()
    bundled = target / "mcp_pyodide" / "node_runtime" / "node_modules" / "pyodide"
    assert (bundled / "pyodide.asm.wasm").is_file() and (bundled / ".bundled").is_file()
    assert not (target / "mcp_pyodide" / "node_runtime" / "node_modules" / "ws").exists()
    # First start needs nothing but Node.js: no runtime cached, and npm unreachable.
    env = {
        **os.environ,
        "PYTHONPATH": str(target),
        "MCP_PYODIDE_CACHE_ROOT": str(tmp_path / "empty-cache"),
        "npm_config_registry": "http://127.0.0.1:9/",
    }
    proc = subprocess.run(
        [sys.executable, "-c", "import mcp_pyodide._runtime_files as f; print(f.host_dir())"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    assert proc.stdout.strip() == str(target / "mcp_pyodide" / "node_runtime")
    ran = subprocess.run(
        [sys.executable, "-m", "mcp_pyodide", "run", "-c", "print('from the wheel'); 6 * 7"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert "from the wheel" in ran.stdout and "42" in ran.stdout
    assert "installing" not in ran.stderr and not (tmp_path / "empty-cache" / "node-runtime").exists()


def test_an_unreachable_npm_registry_fails_fast_in_one_line(tmp_path: Path) -> None:
    """A checkout has no bundled runtime; with npm unreachable, start-up ends in seconds with the fix."""
    started = time.monotonic()
    proc = run_server(
        "--output-dir",
        str(tmp_path / "out"),
        env={"MCP_PYODIDE_CACHE_ROOT": str(tmp_path / "empty"), "npm_config_registry": "http://127.0.0.1:9/"},
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    assert elapsed < 30, f"took {elapsed:.1f} s"
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("mcp-pyodide: installing")]
    assert len(errors) == 1, proc.stderr
    assert "npm cannot reach its registry at http://127.0.0.1:9/ (ECONNREFUSED)" in errors[0]
    assert "fix:" in errors[0] and "install-runtime" in errors[0]
    assert not list((tmp_path / "empty" / "node-runtime").glob("*/.installed"))


def test_every_runtime_script_is_readable_by_the_node_process() -> None:
    """Node's permission model grants read access only to HOST_FILES: a new .mjs must be listed."""
    from mcp_pyodide._runtime_files import HOST_FILES

    scripts = {p.name for p in (REPO / "node_runtime").glob("*.mjs")}
    assert scripts <= set(HOST_FILES), f"not granted: {sorted(scripts - set(HOST_FILES))}"
