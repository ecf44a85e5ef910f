"""Host folders made visible to Python, and the one place their paths are checked.

Every host-side file access through a mount (tools, resources) goes through
`resolve_inside` or `open_inside`, so the rule "never leave the mount" is
enforced in exactly one place.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import MCPPyodideError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
GUEST_ROOT = "/mnt"
OUTPUT_NAME = "output"
DATA_NAME = "data"
ENV_SEPARATOR = ";"  # not os.pathsep: on POSIX that is ':', which also marks the ':ro' flag
FLAGS = {"ro": True, "rw": False}


class MountError(MCPPyodideError, ValueError):
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
        """Validate a mount; a missing read-write folder is created, a missing read-only one is an error."""
        if not NAME_RE.match(name):
            raise MountError(
                f"mount name {name!r} is not valid: use letters, digits, '_', '-' or '.', "
                "starting with a letter or digit"
            )
        if not str(path).strip():
            raise MountError(f"mount {name!r}: the folder path is empty")
        host = Path(path).expanduser()
        if host.exists() and not host.is_dir():
            raise MountError(f"mount {name!r}: {host} is a file, not a folder")
        if not host.exists():
            if read_only:
                raise MountError(f"mount {name!r}: {host} does not exist (a read-only mount is never created)")
            try:
                host.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise MountError(f"mount {name!r}: cannot create {host}: {exc.strerror or exc}") from None
        try:
            resolved = host.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise MountError(f"mount {name!r}: cannot use {host}: {exc}") from None
        return cls(name=name, host_path=resolved, read_only=read_only)


# -- parsing options ---------------------------------------------------------------------------


def parse_mount_spec(text: str, *, source: str = "--mount") -> Mount:
    """Parse ``NAME=PATH[:ro|:rw]``; only a trailing ``:ro``/``:rw`` is a flag, so paths may hold ':'.

    `source` names the option or variable in error messages, so start-up
    failures point at what the user must fix.
    """
    name, sep, path = text.strip().partition("=")
    name = name.strip()
    if not sep or not name:
        raise MountError(f"{source} {text!r}: expected NAME=PATH[:ro], e.g. data=~/datasets:ro")
    read_only = False
    head, colon, flag = path.rpartition(":")
    if colon and flag.lower() in FLAGS:
        path, read_only = head, FLAGS[flag.lower()]
    if name == OUTPUT_NAME:
        raise MountError(f"{source} {text!r}: the name {OUTPUT_NAME!r} is reserved for --output-dir")
    try:
        return Mount.create(name, path, read_only=read_only)
    except MountError as exc:
        raise MountError(f"{source} {text!r}: {exc}") from None


def split_env_mounts(value: str) -> list[str]:
    """Split ``MCP_PYODIDE_MOUNTS``: specs separated by ';', blanks ignored."""
    return [part.strip() for part in value.split(ENV_SEPARATOR) if part.strip()]


def build_mounts(specs: Iterable[tuple[str, str]], *, legacy_data_dir: str | None = None) -> tuple[Mount, ...]:
    """Turn (source, spec) pairs into mounts, refusing duplicate names.

    `legacy_data_dir` is ``PYODIDE_DATA_DIR`` from the original server: mounted
    read-write as ``data``.
    """
    mounts: list[Mount] = []
    seen: dict[str, str] = {}
    pairs = list(specs)
    if legacy_data_dir:
        pairs.append(("PYODIDE_DATA_DIR", f"{DATA_NAME}={legacy_data_dir}:rw"))
    for source, spec in pairs:
        mount = parse_mount_spec(spec, source=source)
        if mount.name in seen:
            raise MountError(f"{source} {spec!r}: the mount name {mount.name!r} is already used by {seen[mount.name]}")
        seen[mount.name] = f"{source} {spec!r}"
        mounts.append(mount)
    return tuple(mounts)


def output_mount(output_dir: str | Path) -> Mount:
    """The read-write folder Python writes results to, at /mnt/output."""
    return Mount.create(OUTPUT_NAME, output_dir, read_only=False)


def with_output(mounts: Sequence[Mount], output_dir: Path | None) -> tuple[Mount, ...]:
    """All mounts the server shows: the output folder first (it is where new results appear)."""
    if output_dir is None:
        return tuple(mounts)
    return (Mount(name=OUTPUT_NAME, host_path=Path(output_dir), read_only=False), *mounts)


def find_mount(mounts: Sequence[Mount], name: str) -> Mount:
    for mount in mounts:
        if mount.name == name:
            return mount
    known = ", ".join(repr(m.name) for m in mounts) or "none"
    raise MountError(f"no mount named {name!r}; mounts: {known}")


# -- checking paths ----------------------------------------------------------------------------


def relative_part(mount: Mount, path: str) -> str:
    """Map "sub/dir", "/mnt/NAME/sub/dir" or "" to a path relative to the mount; refuse anything else."""
    if "\x00" in path:
        raise MountError(f"{path!r} contains a NUL byte; refused as outside the mount {mount.name!r}")
    text = path.strip()
    if text.startswith("/"):
        root = mount.guest_path
        if text == root or text.startswith(root + "/"):
            return text[len(root) :].lstrip("/")
        raise MountError(
            f"{path!r} is outside the mount {mount.name!r}: give a path relative to the mount "
            f"or one under {mount.guest_path}/"
        )
    if sys.platform == "win32" and (Path(text).drive or text.startswith("\\")):
        raise MountError(f"{path!r} is outside the mount {mount.name!r}")
    return text


def resolve_inside(mount: Mount, relative: str, *, strict: bool = True) -> Path:
    """Join, resolve symlinks, and refuse any result that is not inside the mount's folder.

    With `strict`, the path must exist (reading); without, only its existing
    part is resolved (the check still applies to where it would land).
    """
    rel = relative_part(mount, relative)
    candidate = mount.host_path / rel
    try:
        resolved = candidate.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # symlink loops
        raise MountError(f"{relative!r} in mount {mount.name!r} cannot be resolved: {exc}") from None
    if not resolved.is_relative_to(mount.host_path):
        raise MountError(f"{relative!r} is outside the mount {mount.name!r}")
    if strict and not resolved.exists():
        raise MountError(f"{relative!r} does not exist in mount {mount.name!r}")
    return resolved


def _fd_path(fd: int) -> Path | None:
    """Where an open descriptor really points (Linux: /proc; macOS: F_GETPATH); None if unknown."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        pass
    try:
        import fcntl

        getpath = getattr(fcntl, "F_GETPATH", None)
        if getpath is not None:
            raw = fcntl.fcntl(fd, getpath, bytes(1024))
            return Path(os.fsdecode(raw.split(b"\0", 1)[0]))
    except (ImportError, OSError):
        pass
    return None


def open_inside(mount: Mount, relative: str) -> tuple[int, os.stat_result, Path]:
    """Open a regular file for reading, re-checking where the open descriptor really points.

    Code in the sandbox can change symlinks in a read-write mount between our
    check and our open; checking the opened descriptor closes that race.
    Returns (fd, fstat result, resolved path); the caller closes the fd.
    """
    path = resolve_inside(mount, relative, strict=True)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MountError(f"{relative!r} is outside the mount {mount.name!r} (it changed while opening)") from None
        raise MountError(f"cannot open {relative!r} in mount {mount.name!r}: {exc.strerror or exc}") from None
    try:
        real = _fd_path(fd)
        if real is not None and not real.is_relative_to(mount.host_path):
            raise MountError(f"{relative!r} is outside the mount {mount.name!r}")
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise MountError(f"{relative!r} in mount {mount.name!r} is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise MountError(f"{relative!r} in mount {mount.name!r} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, info, path


def read_bounded(fd: int, limit: int) -> bytes:
    """Read at most `limit` + 1 bytes, so a file that grew past the limit is noticed."""
    chunks: list[bytes] = []
    remaining = limit + 1
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
