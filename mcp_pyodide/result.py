"""What a call returns to a user of the Python API: plain, typed values (no wire payloads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ._protocol import ErrorInfo

__all__ = ["ErrorInfo", "InterpreterInfo", "PackageOutcome", "Result"]


@dataclass
class PackageOutcome:
    """What happened to one requested package."""

    name: str
    version: str | None = None
    installed: bool = False
    error: str | None = None
    dependencies: list[str] = field(default_factory=list)


@dataclass
class Result:
    """What one run produced, as a user would want to read it."""

    stdout: str = ""
    stderr: str = ""
    result: str | None = None
    error: ErrorInfo | None = None
    timed_out: bool = False
    state_reset: bool = False
    duration_ms: float = 0.0
    stdout_truncated_chars: int = 0
    stderr_truncated_chars: int = 0
    # Decided by the broker from the output folder itself, never from the sandbox's word.
    figures: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    files_not_returned: int = 0
    # Whether the run created, changed or removed anything in a writable mount.
    mounts_changed: bool = False
    loaded_packages: list[PackageOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def value(self) -> str | None:
        return self.result


@dataclass(frozen=True)
class InterpreterInfo:
    """The interpreter a reset started."""

    pyodide_version: str
    generation: int
