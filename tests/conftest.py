"""Shared fixtures: real servers over stdio, started once per module where state allows."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from support import ALLOW_ALL, REPO, ServerHandle


@pytest.fixture(scope="session", autouse=True)
def memory_snapshot_made() -> None:
    """On a fresh machine the first servers make the snapshot in a second Node process for a few
    seconds; `run` waits for it, so tests that count Node processes see only their own."""
    subprocess.run(
        [sys.executable, "-m", "mcp_pyodide", "run", "-c", "1"], cwd=REPO, check=True, capture_output=True, timeout=300
    )


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
