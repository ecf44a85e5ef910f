"""The MCP surface: lists tools, passes every call through the policy, then dispatches it.

Data flows one way: MCP request -> argument validation -> session -> policy
decision (and approval) -> tool handler -> runtime. A refused call never
reaches the runtime and never consumes quota. Both protocol eras are served
by the same handlers; where they differ (approval, sessions) the difference
is decided here from `ctx.protocol_version`. See docs/protocol-eras.md.
Over 300 lines on purpose: the request handlers are closures over one `ServerState` and share the
policy gate and audit, so the path of a call is read in one place.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.caching import CacheHint
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions
from mcp.server.models import InitializationOptions
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ResourcesListChanged
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from .. import __version__
from ..errors import MCPPyodideError
from ..policy import AuditLog, Decision, PolicyEngine, audit_record
from ..policy.admit import admit
from ..policy.store import StoreUnavailable
from ..tool_names import ToolName
from .approval import LocalApprovals, PendingApprovals, approval_link, ask_by_elicitation, binding
from .auth import current_principal
from .handles import NEW_SESSION, Handle
from .registry import CallContext, ToolFailure, ToolSpec, text_result
from .resources import MountResources, resource_decision
from .session_args import session_fields, with_session
from .sessions import DEFAULT_HANDLE, DEFAULT_SESSION, SandboxProvider

log = logging.getLogger("mcp_pyodide.server")

INSTRUCTIONS = (
    f"Runs Python code in a sandboxed Pyodide interpreter. Use {ToolName.EXECUTE} to run code; state "
    f"persists between calls until {ToolName.RESET}. When a result carries a `session` handle, pass it "
    "back as the `session` argument to keep using the same interpreter."
)
CACHE_HINTS: dict[Any, CacheHint] = {
    # Tools change only with the server's options: clients may keep the list for a minute.
    "tools/list": CacheHint(ttl_ms=60_000, scope="private"),
    # Files in the mounts change with every run: always re-read (change notices say when).
    "resources/list": CacheHint(ttl_ms=0, scope="private"),
    "resources/templates/list": CacheHint(ttl_ms=60_000, scope="private"),
}
UNKNOWN_HANDLE = (
    "Unknown or expired session handle: nothing was run. Sessions end after the server's --idle-timeout "
    'without a call (and when the server restarts); omit `session`, or pass "new", to start a fresh interpreter.'
)


@dataclass
class ServerState:
    """Everything the handlers share; built once per server."""

    sandboxes: SandboxProvider
    tools: dict[str, ToolSpec]
    engine: PolicyEngine
    audit: AuditLog | None = None
    resources: MountResources | None = None  # files in the mounts as MCP resources; None: not offered
    connections: weakref.WeakKeyDictionary[Any, str] = field(default_factory=weakref.WeakKeyDictionary)
    minting: anyio.Lock = field(default_factory=anyio.Lock, repr=False)  # one handle per connection, however raced
    bus: InMemorySubscriptionBus = field(default_factory=InMemorySubscriptionBus)
    approvals: PendingApprovals = field(init=False)
    request_state_keys: list[bytes] | None = None  # shared by replicas (first seals); None: this process's own

    def __post_init__(self) -> None:
        self.tools = {name: with_session(spec) for name, spec in self.tools.items()}
        self.approvals = PendingApprovals(self.engine, LocalApprovals(self.engine.clock))

    async def resolve_session(
        self, requested: str | None, connection: Any, modern: bool, principal: str
    ) -> tuple[Handle, str | None]:
        """(the call's handle, the handle id to return or None); a handle is only ever ``principal``'s own."""
        handles = self.sandboxes.handles
        if requested == NEW_SESSION:
            handle = await handles.mint(principal)
            return handle, handle.id
        if requested is not None:
            return await self.lookup(requested, principal), requested
        if self.sandboxes.has_default():
            return DEFAULT_HANDLE, None
        minted = None if modern else await self._connection_handle(connection, principal)
        if minted is None:
            minted = await handles.mint(principal)
        return minted, minted.id

    async def lookup(self, session_id: str, principal: str) -> Handle:
        """``principal``'s live handle by id; unknown, expired and another's all fail alike (no oracle)."""
        if session_id == DEFAULT_SESSION and self.sandboxes.has_default():
            return DEFAULT_HANDLE
        found = await self.sandboxes.handles.lookup(session_id, principal)
        if found is None:
            raise ToolFailure(UNKNOWN_HANDLE)
        return found

    async def session_id(self, session: Any, principal: str) -> str:
        """The policy session of a request that names no handle (resources/*): public label, never a secret.

        stdio: the one session; handshake-era HTTP: the MCP session's; 2026-07-28 HTTP: "anonymous".
        """
        if self.sandboxes.has_default():
            return DEFAULT_SESSION
        if getattr(session, "protocol_version", None) in MODERN_PROTOCOL_VERSIONS:
            return "anonymous"
        handle = await self._connection_handle(session, principal)
        return handle.label if handle is not None else "anonymous"

    async def _connection_handle(self, session: Any, principal: str) -> Handle | None:
        """Handshake-era HTTP: the MCP session's own handle, minted on its first call, ended with it."""
        # mcp 2.3 hands each request a fresh ServerSession; the connection underneath is what lasts.
        key = getattr(session, "_connection", session)
        handles = self.sandboxes.handles
        try:
            known = self.connections.get(key)
        except TypeError:
            return None
        if known is not None:
            found = await handles.lookup(known, principal)
            if found is not None:
                return found
        # A client may send its first calls at once: each would mint a handle of its own (and start an
        # interpreter the connection's end never closes). Under the lock the first mints, the rest find it.
        async with self.minting:
            again = self.connections.get(key)
            if again is not None and again != known:
                found = await handles.lookup(again, principal)
                if found is not None:
                    return found
            handle = await handles.mint(principal)
            self.connections[key] = handle.id
        # When the connection ends (HTTP: the client's DELETE or the idle timeout), so does its interpreter.
        exit_stack = getattr(key, "exit_stack", None)
        if exit_stack is not None and known is None:
            exit_stack.push_async_callback(self._end_connection, key)
        return handle

    async def _end_connection(self, key: Any) -> None:
        handle_id = self.connections.pop(key, None)
        if handle_id is not None:
            await self.sandboxes.release(handle_id)


def build_server(state: ServerState) -> Server[Any]:
    """Wire the tools, the policy and the runtime into a low-level MCP server."""
    listen = ListenHandler(state.bus)

    @asynccontextmanager
    async def lifespan(_: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        state.sandboxes.start()  # boot overlaps the handshake
        try:
            yield {}
        finally:
            listen.close()
            with anyio.CancelScope(shield=True):
                await state.sandboxes.close()

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[spec.to_mcp() for spec in state.tools.values() if state.engine.is_visible(spec.name)]
        )

    async def gate(
        ctx: ServerRequestContext[Any],
        params: types.CallToolRequestParams,
        requested: str | None,
        policy_args: dict[str, Any],
    ) -> tuple[Decision, Handle, str | None] | types.InputRequiredResult:
        """Session and policy for one call: (decision, handle, handle id to return), or the approval question."""
        name = params.name
        modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        principal = current_principal()
        # What an approval is bound to: only worked out when one is asked or answered (a hash of the
        # canonical arguments, milliseconds for a 1 MB cell).
        bound_to = partial(binding, name, params.arguments or {}, requested or "")
        if modern and params.request_state is not None:  # the retry carrying the user's answer
            decision, session_id = await state.approvals.answer(
                params.request_state, bound_to(), params.input_responses
            )
            if not decision.allowed:
                return decision, DEFAULT_HANDLE, None
            handle = await state.lookup(session_id, principal)  # the session is still the caller's own
            return decision, handle, (None if handle is DEFAULT_HANDLE else handle.id)
        handle, report = await state.resolve_session(requested, ctx.session, modern, principal)
        if not modern:
            ask = partial(ask_by_elicitation, ctx)
            decision = await admit(state.engine, name, policy_args, handle.label, ask, principal=principal)
            return decision, handle, report
        decision = await state.engine.decide(name, policy_args, handle.label, principal)
        if decision.needs_approval:
            asked = await state.approvals.ask(ctx, decision, policy_args, bound_to(), handle.id)
            if isinstance(asked, types.InputRequiredResult):
                # The answer's line carries the same link; an asked line with none after it expired.
                link = approval_link(asked.request_state or "")
                _audit(state, decision, policy_args, time.perf_counter(), "asked", approval=link)
                return asked
            decision = asked
        return decision, handle, report

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        started = time.perf_counter()
        name = params.name
        spec = state.tools.get(name)
        if spec is None or not state.engine.is_visible(name):
            visible = ", ".join(state.engine.visible_tools(state.tools))
            return text_result(f"Unknown tool {name!r}. Available: {visible or 'none'}", is_error=True)
        try:
            args = spec.parse(dict(params.arguments or {}))
        except ToolFailure as exc:
            return text_result(str(exc), is_error=True)
        requested: str | None = getattr(args, "session", None)
        # The tool's definition says what the policy sees: defaults filled in, names normalised. The handle
        # is a secret, not an argument of the tool: the policy and the audit log never see it.
        policy_args = {k: v for k, v in spec.policy_arguments(args).items() if k != "session"}
        answered = params.request_state if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS else None
        link = approval_link(answered) if answered else None
        try:
            gated = await gate(ctx, params, requested, policy_args)
        except ToolFailure as exc:  # an unknown, expired or another principal's handle
            refused = refusal(name, "session", "unknown or expired session handle", str(exc))
            _audit(state, refused, policy_args, started, "refused", approval=link)
            return text_result(str(exc), is_error=True)
        except StoreUnavailable as exc:  # the shared handle registry is down: no handle can be checked
            message = f"{exc}: nothing was run (session handles are kept there)"
            _audit(state, refusal(name, "state", str(exc), message), policy_args, started, "refused", approval=link)
            return text_result(message, is_error=True)
        if isinstance(gated, types.InputRequiredResult):
            return gated
        decision, handle, report = gated
        if not decision.allowed:
            _audit(state, decision, policy_args, started, "refused", approval=link)
            return text_result(decision.message, is_error=True)

        async def report_progress(progress: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(progress, total, message)

        outcome = "error"
        unserved: list[MCPPyodideError] = []  # no interpreter could be had: nothing ran
        try:

            async def get_sandbox() -> Any:
                try:
                    return await state.sandboxes.get(handle)
                except MCPPyodideError as exc:
                    unserved.append(exc)
                    raise

            call_ctx = CallContext(
                session_id=handle.label,
                report_progress=report_progress,
                get_sandbox=get_sandbox,
                mounts=state.sandboxes.mounts_for(handle),
            )
            async with state.sandboxes.in_use(handle.id):
                result = await spec.handler(args, call_ctx)
            outcome = "error" if result.is_error else "ok"
            if state.resources is not None and not (spec.annotations.read_only_hint or False):
                if call_ctx.files_changed is not False:  # only look when files may have changed
                    if await state.resources.notify_if_changed(ctx.session):
                        await state.bus.publish(ResourcesListChanged())
            return session_fields(result, report, state.sandboxes.take_reset_note(handle.id))
        except ToolFailure as exc:
            return session_fields(text_result(str(exc), is_error=True), report, None)
        except MCPPyodideError as exc:  # the runtime could not serve (no Node, shutting down, all busy)
            message = f"{name} could not run: {exc}"
            if exc in unserved and await state.engine.refund(decision):
                message += "; this call did not count against the rate limit"
            return session_fields(text_result(message, is_error=True), report, None)
        except Exception as exc:
            log.exception("tool %s failed", name)
            return text_result(f"{name} failed: {type(exc).__name__}: {exc}", is_error=True)
        finally:
            _audit(state, decision, policy_args, started, outcome, approval=link)

    resources = state.resources

    async def admit_resources(ctx: ServerRequestContext[Any], arguments: dict[str, Any]) -> None:
        """The policy decides resources requests as calls to the `resources` pseudo-tool."""
        started = time.perf_counter()
        principal = current_principal()
        try:
            session_id = await state.session_id(ctx.session, principal)
        except StoreUnavailable as exc:
            raise MCPError(code=types.INTERNAL_ERROR, message=str(exc)) from exc
        decision = await resource_decision(state.engine, arguments, session_id, principal)
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

    server: Server[Any] = Server(
        "mcp-pyodide",
        version=__version__,
        title="Python in Pyodide",
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        cache_hints=CACHE_HINTS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources if resources is not None else None,
        on_list_resource_templates=list_resource_templates if resources is not None else None,
        on_read_resource=read_resource if resources is not None else None,
        on_subscriptions_listen=listen if resources is not None else None,
    )
    # Seals the approval id a 2026-07-28 client echoes back: bound to tool and arguments, expiring.
    ttl = state.engine.reservation_ttl_s
    if state.request_state_keys is None:
        security = RequestStateSecurity.ephemeral(ttl=ttl)
    else:
        security = RequestStateSecurity(keys=state.request_state_keys, ttl=ttl)
    server.middleware.append(RequestStateBoundary(security, default_audience="mcp-pyodide"))
    return server


def initialization_options(server: Server[Any], state: ServerState) -> InitializationOptions:
    """Capabilities as served: resources.listChanged when resources are offered."""
    return server.create_initialization_options(NotificationOptions(resources_changed=state.resources is not None))


def refusal(tool: str, rule: str, reason: str, message: str) -> Decision:
    """A call refused before the policy saw it (its handle, the shared store), for the audit log."""
    return Decision.refused(
        rule, reason, tool=tool, session_id="unknown", message=message, principal=current_principal()
    )


def _audit(
    state: ServerState,
    decision: Decision,
    arguments: dict[str, Any],
    started: float,
    outcome: str,
    *,
    approval: str | None = None,
) -> None:
    if state.audit is None:
        return
    record = audit_record(decision, arguments, duration_ms=(time.perf_counter() - started) * 1000, outcome=outcome)
    if approval is not None:
        record["approval"] = approval
    try:
        state.audit.write(record)
    except OSError as exc:
        log.error("could not write the audit log: %s", exc)


def tool_map(specs: Sequence[ToolSpec]) -> dict[str, ToolSpec]:
    return {spec.name: spec for spec in specs}
