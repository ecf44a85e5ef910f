"""Turn a session's history into a Jupyter notebook and write it into the output folder.

The notebook is built with `nbformat` (nbformat 4) and validated against its schema
before it is written. The file name comes from the agent or the user, so it is resolved
on the host inside the output folder: a relative name, no `..`, no absolute path, and no
symlink anywhere on the way (each folder is opened with O_NOFOLLOW relative to the last,
so code that swaps a folder for a symlink meanwhile gains nothing). The file is written
to a temporary name beside it and renamed into place, so a reader never sees half a
notebook.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from nbformat import NotebookNode


from . import __version__
from ._runtime_files import PYODIDE_VERSION
from .errors import MCPPyodideError
from .history import MAX_BYTES, MAX_CELLS, Entry, History

PYTHON_VERSION = "3.12.7"  # the CPython inside Pyodide 0.27.7
MAX_NAME_CHARS = 255
DEFAULT_NAME = "session.ipynb"


class NotebookError(MCPPyodideError):
    """The notebook cannot be written where asked; nothing was written."""


def _v4() -> Any:
    """nbformat's v4 builders, imported on first export (nbformat takes ~0.5 s to import; it has no types)."""
    import nbformat.v4

    return nbformat.v4


def to_notebook(history: History) -> NotebookNode:
    """The history as an nbformat-4 notebook, validated."""
    nbformat: Any = __import__("nbformat")

    new_markdown_cell, new_notebook = _v4().new_markdown_cell, _v4().new_notebook
    cells: list[NotebookNode] = []
    if history.dropped:
        cells.append(
            new_markdown_cell(
                f"*{history.dropped} earlier call(s) are not in this notebook: a session keeps its last "
                f"{history.max_cells} calls and {history.max_bytes // (1024 * 1024)} MiB.*"
            )
        )
    for entry in history.entries:
        cells.append(_cell(entry))
    nb = new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3 (Pyodide)", "language": "python"},
            "language_info": {"name": "python", "version": PYTHON_VERSION, "file_extension": ".py"},
            "mcp_pyodide": {
                "version": __version__,
                "pyodide": PYODIDE_VERSION,
                "dropped_calls": history.dropped,
                "bounds": {"calls": MAX_CELLS, "bytes": MAX_BYTES},
            },
        },
    )
    nbformat.validate(nb)
    return cast("NotebookNode", nb)


def _cell(entry: Entry) -> NotebookNode:
    v4 = _v4()
    new_code_cell, new_markdown_cell, new_output = v4.new_code_cell, v4.new_markdown_cell, v4.new_output
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.started))
    if entry.kind == "reset":
        return cast(
            "NotebookNode", new_markdown_cell(f"*Interpreter reset at {when}: everything defined above is gone.*")
        )
    outputs: list[NotebookNode] = []
    if entry.stdout:
        outputs.append(new_output("stream", name="stdout", text=entry.stdout))
    if entry.stderr:
        outputs.append(new_output("stream", name="stderr", text=entry.stderr))
    for figure in entry.figures:
        if figure.png_base64 is not None:
            data = {"image/png": figure.png_base64, "text/plain": f"<Figure {figure.name}>"}
            outputs.append(new_output("display_data", data=data))
        else:
            outputs.append(new_output("stream", name="stderr", text=f"[figure {figure.name}: {figure.problem}]\n"))
    if entry.result is not None:
        outputs.append(new_output("execute_result", data={"text/plain": entry.result}, execution_count=entry.number))
    if entry.error_type is not None:
        traceback = entry.traceback.splitlines() or [f"{entry.error_type}: {entry.error_message}"]
        outputs.append(new_output("error", ename=entry.error_type, evalue=entry.error_message, traceback=traceback))
    meta: dict[str, Any] = {"started": when, "duration_ms": round(entry.duration_ms, 3)}
    if entry.loaded_packages:
        meta["loaded_packages"] = list(entry.loaded_packages)
    if entry.timed_out:
        meta["timed_out"] = True
    if entry.state_reset:
        meta["state_reset"] = True
    cell = new_code_cell(source=entry.code, execution_count=entry.number, outputs=outputs)
    cell.metadata["mcp_pyodide"] = meta
    return cast("NotebookNode", cell)


def check_name(name: str) -> PurePosixPath:
    """A notebook name as a relative path inside the output folder, or NotebookError saying why not."""
    name = name.strip()
    if not name:
        raise NotebookError("the notebook name is empty")
    if "\0" in name or "\\" in name:
        raise NotebookError(f"{name[:100]!r}: NUL bytes and backslashes are not allowed in a notebook name")
    if len(name) > 1024:
        raise NotebookError("the notebook name is longer than 1024 characters")
    if name.startswith("/mnt/output/"):
        name = name[len("/mnt/output/") :]
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("~"):
        raise NotebookError(f"{name!r}: give a name inside the output folder, not an absolute path")
    if any(part in ("..", ".") for part in path.parts) or not path.parts:
        raise NotebookError(f"{name!r}: '..' and '.' are not allowed; give a name inside the output folder")
    if any(len(part) > MAX_NAME_CHARS for part in path.parts):
        raise NotebookError(f"{name[:100]!r}: a path part is longer than {MAX_NAME_CHARS} characters")
    if path.suffix != ".ipynb":
        path = path.with_name(path.name + ".ipynb")
    if path.name.startswith("."):
        raise NotebookError(f"{name!r}: a notebook name must not start with '.'")
    return path


def write_notebook(output_dir: Path, name: str, notebook: NotebookNode, *, overwrite: bool = True) -> Path:
    """Write `notebook` to output_dir/name atomically, never through a symlink; returns the host path."""
    relative = check_name(name)
    nbformat: Any = __import__("nbformat")
    text = cast(str, nbformat.writes(notebook))
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    directory = getattr(os, "O_DIRECTORY", 0)
    fd = os.open(output_dir, os.O_RDONLY | directory)
    try:
        for part in relative.parts[:-1]:
            try:
                os.mkdir(part, mode=0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                inner = os.open(part, os.O_RDONLY | directory | nofollow, dir_fd=fd)
            except OSError as exc:
                raise NotebookError(f"{str(relative)!r}: {part!r} is not a folder inside the output folder") from exc
            os.close(fd)
            fd = inner
        final = relative.name
        try:
            existing = os.stat(final, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            import stat

            if not stat.S_ISREG(existing.st_mode):
                raise NotebookError(f"{str(relative)!r} exists and is not a regular file; nothing was written")
            if not overwrite:
                raise NotebookError(f"{str(relative)!r} exists; pass overwrite to replace it")
        staging = f".{final}.{secrets.token_hex(6)}.tmp"
        out = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o644, dir_fd=fd)
        try:
            with os.fdopen(out, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(staging, final, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            try:
                os.unlink(staging, dir_fd=fd)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)
    return output_dir / relative


def export(history: History, output_dir: Path | None, name: str = DEFAULT_NAME, *, overwrite: bool = True) -> Path:
    if output_dir is None:
        raise NotebookError("there is no output folder to write the notebook to")
    return write_notebook(output_dir, name, to_notebook(history), overwrite=overwrite)
