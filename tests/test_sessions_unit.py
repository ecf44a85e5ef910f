"""Which session a call gets, and the Host/Origin rules, without starting Node (the real thing: test_protocol_eras)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mcp_pyodide.config import RuntimeConfig
from mcp_pyodide.policy import PolicyEngine, default_policy
from mcp_pyodide.server.app import ServerState, with_session
from mcp_pyodide.server.execute import build_execute_tools
from mcp_pyodide.server.http import rebinding_protection
from mcp_pyodide.server.registry import ToolFailure
from mcp_pyodide.server.sessions import DEFAULT_SESSION, SessionSandboxes


class Connection:
    """Stands in for mcp's per-connection object (weakly referenced by the server)."""


def state(default: Any = None) -> ServerState:
    provider = SessionSandboxes(RuntimeConfig(), default=default)
    return ServerState(sandboxes=provider, tools={}, engine=PolicyEngine(default_policy()))


def test_stdio_calls_without_a_handle_use_the_one_interpreter_and_new_mints_one() -> None:
    stdio = state(default=object())
    assert stdio.resolve_session(None, object(), modern=True) == (DEFAULT_SESSION, DEFAULT_SESSION, None)
    assert stdio.resolve_session(None, object(), modern=False)[0] == DEFAULT_SESSION
    session_id, label, report = stdio.resolve_session("new", object(), modern=True)
    assert report == session_id and label != session_id
    assert stdio.resolve_session(session_id, object(), modern=True)[0] == session_id


def test_http_without_a_handle_modern_gets_a_new_session_legacy_keeps_its_connections() -> None:
    http = state()
    first = http.resolve_session(None, SimpleNamespace(), modern=True)
    second = http.resolve_session(None, SimpleNamespace(), modern=True)
    assert first[0] != second[0] and first[2] == first[0]
    connection = SimpleNamespace(_connection=Connection())
    mine = http.resolve_session(None, connection, modern=False)
    assert http.resolve_session(None, connection, modern=False) == mine
    assert http.resolve_session(None, SimpleNamespace(_connection=Connection()), modern=False) != mine


def test_a_guessed_handle_is_refused() -> None:
    http = state()
    real = http.resolve_session("new", None, modern=True)[0]
    with pytest.raises(ToolFailure, match="nothing was run"):
        http.resolve_session(real[:-1] + ("a" if real[-1] != "a" else "b"), None, modern=True)


def test_every_tool_takes_session_and_execute_returns_it() -> None:
    execute, reset = (with_session(spec) for spec in build_execute_tools(RuntimeConfig()))
    for spec in (execute, reset):
        assert "session" in spec.to_mcp().input_schema["properties"]
    assert "pass it back as the `session` argument" in execute.description
    assert "session" in (execute.derived_output_schema() or {})["properties"]
    assert spec.parse({"session": "abc"}).session == "abc"  # type: ignore[attr-defined]
    with pytest.raises(ToolFailure):
        spec.parse({"session": ""})


@pytest.mark.parametrize(
    ("host", "literal"), [("127.0.0.1", "127.0.0.1"), ("127.0.0.2", "127.0.0.2"), ("::1", "[::1]"), ("[::1]", "[::1]")]
)
def test_rebinding_protection_names_the_bound_loopback_address(host: str, literal: str) -> None:
    settings = rebinding_protection(host)
    assert settings is not None and settings.enable_dns_rebinding_protection
    assert f"{literal}:*" in settings.allowed_hosts and f"http://{literal}:*" in settings.allowed_origins
    assert not any("evil" in h for h in settings.allowed_hosts)


def test_no_rebinding_rules_for_a_remote_bind() -> None:
    assert rebinding_protection("0.0.0.0") is None


def test_requests_without_a_handle_have_a_public_policy_session() -> None:
    assert state(default=object()).session_id(object()) == DEFAULT_SESSION
    http = state()
    connection = SimpleNamespace(_connection=Connection(), protocol_version="2025-11-25")
    label = http.session_id(connection)
    assert label == http.session_id(connection) and len(label) == 12
    assert http.session_id(SimpleNamespace(protocol_version="2026-07-28")) == "anonymous"
