"""Shared fixtures: real servers over stdio, started once per module where state allows."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from support import ALLOW_ALL, REPO, ServerHandle


@pytest.fixture(scope="session", autouse=True)
def machine_caches_made() -> None:
    """On a fresh machine the first servers make the snapshot, and the first imports of numpy and
    matplotlib the bytecode cache and font list, each in a Node process of its own for a few
    seconds; `run` waits for them, so tests that count Node processes see only their own."""
    packages = os.environ.get("MCP_PYODIDE_TEST_PACKAGES")
    command = [sys.executable, "-m", "mcp_pyodide", "run"]
    command += ["--package-source", packages, "-c", "import matplotlib.pyplot, six"] if packages else ["-c", "1"]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerHandle]:
    """A server with no rate limit, shared by one test module."""
    handle = ServerHandle("--policy", ALLOW_ALL).start()
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture
def fresh_server() -> Iterator[ServerHandle]:
    """A server of its own, for tests that kill or reset things."""
    handle = ServerHandle("--policy", ALLOW_ALL).start()
    try:
        yield handle
    finally:
        handle.close()
