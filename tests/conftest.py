"""Shared fixtures: real servers over stdio, started once per module where state allows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import ALLOW_ALL, ServerHandle


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
