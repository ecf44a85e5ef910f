"""The package-install tool: make packages importable in the running interpreter.

The `package` argument is split into names and each is PEP 503-normalised while the
arguments are validated, so the policy checks, and the installer receives, the same
list: a rule on `numpy` cannot be dodged as `NumPy` or `numpy, requests`.
"""

from __future__ import annotations

import re
from typing import Annotated

import mcp_types as types
from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema

from ..packages import normalize_name
from ..result import PackageOutcome
from ..tool_names import ToolName
from .registry import CallContext, ToolSpec, progress_forwarder

MAX_PACKAGES_PER_CALL = 50


_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")  # a PEP 508 project name
MAX_NAME_CHARS = 200


def package_names(text: object) -> list[str]:
    """Split on spaces and commas and normalise each name, as the installer will read them.

    Only bare project names pass: a version pin, an extra or a URL would let the
    installer fetch something other than the name the policy was shown.
    """
    if not isinstance(text, str):
        raise ValueError("expected a string of package names separated by spaces or commas")
    parts = text.replace(",", " ").split()
    if not parts:
        raise ValueError("no package names given: pass one or more names separated by spaces")
    for part in parts:
        if len(part) > MAX_NAME_CHARS or not _NAME.fullmatch(part):
            raise ValueError(
                f"{part[:MAX_NAME_CHARS]!r} is not a package name (give bare names such as 'numpy'; "
                "version pins, extras and URLs are not accepted)"
            )
    names = list(dict.fromkeys(normalize_name(part) for part in parts))
    if len(names) > MAX_PACKAGES_PER_CALL:
        raise ValueError(f"too many packages in one call ({len(names)}); the limit is {MAX_PACKAGES_PER_CALL}")
    return names


PackageNames = Annotated[
    list[str],
    BeforeValidator(package_names),
    WithJsonSchema(
        {
            "type": "string",
            "description": "One or more package names separated by spaces or commas, e.g. 'numpy pandas matplotlib'.",
        }
    ),
]


class InstallArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    package: PackageNames
    """After validation: the normalised, de-duplicated names (what the policy sees and what is installed)."""


class PackageReport(BaseModel):
    name: str
    version: str | None
    installed: bool
    error: str | None
    dependencies: list[str]


class InstallOutput(BaseModel):
    packages: list[PackageReport]


def describe(outcome: PackageOutcome) -> str:
    if outcome.installed:
        deps = f" (with {', '.join(outcome.dependencies)})" if outcome.dependencies else ""
        return f"installed {outcome.name} {outcome.version}{deps}"
    return f"not installed {outcome.name}: {outcome.error}"


def build_package_tools() -> list[ToolSpec]:
    async def install(args: InstallArgs, ctx: CallContext) -> types.CallToolResult:
        sandbox = await ctx.sandbox()
        outcomes = await sandbox.install(args.package, progress=progress_forwarder(ctx))
        lines = [describe(o) for o in outcomes]
        any_failed = any(not o.installed for o in outcomes)
        return types.CallToolResult(
            content=[types.TextContent(type="text", text="\n".join(lines))],
            structured_content=InstallOutput(
                packages=[
                    PackageReport(
                        name=o.name,
                        version=o.version,
                        installed=o.installed,
                        error=o.error,
                        dependencies=list(o.dependencies),
                    )
                    for o in outcomes
                ]
            ).model_dump(mode="json"),
            is_error=any_failed,
        )

    return [
        ToolSpec(
            name=ToolName.INSTALL_PACKAGES,
            title="Install Python packages",
            description=(
                "Install packages into the running Python interpreter so code can import them. "
                "Packages built for Pyodide (numpy, pandas, matplotlib, scipy, scikit-learn, pillow and ~250 "
                "more) come with their dependencies; files are fetched and checked (sha256) by the server. "
                f"{ToolName.EXECUTE} also loads these automatically when code imports them. "
                "The result says, per package, what was installed (name, version) or why not. "
                f"A {ToolName.RESET} forgets installed packages."
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
            output=InstallOutput,
        )
    ]
