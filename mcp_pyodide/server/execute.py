"""The `pyodide_execute` and `pyodide_reset` tools: run code, and start over."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mcp_types as types
from pydantic import BaseModel, ConfigDict, Field

from .._outputs import PNG_SIGNATURE, read_inside
from ..config import RuntimeConfig
from ..escaping import shown
from ..result import Result
from ..tool_names import ToolName
from .registry import CallContext, OutputStreamer, ToolFailure, ToolSpec, progress_forwarder, text_result

MAX_INLINE_IMAGE_BYTES = 2 * 1024 * 1024
MAX_INLINE_IMAGES = 8
LinkMaker = Callable[[Path], "types.ResourceLink | None"]

MAX_TIMEOUT_MS = 3_600_000


class ExecuteArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="Python source to run. The value of a final expression is returned.")
    timeout: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TIMEOUT_MS,
        description="Milliseconds before the run is interrupted (default: the server's --timeout).",
    )


def execute_policy_arguments(args: ExecuteArgs, config: RuntimeConfig) -> dict[str, Any]:
    """The policy sees the timeout that will apply, so `require timeout lte N` holds for defaults too."""
    return {"code": args.code, "timeout": config.timeout_ms if args.timeout is None else args.timeout}


class ResetArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOutput(BaseModel):
    type: str = Field(description="the exception's class name")
    message: str
    traceback: str


class ExecuteOutput(BaseModel):
    """The structured result of pyodide_execute; its JSON schema is the tool's outputSchema."""

    stdout: str
    stderr: str
    result: str | None = Field(description="repr() of the last expression, if not None")
    error: ErrorOutput | None
    timed_out: bool
    state_reset: bool = Field(description="the interpreter was replaced: variables from earlier calls are gone")
    duration_ms: float
    stdout_truncated_chars: int = Field(description="characters of stdout cut by the output limit")
    stderr_truncated_chars: int
    figures: list[str] = Field(description="saved PNGs, host paths")
    files: list[str] = Field(description="files written to the output folder by this run, host paths")
    files_not_returned: int = Field(description="more figures and files this run made than one result lists")
    loaded_packages: list[str] = Field(description="packages loaded for this run, as 'name version'")

    @classmethod
    def of(cls, result: Result) -> ExecuteOutput:
        error = result.error
        return cls(
            stdout=result.stdout,
            stderr=result.stderr,
            result=result.result,
            error=ErrorOutput(type=error.type, message=error.message, traceback=error.traceback) if error else None,
            timed_out=result.timed_out,
            state_reset=result.state_reset,
            duration_ms=round(result.duration_ms, 3),
            stdout_truncated_chars=result.stdout_truncated_chars,
            stderr_truncated_chars=result.stderr_truncated_chars,
            figures=[str(p) for p in result.figures],
            files=[str(p) for p in result.files],
            files_not_returned=result.files_not_returned,
            loaded_packages=[f"{o.name} {o.version}" for o in result.loaded_packages],
        )


def execute_description(config: RuntimeConfig) -> str:
    files = ""
    if config.output_dir is not None:
        files = (
            "- matplotlib works (Agg backend): plt.show() and figures left open are saved as PNG files in "
            f"/mnt/output (on the host: {config.output_dir}); the result lists their paths and shows them. "
            "Files your code writes to /mnt/output are listed too.\n"
        )
    mounts = "".join(
        f"- Host folder {m.host_path} is at {m.guest_path}{' (read-only)' if m.read_only else ''}.\n"
        for m in config.mounts
    )
    return (
        "Run Python 3.12 code in a sandboxed Pyodide (WebAssembly) interpreter and return its output.\n"
        "- State persists between calls like a notebook: variables, imports and functions stay defined "
        f"until {ToolName.RESET} (or a crash/forced restart, which the result reports).\n"
        "- The value of the last expression is returned (its repr), like a notebook cell; end the line "
        "with ';' to hide it. Top-level `await` works.\n"
        "- stdout and stderr are returned separately; each is cut after "
        f"{config.max_output_chars:,} characters (the result says how much was cut)"
        + (
            f"; past {config.max_text_chars:,} characters the text part of the result says how much more "
            "the structured result holds.\n"
            if config.max_text_chars < config.max_output_chars
            else ".\n"
        )
        + f"- Runs are stopped after `timeout` ms (default {config.timeout_ms:,}); globals set before the "
        "call are kept. Code that ignores the interrupt (long C calls) gets the interpreter restarted.\n"
        f"- Code is limited to {config.max_code_bytes:,} bytes and memory to {config.memory_limit_mb:,} MiB.\n"
        "- Importing a Pyodide package (numpy, pandas, matplotlib, scipy, scikit-learn, ...) loads it "
        "automatically.\n"
        + files
        + mounts
        + "- No network, no host shell, no other host files; stdin is not available."
    )


