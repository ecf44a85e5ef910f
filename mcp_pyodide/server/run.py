"""Assemble a server from options and serve it until the client leaves or a signal arrives."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import anyio
from mcp.server.stdio import stdio_server

from ..config import RuntimeConfig
from ..policy import AuditLog, Policy, PolicyEngine, default_policy
from ..runtime import Runtime
from .app import ServerState, build_server, tool_map
from .execute import build_execute_tools

log = logging.getLogger("mcp_pyodide.server")


def make_state(config: RuntimeConfig, policy: Policy | None = None, audit_log: Path | None = None) -> ServerState:
    runtime = Runtime(config)
    tools = tool_map(build_execute_tools(runtime))
    return ServerState(
        runtime=runtime,
        tools=tools,
        engine=PolicyEngine(policy or default_policy()),
        audit=AuditLog(audit_log) if audit_log else None,
    )


async def serve_stdio(state: ServerState) -> None:
    """Serve MCP on stdin/stdout; SIGTERM/SIGINT end it cleanly, taking the Node process along."""
    server = build_server(state)
    async with anyio.create_task_group() as group:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async for signum in signals:
                    log.info("received %s; shutting down", signal.Signals(signum).name)
                    with anyio.CancelScope(shield=True):
                        await state.runtime.close()
                    # The MCP stdio reader is a thread blocked on stdin that no cancellation
                    # reaches; with the Node process gone there is nothing left to clean up.
                    sys.stderr.flush()
                    os._exit(0)

        group.start_soon(watch_signals)
        try:
            async with stdio_server() as (read_stream, write_stream):
                await server.run(read_stream, write_stream, server.create_initialization_options())
        finally:
            group.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await state.runtime.close()
