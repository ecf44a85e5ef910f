"""The `pyodide_export-notebook` tool: the session so far as a Jupyter notebook in the output folder."""

from __future__ import annotations

from pathlib import Path

import mcp_types as types
from pydantic import BaseModel, ConfigDict, Field

from ..history import MAX_BYTES, MAX_CELLS
from ..notebook import DEFAULT_NAME, NotebookError
from ..tool_names import ToolName
from .execute import LinkMaker
from .registry import CallContext, ToolFailure, ToolSpec

NAME = ToolName.EXPORT_NOTEBOOK


class ExportNotebookOutput(BaseModel):
    path: str = Field(description="host path of the notebook")
    cells: int
    dropped: int


class ExportNotebookArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        default=DEFAULT_NAME,
        max_length=1024,
        description="File name inside the output folder (/mnt/output), e.g. 'analysis.ipynb' or "
        "'reports/run1.ipynb'; '.ipynb' is added if missing. No absolute paths, no '..'.",
    )
    overwrite: bool = Field(default=False, description="Replace a notebook of that name if it exists.")


def build_notebook_tools(output_dir: Path | None, link_for: LinkMaker | None = None) -> list[ToolSpec]:
    async def export(args: ExportNotebookArgs, ctx: CallContext) -> types.CallToolResult:
        sandbox = await ctx.sandbox()
        try:
            path = await sandbox.export_notebook(args.path, overwrite=args.overwrite)
        except NotebookError as exc:
            raise ToolFailure(f"Notebook not written: {exc}") from None
        except OSError as exc:
            raise ToolFailure(f"Notebook not written: {exc.strerror or exc}") from None
        kept, dropped = sandbox.history_counts()
        note = f"; the {dropped} oldest call(s) were not kept" if dropped else ""
        text = f"Wrote {kept} call(s) of this session as a Jupyter notebook to {path}{note}."
        content: list[types.ContentBlock] = [types.TextContent(type="text", text=text)]
        link = link_for(path) if link_for is not None else None
        if link is not None:
            content.append(link)
        ctx.files_changed = True
        return types.CallToolResult(
            content=content,
            structured_content=ExportNotebookOutput(path=str(path), cells=kept, dropped=dropped).model_dump(),
        )

    return [
        ToolSpec(
            name=NAME,
            title="Export the session as a notebook",
            description="Save the code run in this session so far, with its outputs (stdout, stderr, results, "
            f"errors, figures), as a Jupyter notebook (.ipynb) in the output folder{_where(output_dir)}. A session "
            f"keeps its last {MAX_CELLS} calls and {MAX_BYTES // (1024 * 1024)} MiB; older ones are dropped and "
            "the notebook says so. Refuses to replace an existing file unless overwrite is true.",
            arguments=ExportNotebookArgs,
            handler=export,
            annotations=types.ToolAnnotations(
                title="Export the session as a notebook",
                read_only_hint=False,  # writes a file in the output folder
                destructive_hint=True,  # with overwrite, it replaces a file there
                idempotent_hint=False,  # the session grows between calls
                open_world_hint=False,
            ),
            output=ExportNotebookOutput,
        )
    ]


def _where(output_dir: Path | None) -> str:
    return f" (on the host: {output_dir})" if output_dir is not None else ""
