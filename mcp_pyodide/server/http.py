"""Serve MCP over Streamable HTTP: one interpreter per MCP session, loopback only unless told otherwise.

mcp's low-level `Server.streamable_http_app()` gives a Starlette app whose
session manager runs one server loop per `Mcp-Session-Id`; each loop has its
own `Connection`, which `ServerState.session_id` keys on, so policy limits
with `scope: "session"` and the per-session interpreter (`PerSessionSandboxes`)
both follow the MCP session. When a session ends (the client's DELETE or the
idle timeout) its connection's exit stack releases the interpreter.

The 2026-07-28 protocol's single-exchange requests carry no session at all
(every request would be a new "session", a fresh interpreter and fresh quota),
so they are refused here with a message saying to use the session handshake.

With ``--auth-tokens``/``--oauth-issuer`` (see ``auth.py``) every request must carry a
verified bearer token, and the SDK binds each MCP session to the principal that opened it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import signal
from collections.abc import Generator
from typing import Any

import uvicorn
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Receive, Scope, Send

from .app import ServerState, build_server
from .auth import AuthFailureDetail, HttpAuth

log = logging.getLogger("mcp_pyodide.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MCP_PATH = "/mcp"
GRACEFUL_SHUTDOWN_S = 5
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class RefuseSessionless:
    """Answer 2026-07-28 single-exchange requests with a clear error instead of serving them sessionless."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            version = headers.get(b"mcp-protocol-version", b"").decode("latin-1")
            if version in MODERN_PROTOCOL_VERSIONS:
                body = json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {
                            "code": -32600,
                            "message": (
                                "mcp-pyodide keeps one interpreter per MCP session; "
                                f"protocol {version} requests have no session. Connect with the "
                                "initialize handshake (protocol 2025-11-25 or earlier)."
                            ),
                        },
                    }
                ).encode()
                await send(
                    {"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]}
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class _Server(uvicorn.Server):
    """uvicorn, minus re-raising the signal after shutdown: a SIGTERM'd server exits 0 once it has cleaned up."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: Any) -> None:
        if self.should_exit:
            self.force_exit = True  # a second signal: stop waiting for clients
        else:
            log.info("received %s; shutting down", signal.Signals(sig).name)
        self.should_exit = True


def build_app(
    state: ServerState,
    *,
    host: str,
    idle_timeout_s: float,
    max_connections: int | None,
    auth: HttpAuth | None = None,
) -> ASGIApp:
    server = build_server(state)
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        host=host,
        session_idle_timeout=idle_timeout_s,
        max_sessions=max_connections,
        auth=auth.sdk_settings() if auth else None,
        token_verifier=auth.verifier if auth else None,
        custom_starlette_routes=auth.root_metadata_route() if auth else None,
    )
    return RefuseSessionless(AuthFailureDetail(app) if auth else app)


async def serve_http(
    state: ServerState,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    idle_timeout_s: float = 900.0,
    max_connections: int | None = None,
    log_level: str = "info",
    auth: HttpAuth | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM/SIGHUP; every interpreter is closed before this returns."""
    app = build_app(state, host=host, idle_timeout_s=idle_timeout_s, max_connections=max_connections, auth=auth)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        access_log=log_level == "debug",
    )
    server = _Server(config)
    try:
        await server.serve()
    finally:
        await state.sandboxes.close()  # already done by the app's lifespan, unless start-up failed