def format_result(result: Result, text_limit: int) -> str:
    """Plain-text rendering, most useful first; every section labelled.

    Each stream is shown up to `text_limit` characters: past that the structured result alone
    carries the rest, because sending megabytes twice costs a client seconds (its reader is
    quadratic in line length) and a model reading the text gains nothing from them.
    """
    sections: list[str] = []
    if result.error is not None:
        head = f"{result.error.type}: {result.error.message}" if result.error.message else result.error.type
        if result.timed_out or result.state_reset:
            head = result.error.message
        body = result.error.traceback.rstrip() if result.error.traceback else ""
        sections.append("--- error ---\n" + head + ("\n" + body if body and body not in head else ""))
    for name, text, cut in (
        ("stdout", result.stdout, result.stdout_truncated_chars),
        ("stderr", result.stderr, result.stderr_truncated_chars),
    ):
        if text or cut:
            note = ""
            if len(text) > text_limit:
                more = len(text) - text_limit
                text = text[:text_limit]
                note += f"\n[... {more:,} more characters of {name} in the structured result's {name!r} field]"
            if cut:
                note += f"\n[... {cut:,} more characters cut]"
            sections.append(f"--- {name} ---\n{text}{note}")
    if result.result is not None:
        sections.append(f"--- result ---\n{result.result}")
    if result.figures:
        sections.append("--- figures saved ---\n" + "\n".join(shown(str(p)) for p in result.figures))
    if result.files:
        sections.append("--- files written ---\n" + "\n".join(shown(str(p)) for p in result.files))
    if result.files_not_returned:
        sections.append(
            f"--- not listed ---\n{result.files_not_returned:,} more figures or files (over the per-call cap)"
        )
    if result.loaded_packages:
        loaded = ", ".join(f"{o.name} {o.version}" for o in result.loaded_packages)
        sections.append(f"--- packages loaded ---\n{loaded}")
    if not sections:
        sections.append("(no output)")
    return "\n\n".join(sections)


def structured(result: Result) -> dict[str, Any]:
    return ExecuteOutput.of(result).model_dump(mode="json")


def figure_blocks(
    result: Result, inline: bool, link_for: LinkMaker | None, output_dir: Path | None
) -> list[types.ContentBlock]:
    """Each saved figure inline (bounded, read without following links) and as a resource link."""
    blocks: list[types.ContentBlock] = []
    for index, path in enumerate(result.figures):
        if inline and index < MAX_INLINE_IMAGES and output_dir is not None:
            data = read_inside(output_dir, path, MAX_INLINE_IMAGE_BYTES)
            if data and data.startswith(PNG_SIGNATURE):
                blocks.append(
                    types.ImageContent(type="image", data=base64.b64encode(data).decode("ascii"), mime_type="image/png")
                )
        if link_for is not None:
            link = link_for(path)
            if link is not None:
                blocks.append(link)
    return blocks


def build_execute_tools(config: RuntimeConfig, link_for: LinkMaker | None = None) -> list[ToolSpec]:

    async def execute(args: ExecuteArgs, ctx: CallContext) -> types.CallToolResult:
        size = len(args.code.encode("utf-8"))
        if size > config.max_code_bytes:
            raise ToolFailure(
                f"Code is {size:,} bytes, over the limit of {config.max_code_bytes:,} bytes; "
                "split it into smaller calls or load data from a mounted file."
            )
        sandbox = await ctx.sandbox()
        streamer = OutputStreamer(ctx)
        try:
            result = await sandbox.execute(
                args.code, timeout_ms=args.timeout, on_output=streamer, progress=progress_forwarder(ctx)
            )
        finally:
            await streamer.close()
        ctx.files_changed = result.mounts_changed
        text = format_result(result, config.max_text_chars)
        content: list[types.ContentBlock] = [types.TextContent(type="text", text=text)]
        content += figure_blocks(result, config.inline_images, link_for, sandbox.output_dir)
        return types.CallToolResult(
            content=content,
            structured_content=structured(result),
            is_error=not result.ok,
        )

    async def reset(args: ResetArgs, ctx: CallContext) -> types.CallToolResult:
        info = await (await ctx.sandbox()).reset()
        return text_result(
            f"Started a fresh interpreter (Pyodide {info.pyodide_version or '?'}); all previous state is gone."
        )

    return [
        ToolSpec(
            name=ToolName.EXECUTE,
            title="Run Python code",
            description=execute_description(config),
            arguments=ExecuteArgs,
            handler=execute,
            annotations=types.ToolAnnotations(
                title="Run Python code",
                read_only_hint=False,
                destructive_hint=False,
                idempotent_hint=False,
                open_world_hint=False,
            ),
            output=ExecuteOutput,
            policy_view=lambda args: execute_policy_arguments(args, config),
        ),
        ToolSpec(
            name=ToolName.RESET,
            title="Reset the Python interpreter",
            description="Discard all Python state (variables, imports, loaded packages) and start a fresh "
            "interpreter. Files in mounted folders are not touched.",
            arguments=ResetArgs,
            handler=reset,
            annotations=types.ToolAnnotations(
                title="Reset the Python interpreter",
                read_only_hint=False,
                destructive_hint=True,
                idempotent_hint=True,
                open_world_hint=False,
            ),
        ),
    ]
