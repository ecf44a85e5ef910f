#!/usr/bin/env python3
"""Run the whole test suite from a fresh checkout: one command, nothing else to install by hand.

Creates `.venv` (if missing), installs the package with its test extras,
installs and verifies the Node-side runtime, prepares the verified offline
Pyodide package set in `test-packages/`, then runs pytest. Extra arguments go
to pytest, e.g. `python3 scripts/test.py -k policy -x`.
Standard library only, so it runs with any Python 3.11+.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("MCP_PYODIDE_VENV", REPO / ".venv"))


def run(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=REPO, env=env)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def main() -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may be run by any python3
        print(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}", file=sys.stderr)
        return 2
    if not venv_python().exists():
        venv.create(VENV, with_pip=True)
    python = venv_python()
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", ".[test,auth,redis,ray]")
    run(python, "-m", "mcp_pyodide", "install-runtime")
    lock = subprocess.run(
        [str(python), "-c", "from mcp_pyodide.cli import runtime_lock_path; print(runtime_lock_path())"],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout.strip()
    packages = REPO / "test-packages"
    run(python, "scripts/prepare_test_packages.py", "--lock", lock, "--target", packages)
    env = {**os.environ, "MCP_PYODIDE_TEST_PACKAGES": str(packages)}
    # The whole suite, on the Node.js the product picks by default (the newest it finds: with the
    # test extras that is Node 24 from PyPI)...
    first = subprocess.run([str(python), "-m", "pytest", *sys.argv[1:]], cwd=REPO, env=env).returncode
    # ...and the red-team suite again on the machine's own Node.js, when that is another version.
    system_node = shutil.which("node")
    default_node = node_version(python, None)
    if system_node and node_version(python, system_node) != default_node:
        print(f"+ red-team suite again on {system_node}", flush=True)
        second = subprocess.run(
            [str(python), "-m", "pytest", "tests/security", *sys.argv[1:]],
            cwd=REPO,
            env={**env, "MCP_PYODIDE_NODE": system_node},
        ).returncode
        return first or second
    return first


def node_version(python: Path, explicit: str | None) -> str:
    """The version of the Node.js the product would use (given `explicit`, or by default)."""
    code = "import sys\nfrom mcp_pyodide._node import find_node\nprint(find_node(sys.argv[1] or None).version_text)"
    return subprocess.run(
        [str(python), "-c", code, explicit or ""], check=True, capture_output=True, text=True, cwd=REPO
    ).stdout.strip()


if __name__ == "__main__":
    raise SystemExit(main())
