"""What an interpreter session did, kept on the host so it can be exported as a notebook.

Everything recorded here came out of the sandbox, so it is bounded on arrival: each text
field is cut at MAX_FIELD_CHARS, each figure is read by the broker itself (through the
output mount, never following a symlink, PNG magic checked, at most MAX_FIGURE_BYTES and
MAX_FIGURES_PER_CELL), and the whole history holds at most MAX_CELLS entries and
MAX_BYTES; the oldest entries are dropped first and counted, so an export can say so.
"""

from __future__ import annotations

import base64
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .mounts import MountError, open_inside, output_mount, read_bounded

MAX_CELLS = 500
MAX_BYTES = 16 * 1024 * 1024
MAX_FIELD_CHARS = 200_000
MAX_FIGURE_BYTES = 2 * 1024 * 1024
MAX_FIGURES_PER_CELL = 8
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bounded(text: str | None, limit: int = MAX_FIELD_CHARS) -> str:
    if not text:
        return ""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit:,} more characters not kept in the history]"


@dataclass(frozen=True)
class Figure:
    """A PNG the broker read and checked itself, or why it was not kept."""

    name: str
    png_base64: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Entry:
    """One call: code and what came back, or (kind 'reset') a fresh interpreter."""

    kind: str  # "code" | "reset"
    number: int
    started: float  # Unix time
    code: str = ""
    stdout: str = ""
    stderr: str = ""
    result: str | None = None
    error_type: str | None = None
    error_message: str = ""
    traceback: str = ""
    timed_out: bool = False
    state_reset: bool = False
    duration_ms: float = 0.0
    loaded_packages: tuple[str, ...] = ()
    figures: tuple[Figure, ...] = ()

    @property
    def size(self) -> int:
        texts = (self.code, self.stdout, self.stderr, self.result or "", self.error_message, self.traceback)
        return sum(len(t) for t in texts) + sum(len(f.png_base64 or "") for f in self.figures) + 200


class RunResult(Protocol):
    """The parts of a `sandbox.Result` the history reads."""

    stdout: str
    stderr: str
    result: str | None
    timed_out: bool
    state_reset: bool
    duration_ms: float
    figures: list[Path]

    @property
    def error(self) -> Any: ...

    @property
    def loaded_packages(self) -> Any: ...


@dataclass
class History:
    """The session's calls, oldest first, within the bounds above."""

    max_cells: int = MAX_CELLS
    max_bytes: int = MAX_BYTES
    entries: deque[Entry] = field(default_factory=deque)
    dropped: int = 0
    size: int = 0
    count: int = 0

    def record(self, code: str, result: RunResult, *, started: float, output_dir: Path | None) -> Entry:
        error = result.error
        outcomes: Iterable[Any] = result.loaded_packages or ()
        self.count += 1
        entry = Entry(
            kind="code",
            number=self.count,
            started=started,
            code=bounded(code),
            stdout=bounded(result.stdout),
            stderr=bounded(result.stderr),
            result=bounded(result.result) if result.result is not None else None,
            error_type=bounded(str(error.type), 200) if error is not None else None,
            error_message=bounded(str(error.message)) if error is not None else "",
            traceback=bounded(str(error.traceback)) if error is not None else "",
            timed_out=bool(result.timed_out),
            state_reset=bool(result.state_reset),
            duration_ms=float(result.duration_ms),
            loaded_packages=tuple(bounded(f"{o.name} {o.version or ''}".strip(), 200) for o in outcomes),
            figures=read_figures(result.figures, output_dir),
        )
        self._add(entry)
        return entry

    def record_reset(self) -> None:
        self.count += 1
        self._add(Entry(kind="reset", number=self.count, started=time.time()))

    def _add(self, entry: Entry) -> None:
        self.entries.append(entry)
        self.size += entry.size
        while self.entries and (len(self.entries) > self.max_cells or self.size > self.max_bytes):
            self.size -= self.entries.popleft().size
            self.dropped += 1


def read_figures(paths: Iterable[Path], output_dir: Path | None) -> tuple[Figure, ...]:
    """Read each figure through the output mount: no symlinks out, regular files, PNG only, bounded."""
    figures: list[Figure] = []
    for count, path in enumerate(paths):
        name = Path(path).name[:200]
        if count >= MAX_FIGURES_PER_CELL:
            figures.append(Figure(name, problem=f"not kept: at most {MAX_FIGURES_PER_CELL} figures per cell"))
            continue
        if output_dir is None:
            figures.append(Figure(name, problem="not kept: there is no output folder"))
            continue
        figures.append(_read_png(Path(path), output_dir, name))
    return tuple(figures)


def _read_png(path: Path, output_dir: Path, name: str) -> Figure:
    try:
        mount = output_mount(output_dir)
        relative = str(path.relative_to(mount.host_path)) if path.is_absolute() else str(path)
        fd, info, _ = open_inside(mount, relative)
    except (MountError, ValueError, OSError) as exc:
        return Figure(name, problem=f"not kept: {exc}")
    try:
        if info.st_size > MAX_FIGURE_BYTES:
            return Figure(name, problem=f"not kept: larger than {MAX_FIGURE_BYTES:,} bytes")
        data = read_bounded(fd, MAX_FIGURE_BYTES)
    finally:
        os.close(fd)
    if len(data) > MAX_FIGURE_BYTES:
        return Figure(name, problem=f"not kept: larger than {MAX_FIGURE_BYTES:,} bytes")
    if not data.startswith(PNG_MAGIC):
        return Figure(name, problem="not kept: not a PNG file")
    return Figure(name, png_base64=base64.b64encode(data).decode("ascii"))


R = TypeVar("R", bound=RunResult)


def recorded(method: Callable[..., Coroutine[Any, Any, R]]) -> Callable[..., Coroutine[Any, Any, R]]:
    """Wrap `Sandbox.execute` so every call lands in `self.history` (then `after_record()`)."""

    @wraps(method)
    async def wrapper(self: Any, code: str, *args: Any, **kwargs: Any) -> R:
        started = time.time()
        result = await method(self, code, *args, **kwargs)
        self.history.record(code, result, started=started, output_dir=self.output_dir)
        await self.after_record()
        return result

    return wrapper
