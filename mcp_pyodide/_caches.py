"""Caches kept between runs and shared by every server on the machine: the snapshot and the font list.

Both are written by the broker only, and only from runs no user code took part in:
- the memory snapshot is taken by a fresh worker right after boot, before the first request runs
  (worker.mjs `boot()`); its key names everything it was made from, our own code included;
- matplotlib's font list is built by a one-off runtime the broker starts itself, with no mounts
  (the bytecode builder's staging folder aside), no network and only the broker's code: the
  bytecode builder when it loads matplotlib anyway, else `build_fonts`. A user's run never
  hands one back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

from ._paths import cache_root
from ._protocol import PROTOCOL_VERSION
from ._runtime_files import HOST_FILES, PYODIDE_VERSION, lock_digest
from .netbroker import NetworkPolicy

if TYPE_CHECKING:
    from .config import RuntimeConfig
    from .runtime import Runtime

log = logging.getLogger("mcp_pyodide.runtime")

GUEST_MODULES = ("mcp_guest_executor", "mcp_guest_figures")
FONT_LIST = "fontlist.json"
MAX_FONT_LIST_CHARS = 4_000_000


def guest_modules() -> dict[str, str]:
    """The Python that runs inside the sandbox, read from real .py files in this package."""
    folder = resources.files("mcp_pyodide.guest")
    return {name: folder.joinpath(f"{name}.py").read_text(encoding="utf-8") for name in GUEST_MODULES}


def code_digest(host_dir: Path) -> str:
    """What our own runtime code is: the Node scripts, the guest sources and the protocol version."""
    digest = hashlib.sha256(f"protocol {PROTOCOL_VERSION}\n".encode())
    for name in sorted(n for n in HOST_FILES if n.endswith(".mjs")):
        digest.update(name.encode() + b"\0" + (host_dir / name).read_bytes() + b"\0")
    for name, source in sorted(guest_modules().items()):
        digest.update(name.encode() + b"\0" + source.encode() + b"\0")
    return digest.hexdigest()[:16]


def snapshot_file(host_dir: Path, node_major: int) -> Path:
    """A memory image of a freshly booted interpreter: restoring it is ~10x faster than booting.

    The key changes with Pyodide, its npm lock, the Node major version and our own code, so an
    upgraded server never restores an image made by older code. The Node process may read it,
    never write it.
    """
    key = f"pyodide-{PYODIDE_VERSION}-{lock_digest(host_dir)}-{code_digest(host_dir)}-node{node_major}"
    return cache_root() / "snapshots" / f"{key}.bin"


def partial_path(target: Path) -> Path:
    """Where `target` is written before it replaces any old one (stale ones end in `.tmp`)."""
    return target.with_suffix(f".{os.getpid()}.tmp")


def write_atomic(target: Path, data: bytes) -> None:
    """Write `target` whole or not at all: other servers on the machine read these files."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target)
    partial.write_bytes(data)
    os.replace(partial, target)


def on_this_loop(task: asyncio.Task[None] | None) -> TypeGuard[asyncio.Task[None]]:
    """Whether `task` is still at work on the running loop (one of a closed loop never ends)."""
    return task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop()


def save_snapshot(target: Path, raw: bytes) -> None:
    if target.exists():
        return
    try:
        write_atomic(target, raw)
        log.info("saved a %.1f MiB memory snapshot for fast starts: %s", len(raw) / 2**20, target)
    except OSError as exc:
        log.warning("could not save the memory snapshot: %s", exc)
        return
    prune_snapshots(target.parent, now=time.time())


KEEP_SNAPSHOTS = 3  # installs side by side (uvx, venvs, Node majors) each keep theirs
STALE_PARTIAL_S = 3600.0


