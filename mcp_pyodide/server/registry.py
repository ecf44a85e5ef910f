"""A tool as the server sees it: its MCP description, its argument model and its handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from pydantic import BaseModel, ValidationError

from ..errors import MCPPyodideError


class ToolFailure(MCPPyodideError):
    """An error the model should read: returned as a tool result with isError, never a crash."""


Handler = Callable[[Any, "CallContext"], Awaitable[types.CallToolResult]]


@dataclass
class CallContext:
    """What a handler may need about the call besides its arguments."""

    session_id: str
    report_progress: Callable[[float, float | None, str | None], Awaitable[None]]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    title: str
    description: str
    arguments: type[BaseModel]
    handler: Handler
    annotations: types.ToolAnnotations
    output_schema: dict[str, Any] | None = None

    def to_mcp(self) -> types.Tool:
        schema = self.arguments.model_json_schema(by_alias=True)
        schema.pop("title", None)
        return types.Tool(
            name=self.name,
            title=self.title,
            description=self.description,
            input_schema=schema,
            output_schema=self.output_schema,
            annotations=self.annotations,
        )

    def parse(self, arguments: dict[str, Any] | None) -> BaseModel:
        """Validate arguments, turning pydantic's report into one readable sentence."""
        try:
            return self.arguments.model_validate(arguments or {})
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                where = ".".join(str(part) for part in error["loc"]) or "arguments"
                problems.append(f"{where}: {error['msg']}")
            raise ToolFailure(f"Invalid arguments for {self.name}: " + "; ".join(problems)) from exc


def text_result(text: str, *, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=is_error)
