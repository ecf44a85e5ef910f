"""Serve MCP over Streamable HTTP, both protocol eras, loopback only unless told otherwise.

mcp's low-level `Server.streamable_http_app()` serves handshake-era clients
one server loop per `Mcp-Session-Id` (each with its own `Connection`, which
`ServerState` maps to a session handle, ended with the MCP session), and
2026-07-28 clients one self-contained POST per request (their state travels
in the `session` handle argument). An open MCP session costs a transport and
no interpreter; interpreters are started on a session's first run and bounded
by `--max-sessions` (see sessions.py). Host and Origin are checked on every
loopback bind (DNS-rebinding protection), not only on the SDK's three literals.
See docs/protocol-eras.md.

With ``--auth-tokens``/``--oauth-issuer`` (see ``auth.py``) every request must carry a
verified bearer token, and the SDK binds each MCP session to the principal that opened it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
from collections.abc import Generator
from typing import Any

import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp

from ..config import DEFAULT_HOST, DEFAULT_PORT
from .app import ServerState, build_server
from .auth import AuthFailureDetail, HttpAuth

log = logging.getLogger("mcp_pyodide.server")

MCP_PATH = "/mcp"
MAX_MCP_SESSIONS = 1000
"""Open handshake-era MCP sessions at once (each costs about 40 KiB until it runs code); more get HTTP 503."""
GRACEFUL_SHUTDOWN_S = 5
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def rebinding_protection(host: str) -> TransportSecuritySettings | None:
    """Allow only Host/Origin values naming the loopback address we are bound to (or the usual loopback names).

    None (no check) for a non-loopback bind, where the operator's proxy decides who may connect.
    """
    if not is_loopback(host):
        return None
    bare = host.strip("[]")
    literal = f"[{bare}]" if ":" in bare else bare
    names = dict.fromkeys([literal, "127.0.0.1", "localhost", "[::1]"])
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:*" for name in names] + list(names),
        allowed_origins=[f"http://{name}:*" for name in names] + [f"http://{name}" for name in names],
    )


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
        transport_security=rebinding_protection(host),
        auth=auth.sdk_settings() if auth else None,
        token_verifier=auth.verifier if auth else None,
        custom_starlette_routes=auth.root_metadata_route() if auth else None,
    )
    return AuthFailureDetail(app) if auth else app


async def serve_http(
    state: ServerState,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    idle_timeout_s: float = 900.0,
    max_connections: int | None = MAX_MCP_SESSIONS,
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
