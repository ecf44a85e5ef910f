"""The MCP surface: lists tools, passes every call through the policy, then dispatches it.

Data flows one way: MCP request -> argument validation -> policy decision
(and approval) -> tool handler -> runtime. A refused call never reaches the
runtime and never consumes quota.
"""

from __future__ import annotations

import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions
from mcp.server.models import InitializationOptions
from mcp.shared.exceptions import MCPError

from .. import __version__
from ..errors import MCPPyodideError
from ..policy import AuditLog, Decision, PolicyEngine, audit_record
from ..tool_names import ToolName
from .auth import current_principal
from .registry import CallContext, ToolFailure, ToolSpec, text_result
from .resources import MountResources, resource_decision
from .sessions import SandboxProvider, SingleSandbox

log = logging.getLogger("mcp_pyodide.server")

INSTRUCTIONS = (
    f"Runs Python code in a sandboxed Pyodide interpreter. Use {ToolName.EXECUTE} to run code; state "
    f"persists between calls until {ToolName.RESET}."
)


@dataclass
class ServerState:
    """Everything the handlers share; built once per server."""

    sandboxes: SandboxProvider
    tools: dict[str, ToolSpec]
    engine: PolicyEngine
    audit: AuditLog | None = None
    resources: MountResources | None = None  # files in the mounts as MCP resources; None: not offered
    sessions: weakref.WeakKeyDictionary[Any, str] = field(default_factory=weakref.WeakKeyDictionary)

    def session_id(self, session: Any) -> str:
        # stdio carries exactly one client, whatever protocol era it speaks.
        if isinstance(self.sandboxes, SingleSandbox):
            return "stdio"
        # mcp 2.3 hands each request a fresh ServerSession; the connection underneath is what lasts.
        key = getattr(session, "_connection", session)
        try:
            known = self.sessions.get(key)
            if known is not None:
                return known
            session_id = self.sessions.setdefault(key, uuid.uuid4().hex[:12])
        except TypeError:
            return "default"
        # When the connection ends (HTTP: the client's DELETE or the idle timeout), so does its interpreter.
        exit_stack = getattr(key, "exit_stack", None)
        if exit_stack is not None:
            exit_stack.push_async_callback(self.sandboxes.release, session_id)
        return session_id


async def _ask_approval(ctx: ServerRequestContext[Any], decision: Decision) -> tuple[bool, str]:
    """Ask the user through MCP elicitation; returns (approved, reason when not)."""
    caps = ctx.session.client_capabilities
    if caps is None or caps.elicitation is None:
        return False, "this call needs the user's approval, and the client cannot ask (no elicitation support)"
    try:
        answer = await ctx.session.elicit_form(
            decision.message,
            {"type": "object", "properties": {}},
            related_request_id=ctx.request_id,
        )
    except Exception as exc:  # noqa: BLE001 - any failure to ask is a refusal, never a crash
        return False, f"asking the user for approval failed ({exc})"
    if answer.action == "accept":
        return True, ""
    return False, f"the user answered {answer.action!r} to the approval request"


def _summarise(arguments: dict[str, Any]) -> str:
    parts = []
    for key, value in arguments.items():
        text = value if isinstance(value, str) else repr(value)
        if len(text) > 300:
            text = text[:300] + f"... ({len(text)} characters)"
        parts.append(f"{key}: {text}")
    return "\n".join(parts)


