"""A tool as the server sees it: one definition holding everything about it.

A :class:`ToolSpec` is the only place a tool is described: its name (from
:class:`~mcp_pyodide.tool_names.ToolName`), title, description, argument model,
output model (the output schema is derived from it), annotations, how the
policy sees its arguments, and its handler. The dispatcher in `app.py` knows
nothing about any particular tool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from pydantic import BaseModel, ValidationError

from ..errors import MCPPyodideError
from ..mounts import Mount
from ..sandbox import Sandbox
from ..tool_names import ToolName


class ToolFailure(MCPPyodideError):
    """An error the model should read: returned as a tool result with isError, never a crash."""


Handler = Callable[[Any, "CallContext"], Awaitable[types.CallToolResult]]


@dataclass
class CallContext:
    """What a handler may need about the call besides its arguments."""

    session_id: str
    report_progress: Callable[[float, float | None, str | None], Awaitable[None]]
    get_sandbox: Callable[[], Awaitable[Sandbox]]
    # Set by a handler that knows whether files in the mounts changed; None means "maybe".
    files_changed: bool | None = None
    # The mounts as this call's session sees them (its own output sub-folder); None: the server's.
    mounts: tuple[Mount, ...] | None = None

    async def sandbox(self) -> Sandbox:
        """This session's sandbox, started on first use."""
        return await self.get_sandbox()


PolicyView = Callable[[Any], dict[str, Any]]
"""Turns a call's validated arguments into what the policy checks (defaults filled, names normalised)."""


def plain_arguments(args: BaseModel) -> dict[str, Any]:
    """The policy's view for most tools: the validated arguments as JSON values."""
    return args.model_dump(mode="json")


@dataclass(frozen=True)
class ToolSpec:
    """Everything about one tool; built once per server by the tool's module."""

    name: ToolName
    title: str
    description: str
    arguments: type[BaseModel]
    handler: Handler
    annotations: types.ToolAnnotations
    output: type[BaseModel] | None = None
    """The model of `structured_content`; the output schema is derived from it."""
    output_schema: dict[str, Any] | None = None
    """A hand-written output schema, only for a tool whose output is not (yet) a model."""
    policy_view: PolicyView = plain_arguments

    def __post_init__(self) -> None:
        if self.output is not None and self.output_schema is not None:
            raise ValueError(f"{self.name}: give an output model or a schema, not both")

    def derived_output_schema(self) -> dict[str, Any] | None:
        if self.output is None:
            return self.output_schema
        return compact_schema(self.output.model_json_schema(mode="serialization"))

    def to_mcp(self) -> types.Tool:
        schema = self.arguments.model_json_schema(by_alias=True)
        schema.pop("title", None)
        return types.Tool(
            name=self.name.value,
            title=self.title,
            description=self.description,
            input_schema=schema,
            output_schema=self.derived_output_schema(),
            annotations=self.annotations,
        )

    def policy_arguments(self, args: BaseModel) -> dict[str, Any]:
        """What the policy sees for this call: exactly the values the handler will use."""
        return self.policy_view(args)

    def parse(self, arguments: dict[str, Any] | None) -> BaseModel:
        """Validate arguments, turning pydantic's report into one readable sentence."""
        try:
            return self.arguments.model_validate(arguments or {})
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                where = ".".join(str(part) for part in error["loc"]) or "arguments"
                problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
            raise ToolFailure(f"Invalid arguments for {self.name}: " + "; ".join(problems)) from exc


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The same constraints in fewer keywords: the client re-validates every result against it.

    pydantic writes `X | None` as `anyOf: [{type: X}, {type: null}]`, models as `$ref`s, and a
    title on every property; MCP clients check each structured result with jsonschema, whose
    cost grows with the keywords it walks (about half of it went into these). Nullable types
    become `type: [X, "null"]`, references to `$defs` are inlined, titles dropped.
    """
    defs = schema.get("$defs", {})

    def walk(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [walk(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and len(node) == 1:
            name = ref.removeprefix("#/$defs/")
            if name in defs and name not in seen:  # a recursive model keeps its reference
                return walk(defs[name], (*seen, name))
        out = {k: walk(v, seen) for k, v in node.items() if k not in ("title", "properties")}
        if isinstance(node.get("properties"), dict):  # names of fields, not keywords: all kept
            out["properties"] = {name: walk(sub, seen) for name, sub in node["properties"].items()}
        alternatives = out.get("anyOf")
        if isinstance(alternatives, list) and len(alternatives) == 2 and {"type": "null"} in alternatives:
            other = alternatives[0] if alternatives[1] == {"type": "null"} else alternatives[1]
            plain = isinstance(other, dict) and isinstance(other.get("type"), str)
            if plain and not other.keys() & out.keys() - {"anyOf"}:
                del out["anyOf"]
                out.update(other)
                out["type"] = [other["type"], "null"]
        return out

    compact: dict[str, Any] = walk({k: v for k, v in schema.items() if k != "$defs"}, ())
    if _has_ref(compact):
        compact["$defs"] = {name: walk(sub, ()) for name, sub in defs.items()}
    return compact


def _has_ref(node: Any) -> bool:
    if isinstance(node, dict):
        return "$ref" in node or any(_has_ref(v) for v in node.values())
    return isinstance(node, list) and any(_has_ref(v) for v in node)


def text_result(text: str, *, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=is_error)


def progress_forwarder(ctx: CallContext) -> Callable[[int, int, str], None]:
    """A synchronous progress callback (as the package broker calls it) that reaches the client.

    The MCP session sends a notification only when the client asked for progress.
    """
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    async def send(done: int, total: int, message: str) -> None:
        await ctx.report_progress(float(done), float(total), message)

    def report(done: int, total: int, message: str) -> None:
        task: asyncio.Task[None] = loop.create_task(send(done, total, message))
        pending.add(task)
        task.add_done_callback(pending.discard)

    return report


class OutputStreamer:
    """Forwards a run's output to the client while it runs, as progress notifications.

    Chunks are coalesced (at most one notification per `interval` seconds) and each message is
    bounded; the full output still arrives in the result. The MCP session sends nothing unless
    the client asked for progress on this call.
    """

    def __init__(self, ctx: CallContext, interval: float = 0.1, max_chars: int = 4000) -> None:
        self.ctx = ctx
        self.interval = interval
        self.max_chars = max_chars
        self.buffer: list[str] = []
        self.sent = 0
        self.flusher: asyncio.Task[None] | None = None
        self.loop = asyncio.get_running_loop()

    def __call__(self, stream: str, text: str) -> None:
        prefix = "[stderr] " if stream == "stderr" else ""
        self.buffer.append(prefix + text)
        if self.flusher is None or self.flusher.done():
            self.flusher = self.loop.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.interval)
        await self.flush()

    async def flush(self) -> None:
        if not self.buffer:
            return
        text, self.buffer = "".join(self.buffer), []
        if len(text) > self.max_chars:
            text = text[: self.max_chars] + f"... [{len(text) - self.max_chars:,} more characters in the result]"
        self.sent += 1
        try:
            await self.ctx.report_progress(float(self.sent), None, text)
        except Exception:  # noqa: BLE001 - streaming is a courtesy; the result carries everything
            pass

    async def close(self) -> None:
        if self.flusher is not None and not self.flusher.done():
            self.flusher.cancel()
        await self.flush()
