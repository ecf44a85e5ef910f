"""Which session a call gets, and the Host/Origin rules, without starting Node (the real thing: test_protocol_eras)."""

from __future__ import annotations

import asyncio
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


def resolve(state: ServerState, requested: str | None, connection: Any, modern: bool, who: str = "") -> Any:
    handle, report = asyncio.run(state.resolve_session(requested, connection, modern, who))
    return handle.id, handle.label, report


def test_stdio_calls_without_a_handle_use_the_one_interpreter_and_new_mints_one() -> None:
    stdio = state(default=object())
    assert resolve(stdio, None, object(), modern=True) == (DEFAULT_SESSION, DEFAULT_SESSION, None)
    assert resolve(stdio, None, object(), modern=False)[0] == DEFAULT_SESSION
    session_id, label, report = resolve(stdio, "new", object(), modern=True)
    assert report == session_id and label != session_id
    assert resolve(stdio, session_id, object(), modern=True)[0] == session_id


def test_http_without_a_handle_modern_gets_a_new_session_legacy_keeps_its_connections() -> None:
    http = state()
    first = resolve(http, None, SimpleNamespace(), modern=True)
    second = resolve(http, None, SimpleNamespace(), modern=True)
    assert first[0] != second[0] and first[2] == first[0]
    connection = SimpleNamespace(_connection=Connection())
    mine = resolve(http, None, connection, modern=False)
    assert resolve(http, None, connection, modern=False) == mine
    assert resolve(http, None, SimpleNamespace(_connection=Connection()), modern=False) != mine


def test_a_guessed_handle_or_another_principals_is_refused_alike() -> None:
    http = state()
    real = resolve(http, "new", None, modern=True, who="alice")[0]
    with pytest.raises(ToolFailure) as guessed:
        resolve(http, real[:-1] + ("a" if real[-1] != "a" else "b"), None, modern=True, who="alice")
    with pytest.raises(ToolFailure) as taken:
        resolve(http, real, None, modern=True, who="bob")
    assert "nothing was run" in str(guessed.value) and str(taken.value) == str(guessed.value)
    assert resolve(http, real, None, modern=True, who="alice")[0] == real


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
    assert asyncio.run(state(default=object()).session_id(object(), "")) == DEFAULT_SESSION
    http = state()
    connection = SimpleNamespace(_connection=Connection(), protocol_version="2025-11-25")
    label = asyncio.run(http.session_id(connection, ""))
    assert label == asyncio.run(http.session_id(connection, "")) and len(label) == 12
    assert asyncio.run(http.session_id(SimpleNamespace(protocol_version="2026-07-28"), "")) == "anonymous"


@pytest.mark.parametrize("transport", ["stdio", "streamable-http"])
def test_max_sessions_and_idle_timeout_apply_to_either_transport(transport: str) -> None:
    from mcp_pyodide.cli import build_parser, runtime_config, session_provider

    args = build_parser().parse_args(["serve", "--transport", transport, "--max-sessions", "2", "--idle-timeout", "30"])
    provider = session_provider(args, runtime_config(args))
    assert (provider.max_sessions, provider.idle_timeout_s, provider.handles.idle_timeout_s) == (2, 30.0, 30.0)
    assert provider.has_default() == (transport == "stdio")  # stdio keeps its one default interpreter
