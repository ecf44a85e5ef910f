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
    if sys.version_info < (3, 11):
        print(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}", file=sys.stderr)
        return 2
    if not venv_python().exists():
        venv.create(VENV, with_pip=True)
    python = venv_python()
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", ".[test]")
    run(python, "-m", "mcp_pyodide", "install-runtime")
    lock = subprocess.run(
        [str(python), "-c", "from mcp_pyodide.cli import runtime_lock_path; print(runtime_lock_path())"],
        check=True, capture_output=True, text=True, cwd=REPO,
    ).stdout.strip()
    packages = REPO / "test-packages"
    run(python, "scripts/prepare_test_packages.py", "--lock", lock, "--target", packages)
    env = {**os.environ, "MCP_PYODIDE_TEST_PACKAGES": str(packages)}
    result = subprocess.run([str(python), "-m", "pytest", *sys.argv[1:]], cwd=REPO, env=env)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
