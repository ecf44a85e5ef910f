"""Validated, immutable settings shared by the CLI, the server and the Python API."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .mounts import OUTPUT_NAME, Mount
from .netbroker import NetworkPolicy

DEFAULT_TIMEOUT_MS = 30_000
DEFAULT_MAX_OUTPUT_CHARS = 100_000
DEFAULT_MAX_TEXT_CHARS = 100_000  # a result's text part; the structured part keeps max_output_chars
DEFAULT_MAX_CODE_BYTES = 1_000_000
DEFAULT_MEMORY_LIMIT_MB = 1024
DEFAULT_GRACE_MS = 1_000
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


@dataclass(frozen=True)
class RuntimeConfig:
    """How the sandbox runtime is started and bounded."""

    timeout_ms: int = DEFAULT_TIMEOUT_MS
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS  # of each stream, repeated in a result's text block
    max_code_bytes: int = DEFAULT_MAX_CODE_BYTES
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
    grace_ms: int = DEFAULT_GRACE_MS
    node: str | None = None
    runtime_cache_dir: Path | None = None
    package_cache_dir: Path | None = None
    package_source: str | None = None  # folder or URL; None means Pyodide's CDN
    inline_images: bool = True
    isolation: str = "auto"  # auto | strict | standard
    network: NetworkPolicy = field(default_factory=NetworkPolicy)  # hosts code may reach; none by default
    use_snapshot: bool = True  # restore a saved memory image instead of booting from scratch
    use_bytecode_cache: bool = True  # packages' modules compiled once per machine (see _bytecode)
    use_package_trees: bool = True  # wheels unpacked once per machine and linked (packages/trees.py)
    mounts: tuple[Mount, ...] = ()
    output_dir: Path | None = None
    preload: tuple[str, ...] = ()  # lock-file packages loaded in the background after start-up
    spare_interpreter: bool = False  # keep a second interpreter ready so a reset is a swap (costs memory)
    notebook: str | None = None  # a name in output_dir: the session is rewritten there after every call

    def __post_init__(self) -> None:
        for name in (
            "timeout_ms",
            "max_output_chars",
            "max_text_chars",
            "max_code_bytes",
            "memory_limit_mb",
            "grace_ms",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        if self.isolation not in ("auto", "strict", "standard"):
            raise ValueError(f"isolation must be auto, strict or standard, got {self.isolation!r}")
        if self.memory_limit_mb < 64:
            raise ValueError(f"memory_limit_mb must be at least 64, got {self.memory_limit_mb}")
        if any(not name or not name.strip() for name in self.preload):
            raise ValueError(f"preload names must not be empty, got {list(self.preload)}")
        names = [mount.name for mount in self.mounts]
        if len(set(names)) != len(names) or OUTPUT_NAME in names:
            raise ValueError(f"mount names must be unique and not {OUTPUT_NAME!r} (use output_dir), got {names}")