def build_server(state: ServerState) -> Server[Any]:
    """Wire the tools, the policy and the runtime into a low-level MCP server."""

    @asynccontextmanager
    async def lifespan(_: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        state.sandboxes.start()  # boot overlaps the handshake
        try:
            yield {}
        finally:
            with anyio.CancelScope(shield=True):
                await state.sandboxes.close()

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[spec.to_mcp() for spec in state.tools.values() if state.engine.is_visible(spec.name)]
        )

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        started = time.perf_counter()
        name = params.name
        raw_args = dict(params.arguments or {})
        session_id = state.session_id(ctx.session)
        spec = state.tools.get(name)
        if spec is None or not state.engine.is_visible(name):
            visible = ", ".join(state.engine.visible_tools(state.tools))
            return text_result(f"Unknown tool {name!r}. Available: {visible or 'none'}", is_error=True)
        try:
            args = spec.parse(raw_args)
        except ToolFailure as exc:
            return text_result(str(exc), is_error=True)
        # The tool's definition says what the policy sees: defaults filled in, names normalised.
        policy_args = spec.policy_arguments(args)
        decision = await state.engine.decide(name, policy_args, session_id, current_principal())
        if decision.needs_approval:
            approved, why = await _ask_approval(ctx, _with_summary(decision, policy_args))
            decision = await state.engine.settle(decision, approved, why)
        if not decision.allowed:
            _audit(state, decision, policy_args, started, "refused")
            return text_result(decision.message, is_error=True)

        async def report_progress(progress: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(progress, total, message)

        outcome = "error"
        try:

            async def get_sandbox() -> Any:
                return await state.sandboxes.get(session_id)

            call_ctx = CallContext(session_id=session_id, report_progress=report_progress, get_sandbox=get_sandbox)
            with state.sandboxes.in_use(session_id):
                result = await spec.handler(args, call_ctx)
            outcome = "error" if result.is_error else "ok"
            if state.resources is not None and not (spec.annotations.read_only_hint or False):
                if call_ctx.files_changed is not False:  # only look when files may have changed
                    await state.resources.notify_if_changed(ctx.session)
            return result
        except ToolFailure as exc:
            return text_result(str(exc), is_error=True)
        except MCPPyodideError as exc:  # the runtime could not serve (no Node, shutting down, all busy)
            return text_result(f"{name} could not run: {exc}", is_error=True)
        except Exception as exc:
            log.exception("tool %s failed", name)
            return text_result(f"{name} failed: {type(exc).__name__}: {exc}", is_error=True)
        finally:
            _audit(state, decision, policy_args, started, outcome)

    resources = state.resources

    async def admit_resources(ctx: ServerRequestContext[Any], arguments: dict[str, Any]) -> None:
        """The policy decides resources requests as calls to the `resources` pseudo-tool."""
        started = time.perf_counter()
        decision = await resource_decision(state.engine, arguments, state.session_id(ctx.session), current_principal())
        _audit(state, decision, arguments, started, "ok" if decision.allowed else "refused")
        if not decision.allowed:
            raise MCPError(code=types.INVALID_REQUEST, message=decision.message)

    async def list_resources(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        assert resources is not None
        await admit_resources(ctx, {"operation": "list"})
        cursor = params.cursor if params else None
        return await anyio.to_thread.run_sync(resources.list, cursor, state.engine.policy)

    async def list_resource_templates(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        assert resources is not None
        return resources.templates()

    async def read_resource(
        ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        assert resources is not None
        # The policy sees the URI that will be read (decoded, `..` and symlinks resolved), and only that is read.
        arguments = await anyio.to_thread.run_sync(resources.read_arguments, params.uri)
        await admit_resources(ctx, arguments)
        return await anyio.to_thread.run_sync(resources.read, arguments["uri"])

    return Server(
        "mcp-pyodide",
        version=__version__,
        title="Python in Pyodide",
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources if resources is not None else None,
        on_list_resource_templates=list_resource_templates if resources is not None else None,
        on_read_resource=read_resource if resources is not None else None,
    )


def initialization_options(server: Server[Any], state: ServerState) -> InitializationOptions:
    """Capabilities as served: resources.listChanged when resources are offered."""
    return server.create_initialization_options(NotificationOptions(resources_changed=state.resources is not None))


def _with_summary(decision: Decision, arguments: dict[str, Any]) -> Decision:
    from dataclasses import replace

    summary = _summarise(arguments)
    return replace(decision, message=f"Allow the tool call {decision.tool}?\n\n{summary}")


def _audit(state: ServerState, decision: Decision, arguments: dict[str, Any], started: float, outcome: str) -> None:
    if state.audit is None:
        return
    try:
        state.audit.write(
            audit_record(decision, arguments, duration_ms=(time.perf_counter() - started) * 1000, outcome=outcome)
        )
    except OSError as exc:
        log.error("could not write the audit log: %s", exc)


def tool_map(specs: Sequence[ToolSpec]) -> dict[str, ToolSpec]:
    return {spec.name: spec for spec in specs}
