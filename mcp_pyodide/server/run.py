"""Assemble a server from options and serve it until the client leaves or a signal arrives."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from ..config import RuntimeConfig
from ..mounts import Mount, with_output
from ..policy import AuditLog, Policy, PolicyEngine, default_policy
from ..policy.engine import RESERVATION_TTL_S
from ..sandbox import Sandbox
from .app import ServerState, build_server, initialization_options, tool_map
from .execute import LinkMaker, build_execute_tools
from .fast_stdio import stdio_streams
from .files import MAX_IMAGE_BYTES, build_file_tools
from .notebook_tool import build_notebook_tools
from .packages import build_package_tools
from .registry import ToolSpec
from .resources import MountResources, offered_by
from .sessions import SandboxProvider, SessionSandboxes
from .stdin_guard import answer_bad_lines

log = logging.getLogger("mcp_pyodide.server")


def build_tools(
    config: RuntimeConfig,
    mounts: Sequence[Mount],
    *,
    link_for: LinkMaker | None = None,
    max_image_bytes: int = MAX_IMAGE_BYTES,
) -> list[ToolSpec]:
    """The definition of every tool, one per `ToolName`, for this configuration."""
    return [
        *build_execute_tools(config, link_for=link_for),
        *build_package_tools(),
        *build_file_tools(mounts, max_image_bytes=max_image_bytes),
        *build_notebook_tools(config.output_dir, link_for=link_for),
    ]


def make_state(
    config: RuntimeConfig,
    policy: Policy | None = None,
    audit_log: Path | None = None,
    *,
    max_image_bytes: int = MAX_IMAGE_BYTES,
    resources: bool = True,
    provider: SandboxProvider | None = None,
    approval_timeout_s: float = RESERVATION_TTL_S,
) -> ServerState:
    if provider is None:
        default = Sandbox(config=config)
        provider = SessionSandboxes(default.config, default=default)
    sandboxes = provider
    config = sandboxes.config
    policy = policy or default_policy()
    mounts = with_output(config.mounts, config.output_dir)
    # A policy that hides or denies `resources` gets none: no capability, no list, no links.
    shared = MountResources(mounts) if mounts and resources and offered_by(policy) else None
    link_for = shared.link_for if shared is not None else None
    tools = tool_map(build_tools(config, mounts, link_for=link_for, max_image_bytes=max_image_bytes))
    return ServerState(
        sandboxes=sandboxes,
        tools=tools,
        engine=PolicyEngine(policy, reservation_ttl_s=approval_timeout_s),
        audit=AuditLog(audit_log) if audit_log else None,
        resources=shared,
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
                        await state.sandboxes.close()
                    # The SDK's stdio reader (used when stdin is not a pipe) is a thread blocked on
                    # stdin that no cancellation reaches; with Node gone there is nothing left to clean up.
                    sys.stderr.flush()
                    os._exit(0)

        group.start_soon(watch_signals)
        try:
            async with (
                stdio_streams() as (raw_read, write_stream),
                answer_bad_lines(raw_read, write_stream) as read_stream,
            ):
                await server.run(read_stream, write_stream, initialization_options(server, state))
        finally:
            group.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await state.sandboxes.close()
