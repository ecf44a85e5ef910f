"""Verified wheels unpacked once per machine, so interpreters link them instead of unzipping.

Pyodide's `loadPackage` unzips every wheel inside WebAssembly into the in-memory file system,
in every interpreter: about 0.4 s of numpy's 0.5 s load, and the files then live in each
interpreter's JavaScript heap. The broker instead unpacks a wheel on the host, from bytes it has
just checked against the lock's sha256, into `package-trees/<sha256>/` (atomically: a temporary
folder renamed into place, with a manifest written last). Interpreters see that folder read-only
at `GUEST_TREES`, make its folders in their own site-packages and link each file there
(worker.mjs); a file opened for writing becomes that interpreter's own copy first.

Only wheels that install into site-packages qualify; anything else (shared libraries, a member
name that is not a clean relative path, a link) is left to `loadPackage`, always the fallback.
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
    """One unpacked wheel: its folder under trees_dir(), what to link, what to preload.

    Paths are relative to the tree, which mirrors site-packages; `dirs` lists parents first.
    """

    name: str
    file_name: str
    folder: str  # the wheel's sha256: a folder name under trees_dir()
    dirs: tuple[str, ...]  # made in site-packages
    files: tuple[str, ...]  # linked from site-packages
    dynlibs: tuple[str, ...]  # .so files, loaded as loadPackage does
    datafiles: tuple[str, ...]  # `<dist>.data/data/X`: also linked at sys.prefix/X, as loadPackage copies them


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
    total = 0
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = [(info, _member_path(info)) for info in archive.infolist()]
        files = [(info, path) for info, path in members if path is not None]
        dist_infos = {path.parts[0] for _, path in files if path.parts[0].endswith(".dist-info")}
        if len(dist_infos) != 1:
            raise TreeError(f"the wheel has {len(dist_infos)} .dist-info folders")
        for info, path in files:
            total += info.file_size
            if total > MAX_UNPACKED_BYTES:
                raise TreeError("the wheel unpacks to more than 2 GiB")
            out = target.joinpath(*path.parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(out, "xb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
    dist_info = PurePosixPath(dist_infos.pop())
    for name, text in (("INSTALLER", INSTALLER), ("PYODIDE_SOURCE", SOURCE)):
        target.joinpath(dist_info.name, name).write_text(text)
    paths = {path for _, path in files} | {dist_info / "INSTALLER", dist_info / "PYODIDE_SOURCE"}
    return _tree(entry, sorted(str(path) for path in paths))


def _tree(entry: LockEntry, files: list[str]) -> PackageTree:
    """The manifest of a tree holding `files` (clean relative paths)."""
    dirs = sorted({str(parent) for name in files for parent in PurePosixPath(name).parents if str(parent) != "."})
    return PackageTree(
        name=entry.name,
        file_name=entry.file_name,
        folder=entry.sha256,
        dirs=tuple(dirs),
        files=tuple(files),
        dynlibs=tuple(name for name in files if name.endswith(".so")),
        datafiles=tuple(name for name in files if _is_datafile(PurePosixPath(name))),
    )


def _is_datafile(path: PurePosixPath) -> bool:
    return len(path.parts) > 2 and path.parts[0].endswith(".data") and path.parts[1] == "data"


def _clean(name: object) -> bool:
    if not isinstance(name, str) or {"\\", "\0"} & set(name):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def _read_manifest(folder: Path, entry: LockEntry) -> PackageTree | None:
    """The tree's file list, if its manifest is one we wrote (only clean relative paths)."""
    try:
        raw = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    files = raw.get("files") if isinstance(raw, dict) else None
    if not isinstance(files, list) or not files or not all(_clean(name) for name in files):
        return None
    return _tree(entry, sorted(files))


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
    # Renamed into place only with its manifest, so one without is damaged (changed from outside).
    # Read once more first: another server may have just renamed a good one into place.
    if folder.exists() and _read_manifest(folder, entry) is None:
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
        manifest = {"name": entry.name, "file_name": entry.file_name, "files": tree.files}
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
