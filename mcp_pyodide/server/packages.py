"""The `pyodide_install-packages` tool: make packages importable in the running interpreter."""

from __future__ import annotations

from typing import Any

import mcp_types as types
from pydantic import BaseModel, ConfigDict, Field

from ..result import PackageOutcome
from .registry import CallContext, ToolFailure, ToolSpec, progress_forwarder

MAX_PACKAGES_PER_CALL = 50


class InstallArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    package: str = Field(
        description="One or more package names separated by spaces or commas, e.g. 'numpy pandas matplotlib'."
    )


INSTALL_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "packages": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": ["string", "null"]},
                    "installed": {"type": "boolean"},
                    "error": {"type": ["string", "null"]},
                    "dependencies": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["name", "installed"],
            },
        }
    },
    "required": ["packages"],
}


def split_names(text: str) -> list[str]:
    names = [part for part in text.replace(",", " ").split() if part]
    if not names:
        raise ToolFailure("No package names given: pass one or more names separated by spaces.")
    if len(names) > MAX_PACKAGES_PER_CALL:
        raise ToolFailure(f"Too many packages in one call ({len(names)}); the limit is {MAX_PACKAGES_PER_CALL}.")
    return names


def describe(outcome: PackageOutcome) -> str:
    if outcome.installed:
        deps = f" (with {', '.join(outcome.dependencies)})" if outcome.dependencies else ""
        return f"installed {outcome.name} {outcome.version}{deps}"
    return f"not installed {outcome.name}: {outcome.error}"


def build_package_tools() -> list[ToolSpec]:
    async def install(args: InstallArgs, ctx: CallContext) -> types.CallToolResult:
        names = split_names(args.package)
        sandbox = await ctx.sandbox()
        outcomes = await sandbox.install(names, progress=progress_forwarder(ctx))
        lines = [describe(o) for o in outcomes]
        any_failed = any(not o.installed for o in outcomes)
        return types.CallToolResult(
            content=[types.TextContent(type="text", text="\n".join(lines))],
            structured_content={
                "packages": [
                    {
                        "name": o.name,
                        "version": o.version,
                        "installed": o.installed,
                        "error": o.error,
                        "dependencies": o.dependencies,
                    }
                    for o in outcomes
                ]
            },
            is_error=any_failed,
        )

    return [
        ToolSpec(
            name="pyodide_install-packages",
            title="Install Python packages",
            description=(
                "Install packages into the running Python interpreter so code can import them. "
                "Packages built for Pyodide (numpy, pandas, matplotlib, scipy, scikit-learn, pillow and ~250 "
                "more) come with their dependencies; files are fetched and checked (sha256) by the server. "
                "pyodide_execute also loads these automatically when code imports them. "
                "The result says, per package, what was installed (name, version) or why not. "
                "A pyodide_reset forgets installed packages."
            ),
            arguments=InstallArgs,
            handler=install,
            annotations=types.ToolAnnotations(
                title="Install Python packages",
                read_only_hint=False,
                destructive_hint=False,
                idempotent_hint=True,
                open_world_hint=True,
            ),
            output_schema=INSTALL_OUTPUT_SCHEMA,
        )
    ]
