"""Verified wheels unpacked once per machine, so interpreters link them instead of unzipping.

Pyodide's `loadPackage` unzips every wheel inside WebAssembly into the in-memory file system,
in every interpreter: about 0.4 s of numpy's 0.5 s load, and the files then live in each
interpreter's JavaScript heap. The broker instead unpacks a wheel on the host, from bytes it has
just checked against the lock's sha256, into `package-trees/<sha256>/` (atomically: a temporary
folder renamed into place, with a manifest written last). Interpreters see that folder read-only
at `GUEST_TREES` and link its top-level entries into site-packages (worker.mjs).

Only plain wheels that install into site-packages qualify; anything else (shared libraries,
wheels with a `.data` folder, a member name that is not a clean relative path, a link) is left
to `loadPackage`, which is always the fallback.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .._paths import cache_root
from .lock import LockEntry

__all__ = ["GUEST_TREES", "PackageTree", "ensure_tree", "trees_dir"]

GUEST_TREES = "/lib/mcp-pyodide-packages"  # where interpreters see trees_dir(), read-only
MANIFEST = ".mcp-pyodide-tree.json"
MAX_WHEEL_BYTES = 512 * 1024 * 1024
MAX_UNPACKED_BYTES = 2 * 1024 * 1024 * 1024
INSTALLER = "pyodide.loadPackage"  # what loadPackage records, so micropip sees the same thing
SOURCE = "pyodide"


def trees_dir() -> Path:
    return cache_root() / "package-trees"


@dataclass(frozen=True)
class PackageTree:
    """One unpacked wheel: its folder under trees_dir(), what to link, what to preload."""

    name: str
    file_name: str
    folder: str  # the wheel's sha256: a folder name under trees_dir()
    entries: tuple[str, ...]  # top-level names, linked into site-packages
    dynlibs: tuple[str, ...]  # .so files, relative to site-packages, loaded as loadPackage does


class TreeError(Exception):
    """The wheel cannot be served as a tree (the caller falls back to loadPackage)."""


def eligible(entry: LockEntry) -> bool:
    return entry.install_dir == "site" and entry.package_type == "package" and entry.file_name.endswith(".whl")


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's clean relative path, None for a folder entry; TreeError for anything else."""
    name = info.filename
    if "\\" in name or "\0" in name or name.startswith("/"):
        raise TreeError(f"member name {name!r} is not a relative path")
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise TreeError(f"member {name!r} is not a regular file")
    path = PurePosixPath(name)
    if any(part in ("", ".", "..") for part in name.rstrip("/").split("/")):
        raise TreeError(f"member name {name!r} is not a clean relative path")
    return None if info.is_dir() else path


def _unpack(data: bytes, entry: LockEntry, target: Path) -> PackageTree:
    entries: set[str] = set()
    dynlibs: list[str] = []
    total = 0
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = [(info, _member_path(info)) for info in archive.infolist()]
        files = [(info, path) for info, path in members if path is not None]
        if any(path.parts[0].endswith(".data") for _, path in files):
            raise TreeError("the wheel has a .data folder")
        dist_infos = {path.parts[0] for _, path in files if path.parts[0].endswith(".dist-info")}
        if len(dist_infos) != 1:
            raise TreeError(f"the wheel has {len(dist_infos)} .dist-info folders")
        for info, path in files:
            total += info.file_size
            if total > MAX_UNPACKED_BYTES:
                raise TreeError("the wheel unpacks to more than 2 GiB")
            entries.add(path.parts[0])
            if path.name.endswith(".so"):
                dynlibs.append(str(path))
            out = target.joinpath(*path.parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(out, "xb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
    dist_info = target / dist_infos.pop()
    (dist_info / "INSTALLER").write_text(INSTALLER)
    (dist_info / "PYODIDE_SOURCE").write_text(SOURCE)
    return PackageTree(entry.name, entry.file_name, entry.sha256, tuple(sorted(entries)), tuple(sorted(dynlibs)))


def _read_manifest(folder: Path, entry: LockEntry) -> PackageTree | None:
    try:
        raw = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    names, libs = raw.get("entries"), raw.get("dynlibs")
    if not isinstance(names, list) or not isinstance(libs, list):
        return None
    if not all(isinstance(n, str) and n and "/" not in n and n not in (".", "..") for n in names):
        return None
    if not all(isinstance(p, str) and not p.startswith("/") and ".." not in p.split("/") for p in libs):
        return None
    return PackageTree(entry.name, entry.file_name, entry.sha256, tuple(names), tuple(libs))


def ensure_tree(entry: LockEntry, wheel: Path, root: Path | None = None) -> PackageTree | None:
    """The unpacked tree of `entry` (made now from `wheel` if missing), or None to use loadPackage.

    Blocking (run it in a thread). The wheel is read once and hashed: a tree is only ever made
    from the very bytes that matched the lock.
    """
    if not eligible(entry) or len(entry.sha256) != 64 or not all(c in "0123456789abcdef" for c in entry.sha256):
        return None
    root = root or trees_dir()
    folder = root / entry.sha256
    if (tree := _read_manifest(folder, entry)) is not None:
        return tree
    if folder.exists():  # renamed into place only with its manifest: this one is damaged
        shutil.rmtree(folder, ignore_errors=True)
    try:
        with open(wheel, "rb") as handle:
            data = handle.read(MAX_WHEEL_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_WHEEL_BYTES or hashlib.sha256(data).hexdigest() != entry.sha256:
        return None
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.sha256[:12]}-", dir=root))
    try:
        tree = _unpack(data, entry, staging)
        manifest = {"name": entry.name, "file_name": entry.file_name, "entries": tree.entries, "dynlibs": tree.dynlibs}
        (staging / MANIFEST).write_text(json.dumps(manifest))
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, folder)
        except OSError:  # another process made it first (or a broken leftover holds the name)
            return _read_manifest(folder, entry)
        return tree
    except (TreeError, zipfile.BadZipFile, OSError, ValueError):
        return None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
