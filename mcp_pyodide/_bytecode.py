"""Compiled bytecode of lock-file packages, kept between runs so a first import skips compile().

Pyodide's wheels hold sources only, so every interpreter compiles every module it imports:
44 % of a first matplotlib figure. Once per machine and package, a one-off runtime the broker
starts itself (no user mounts, no network, only the code below) compiles every module of the
package into a staging folder. The broker keeps a file only if it is a checked-hash pyc for
CPython 3.12 whose hash is that of the module's source in the verified wheel, and writes it
into a tree that interpreters mount read-only as `sys.pycache_prefix`. CPython checks each
file against its source once more before using it, so a stale file costs a compile, never a
wrong module. A user's run never hands a file back.
"""

from __future__ import annotations

import _imp
import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from . import _caches
from ._outputs import read_inside
from ._paths import cache_root
from ._runtime_files import PYODIDE_VERSION
from .mounts import Mount
from .netbroker import NetworkPolicy

if TYPE_CHECKING:
    from .config import RuntimeConfig
    from .packages.lock import LockEntry

log = logging.getLogger("mcp_pyodide.runtime")

# Pyodide 0.27's CPython 3.12: its pyc magic number and cache tag.
PYC_MAGIC = (3531).to_bytes(2, "little") + b"\r\n"
PYC_TAG = "cpython-312"
CHECKED_HASH = 0b11  # PEP 552 flags: hash-based, checked against the source on import
SITE_PACKAGES = PurePosixPath("lib/python3.12/site-packages")  # relative to the guest's /
MAX_PYC_BYTES = 16 * 1024 * 1024  # numpy's largest module compiles to well under 1 MB
STAGING_NAME = "bytecode"  # the builder's one writable mount: /mnt/bytecode
GUEST_TREE = "/lib/mcp-pyodide-bytecode"  # where interpreters mount the tree (worker.mjs)
STDLIB_ZIP = "python_stdlib.zip"  # in the Pyodide folder; the guest's /lib/python312.zip
BUILD_TIMEOUT_MS = 600_000  # numpy and matplotlib together compile in about 8 s


def cache_dir() -> Path:
    """This Pyodide's bytecode cache: `tree/` (mirrors the guest's /), `done/` (one mark per wheel)."""
    return cache_root() / "bytecode" / f"pyodide-{PYODIDE_VERSION}"


def tree_dir() -> Path:
    return cache_dir() / "tree"