def prune_snapshots(folder: Path, *, now: float) -> None:
    """Only the newest snapshots stay: each upgrade makes a new 20-30 MB one and nothing reads the old."""
    try:
        images = sorted(folder.glob("*.bin"), key=lambda p: p.stat().st_mtime, reverse=True)
        partials = [p for p in folder.glob("*.tmp") if now - p.stat().st_mtime > STALE_PARTIAL_S]
        for old in [*images[KEEP_SNAPSHOTS:], *partials]:
            old.unlink(missing_ok=True)
    except OSError as exc:  # another server pruning at the same time, or a read-only cache
        log.debug("could not prune old snapshots: %s", exc)


def mpl_config_dir() -> Path:
    """matplotlib's font list, kept between runs so only the first figure on a machine pays for it."""
    return cache_root() / "matplotlib"


def font_list_ok(text: str) -> bool:
    """The shape matplotlib's font list has; a failed build must not be kept."""
    if len(text) > MAX_FONT_LIST_CHARS:
        return False
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and "_version" in data and isinstance(data.get("ttflist"), list)


def save_font_list(text: str) -> bool:
    target = mpl_config_dir() / FONT_LIST
    if target.exists() or not font_list_ok(text):
        return False
    try:
        write_atomic(target, text.encode("utf-8"))
    except OSError as exc:
        log.warning("could not keep the matplotlib font cache: %s", exc)
        return False
    log.info("built matplotlib's font cache in a clean interpreter: %s", target)
    return True


# Runs in the clean one-off interpreter: no user code, only this.
_FONT_BUILD_CODE = """
import glob, os, sys
import matplotlib, matplotlib.font_manager as _fm
_paths = [os.path.join(os.path.dirname(_fm.__file__), "fontlist.json")]
_paths += sorted(glob.glob(os.path.join(matplotlib.get_cachedir(), "fontlist-*.json")))
for _path in _paths:
    if os.path.exists(_path):
        sys.stdout.write(open(_path, encoding="utf-8").read())
        break
"""

_font_build: asyncio.Task[None] | None = None
FINISH_TIMEOUT_S = 600.0


async def finish_pending(timeout_s: float = FINISH_TIMEOUT_S) -> None:
    """Wait for the cache builds this loop started (snapshot, bytecode, font list), then end any
    left: a one-shot command or a `SyncSandbox` would drop them at exit, and every later start
    on the machine would pay for them again."""
    from . import _bytecode, _snapshot_maker

    tasks = [task for task in (*_snapshot_maker.tasks(), _bytecode.task(), _font_build) if on_this_loop(task)]
    if not tasks:
        return
    _, late = await asyncio.wait(tasks, timeout=timeout_s)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)


def build_fonts_soon(config: RuntimeConfig) -> None:
    """Start building the font list in a clean runtime, once per process, if no server has one yet."""
    global _font_build
    if not fonts_wanted():
        return
    _font_build = asyncio.get_running_loop().create_task(build_fonts(config))


def fonts_wanted() -> bool:
    return _font_build is None and not (mpl_config_dir() / FONT_LIST).exists()


async def build_fonts_in(builder: Runtime) -> None:
    """Build and keep the font list in `builder`, one of the broker's clean runtimes with matplotlib loaded."""
    result, _ = await builder.execute(_FONT_BUILD_CODE)
    if result.error is not None or not save_font_list(result.stdout):
        log.warning("the clean interpreter made no usable font cache (%s)", result.error or "bad output")


async def build_fonts(config: RuntimeConfig) -> None:
    from .runtime import Runtime  # the builder is a runtime of its own

    clean = replace(
        config,
        mounts=(),
        output_dir=None,
        network=NetworkPolicy(),
        max_output_chars=MAX_FONT_LIST_CHARS,
        timeout_ms=300_000,
    )
    builder = Runtime(clean)
    try:
        loaded = await builder.load_packages(["matplotlib"])
        if loaded.error:
            log.warning("could not build the matplotlib font cache: %s", loaded.error)
            return
        await build_fonts_in(builder)
    except Exception as exc:  # noqa: BLE001 - a cache we could not build is only slower figures
        log.warning("could not build the matplotlib font cache: %s", exc)
    finally:
        await builder.close()
