"""Host folders made visible to Python, and the one place their paths are checked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
GUEST_ROOT = "/mnt"
OUTPUT_NAME = "output"


class MountError(ValueError):
    """A mount specification or a path through a mount is not acceptable."""


@dataclass(frozen=True)
class Mount:
    """A host folder shown to Python at /mnt/NAME."""

    name: str
    host_path: Path  # absolute, symlinks resolved
    read_only: bool = False

    @property
    def guest_path(self) -> str:
        return f"{GUEST_ROOT}/{self.name}"

    @classmethod
    def create(cls, name: str, path: str | Path, read_only: bool = False) -> Mount:
        if not NAME_RE.match(name):
            raise MountError(
                f"mount name {name!r} is not valid: use letters, digits, '_', '-' or '.', starting with a letter or digit"
            )
        host = Path(path).expanduser()
        if not read_only:
            host.mkdir(parents=True, exist_ok=True)
        if not host.is_dir():
            raise MountError(f"mount {name!r}: {host} is not a folder")
        return cls(name=name, host_path=host.resolve(strict=True), read_only=read_only)