@functools.cache
def _stdlib_name(source: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    return f"stdlib-{digest}.zip"


def stdlib_name(pyodide_dir: Path) -> str:
    """The compiled standard library's file name in the tree, keyed by the zip it copies.

    It holds that zip's sources, each with its pyc: interpreters put it on `sys.path` ahead of
    Pyodide's own (zipimport checks a hash-based pyc against the source beside it).
    """
    source = pyodide_dir / STDLIB_ZIP
    info = source.stat()
    return _stdlib_name(source, info.st_size, info.st_mtime_ns)


def _mark(entry: LockEntry) -> Path:
    return cache_dir() / "done" / entry.file_name


def is_done(entry: LockEntry) -> bool:
    """Whether `entry`'s wheel (this exact file) has been compiled on this machine."""
    try:
        return _mark(entry).read_text(encoding="ascii").strip() == entry.sha256.lower()
    except (OSError, UnicodeDecodeError):
        return False


def wanted(entries: Iterable[LockEntry]) -> list[LockEntry]:
    """The entries whose modules go to site-packages and are not compiled yet."""
    return [e for e in entries if e.install_dir == "site" and e.file_name.endswith(".whl") and not is_done(e)]


def source_hash(source: bytes) -> bytes:
    """CPython 3.12's hash of a module source, as a checked-hash pyc records it.

    `_imp.source_hash` takes the magic number as its key, so the host's Python computes the
    guest's hash whatever its own version.
    """
    return _imp.source_hash(int.from_bytes(PYC_MAGIC, "little"), source)


def pyc_path(member: str) -> PurePosixPath | None:
    """Where a wheel member's pyc sits below site-packages in the tree; None if it has none."""
    path = PurePosixPath(member)
    if path.suffix != ".py" or path.is_absolute() or ".." in path.parts or "\\" in member:
        return None
    if path.parts and path.parts[0].endswith(".data"):
        return None  # installed elsewhere (scripts, headers), not importable from site-packages
    return path.with_name(f"{path.stem}.{PYC_TAG}.pyc")


def check_pyc(data: bytes, source: bytes) -> str | None:
    """Why `data` is not a pyc to keep for `source`, or None when it is."""
    if not 16 <= len(data) <= MAX_PYC_BYTES:
        return f"{len(data)} bytes"
    if data[:4] != PYC_MAGIC:
        return "not CPython 3.12 bytecode"
    if int.from_bytes(data[4:8], "little") != CHECKED_HASH:
        return "not a checked-hash pyc"
    if data[8:16] != source_hash(source):
        return "made from another source"
    return None


def _take(staging: Path, staged: Path, source: bytes) -> tuple[bytes | None, int]:
    """The builder's pyc at `staged` if it checks out against `source`, and 1 if it was refused.

    Read like a file a sandbox made: no symlink anywhere below `staging`, no pipe, bounded.
    """
    data = read_inside(staging, staged, MAX_PYC_BYTES)
    if data is None:
        return None, 0  # not compiled (a syntax error, say): it compiles on import instead
    problem = check_pyc(data, source)
    if problem is not None:
        log.warning("bytecode cache: refused %s from the builder: %s", staged.relative_to(staging), problem)
        return None, 1
    return data, 0


def keep(staging: Path, wheel: Path, entry: LockEntry) -> tuple[int, int]:
    """Move what the builder compiled for `wheel`'s modules into the tree; (kept, refused).

    Only names the wheel has are looked at, each checked against that member's source.
    """
    kept = refused = 0
    staged_site = staging / SITE_PACKAGES
    tree_site = tree_dir() / SITE_PACKAGES
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            relative = pyc_path(info.filename)
            if relative is None or info.is_dir():
                continue
            data, bad = _take(staging, staged_site / relative, archive.read(info))
            refused += bad
            if data is not None:
                _caches.write_atomic(tree_site / relative, data)
                kept += 1
    _caches.write_atomic(_mark(entry), entry.sha256.lower().encode("ascii"))
    return kept, refused


# Runs in the builder's clean interpreter: it has only the wanted packages and their
# dependencies, no user code, and one writable folder.
_COMPILE_CODE = """
import importlib.metadata, importlib.util, os, zipfile
from importlib._bootstrap_external import _code_to_hash_pyc
def _compile(source, filename, target):
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return 0
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as out:
        out.write(_code_to_hash_pyc(code, importlib.util.source_hash(source), True))
    return 1
_site = "/lib/python3.12/site-packages/"
_made = 0
for _dist in importlib.metadata.distributions():
    for _file in _dist.files or ():
        _path = str(_file.locate())
        if _file.suffix == ".py" and _path.startswith(_site):
            with open(_path, "rb") as _f:
                _made += _compile(_f.read(), _path, {staging!r} + os.path.splitext(_path)[0] + ".{tag}.pyc")
if {stdlib!r}:
    with zipfile.ZipFile("/lib/python312.zip") as _zip:
        for _name in _zip.namelist():
            if _name.endswith(".py"):
                _made += _compile(_zip.read(_name), {stdlib!r} + "/" + _name, {staging!r} + "/stdlib/" + _name + "c")
print(_made)
"""

_pending: dict[str, tuple[LockEntry, Path]] = {}  # file name -> (entry, wheel path)
_builder: asyncio.Task[None] | None = None
_stdlib_wanted = False


def build_soon(config: RuntimeConfig, entries: Iterable[LockEntry], package_cache_dir: Path) -> None:
    """Compile the not yet compiled `entries` in the background, one builder per process at a time."""
    global _builder, _stdlib_wanted
    if not config.use_bytecode_cache:
        return
    for entry in wanted(entries):
        _pending.setdefault(entry.file_name, (entry, package_cache_dir / entry.file_name))
    if not _stdlib_wanted and not any(tree_dir().glob("stdlib-*.zip")):
        _stdlib_wanted = True  # compiled with the first packages, or on its own
    if not (_pending or _stdlib_wanted):
        return
    if not _caches.on_this_loop(_builder):
        _builder = asyncio.get_running_loop().create_task(_build_pending(config))


def task() -> asyncio.Task[None] | None:
    """The builder last started in this process (`_caches.finish_pending` waits for it)."""
    return _builder


async def _build_pending(config: RuntimeConfig) -> None:
    global _stdlib_wanted
    while _pending or _stdlib_wanted:
        _stdlib_wanted = False  # build() compiles it if it is still missing
        batch = dict(_pending)
        try:
            await build(config, [entry for entry, _ in batch.values()], {k: w for k, (_, w) in batch.items()})
        except Exception as exc:  # noqa: BLE001 - a cache we could not build only means slower imports
            log.warning("could not build the bytecode cache: %s", exc)
        finally:
            for name in batch:
                _pending.pop(name, None)


def builds_fonts() -> bool:
    """Whether a build waiting or at work loads matplotlib (and so also makes its font list)."""
    return any(entry.name == "matplotlib" for entry, _ in _pending.values())


def builder_config(config: RuntimeConfig, staging: Path) -> RuntimeConfig:
    """The builder's settings: the user's Node and packages, none of their mounts, network or output."""
    return replace(
        config,
        mounts=(Mount.create(STAGING_NAME, staging),),
        output_dir=None,
        network=NetworkPolicy(),
        timeout_ms=BUILD_TIMEOUT_MS,
        max_output_chars=_caches.MAX_FONT_LIST_CHARS,  # the font list comes back on stdout
        preload=(),
        spare_interpreter=False,
        notebook=None,
        use_bytecode_cache=False,
    )


STALE_STAGING_S = 3600.0


def _prune_staging(folder: Path, now: float) -> None:
    """Staging folders of builders killed mid-way (a server ended with SIGKILL) are left behind."""
    for old in folder.glob("build-*"):
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(old, ignore_errors=True)


async def build(config: RuntimeConfig, entries: list[LockEntry], wheels: dict[str, Path]) -> None:
    """Compile `entries` (and the standard library, the first time) in a one-off runtime and keep
    what checks out."""
    from .runtime import Runtime  # the builder is a runtime of its own

    folder = cache_dir() / "staging"
    folder.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(_prune_staging, folder, time.time())
    staging = Path(tempfile.mkdtemp(prefix="build-", dir=folder)).resolve()
    clean = builder_config(config, staging)
    builder = Runtime(clean, helper=True)
    names = ", ".join(e.name for e in entries)
    try:
        pyodide_dir = (await builder.lock_file()).parent
        stdlib = tree_dir() / await asyncio.to_thread(stdlib_name, pyodide_dir)
        stdlib_guest = f"{GUEST_TREE}/{stdlib.name}" if not stdlib.exists() else ""
        if not entries and not stdlib_guest:
            return
        loaded = await builder.load_packages([e.name for e in entries], timeout_ms=BUILD_TIMEOUT_MS)
        if loaded.error:
            log.warning("bytecode cache: the builder could not load %s: %s", names, loaded.error)
            return
        code = _COMPILE_CODE.format(staging=clean.mounts[0].guest_path, tag=PYC_TAG, stdlib=stdlib_guest)
        result, _ = await builder.execute(code, timeout_ms=BUILD_TIMEOUT_MS)
        if result.error is not None:
            log.warning("bytecode cache: the builder failed: %s", result.error.message)
            return
        if "matplotlib" in {e.name for e in entries} and _caches.fonts_wanted():
            await _caches.build_fonts_in(builder)  # one clean runtime with matplotlib for both
        await builder.close()  # nothing may write the staging folder while the broker reads it
        kept, refused = await asyncio.to_thread(_keep_all, staging, entries, wheels)
        if stdlib_guest:
            more = await asyncio.to_thread(keep_stdlib, staging, pyodide_dir / STDLIB_ZIP, stdlib)
            kept, refused = kept + more[0], refused + more[1]
            names += ", the standard library"
        log.info("bytecode cache: kept %d compiled modules of %s (%d refused)", kept, names, refused)
    finally:
        await builder.close()
        await asyncio.to_thread(shutil.rmtree, staging, True)


def keep_stdlib(staging: Path, source: Path, target: Path) -> tuple[int, int]:
    """Write `target`: every member of the standard library zip `source`, each module followed
    by the builder's pyc of it if that checks out; (kept, refused)."""
    kept = refused = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = _caches.partial_path(target)
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out:
        for info in original.infolist():
            data = original.read(info)
            out.writestr(info.filename, data)
            if info.is_dir() or pyc_path(info.filename) is None:
                continue
            pyc, bad = _take(staging, staging / "stdlib" / f"{info.filename}c", data)
            refused += bad
            if pyc is not None:
                out.writestr(f"{info.filename}c", pyc)
                kept += 1
    os.replace(partial, target)
    return kept, refused


def _keep_all(staging: Path, entries: list[LockEntry], wheels: dict[str, Path]) -> tuple[int, int]:
    kept = refused = 0
    for entry in entries:
        try:
            k, r = keep(staging, wheels[entry.file_name], entry)
        except (OSError, zipfile.BadZipFile) as exc:
            log.warning("bytecode cache: could not keep %s: %s", entry.name, exc)
            continue
        kept, refused = kept + k, refused + r
    return kept, refused
