"""The `session` argument every tool takes, and the session fields every result carries."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import mcp_types as types
from pydantic import BaseModel, Field, create_model

from ..tool_names import ToolName
from .registry import ToolSpec

SESSION_HELP = (
    "Interpreter session handle, from the `session` field of an earlier result: pass it back to keep "
    "using that interpreter (its variables and imports). Omit it for the default (stdio: the one "
    "interpreter; HTTP: the MCP session's interpreter, or a new one for clients without MCP sessions); "
    '"new" starts a fresh interpreter and returns its handle.'
)
SESSION_NOTE = (
    "\n- Sessions: when a result carries a `session` handle, pass it back as the `session` argument of "
    "later calls (this tool, pyodide_reset and the file tools) to keep working in the same interpreter; "
    "without it a later call may reach a fresh one. Handles end after a period without calls."
)


class SessionOutput(BaseModel):
    """What every result adds to a tool's structured output when a session handle is in use."""

    session: str | None = Field(default=None, description="the session handle: pass it back as `session`")
    state_reset_reason: str | None = Field(default=None, description="why the session's earlier state is gone")


SESSION_OUTPUT_PROPERTIES: dict[str, Any] = SessionOutput.model_json_schema()["properties"]


class SessionArgument(BaseModel):
    """The `session` argument every tool takes; added to each tool's argument model in `with_session`."""

    session: str | None = Field(default=None, min_length=1, max_length=200, description=SESSION_HELP)


def with_session(spec: ToolSpec) -> ToolSpec:
    """The same tool with the `session` argument added to its argument model and description."""
    if "session" in spec.arguments.model_fields:
        return spec
    model = create_model(spec.arguments.__name__, __base__=(spec.arguments, SessionArgument))
    description = spec.description + (SESSION_NOTE if spec.name == ToolName.EXECUTE else "")
    changes: dict[str, Any] = {"arguments": model, "description": description}
    if spec.output is not None:
        changes["output"] = create_model(spec.output.__name__, __base__=(spec.output, SessionOutput))
    elif spec.output_schema is not None:
        properties = {**spec.output_schema.get("properties", {}), **SESSION_OUTPUT_PROPERTIES}
        changes["output_schema"] = {**spec.output_schema, "properties": properties}
    return replace(spec, **changes)


def session_fields(result: types.CallToolResult, handle: str | None, reset_note: str | None) -> types.CallToolResult:
    """Return the session handle in text and structuredContent; say when the session's state was lost."""
    if handle is None and reset_note is None:
        return result
    content = list(result.content)
    structured = dict(result.structured_content) if isinstance(result.structured_content, dict) else {}
    if reset_note is not None:
        content.insert(0, types.TextContent(type="text", text=f"[state reset] {reset_note}"))
        structured["state_reset"] = True
        structured["state_reset_reason"] = reset_note
    if handle is not None:
        content.append(types.TextContent(type="text", text=f"session: {handle}"))
        structured["session"] = handle
    return result.model_copy(update={"content": content, "structured_content": structured})
