"""The checks `mcp-pyodide doctor` runs: each looks at one thing the server needs and returns a `Check`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import __version__
from .._isolation import IsolationUnavailable
from .._isolation import choose as choose_isolation
from .._node import SUPPORTED, NodeBinary, _candidates, find_node, probe_version
from .._runtime_files import PYODIDE_VERSION, RuntimeFiles, ensure_runtime, host_dir
from ..config import RuntimeConfig
from ..errors import MCPPyodideError, SetupError
from ..mounts import MountError
from ..policy import PolicyError, load_policy

Status = Literal["ok", "warn", "fail"]
HEAD_TIMEOUT_S = 5.0
SMOKE_TIMEOUT_S = 180.0


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""
    notes: list[str] = field(default_factory=list)


def check_node(explicit: str | None) -> tuple[Check, NodeBinary | None]:
    notes = []
    for path, origin in _candidates(explicit):
        try:
            version = "v" + ".".join(map(str, probe_version(path)))
        except Exception as exc:  # noqa: BLE001 - any failure to run is a finding here, not a crash
            version = f"does not run ({type(exc).__name__})"
        notes.append(f"candidate {path} (from {origin}): {version}")
    try:
        node = find_node(explicit)
    except SetupError as exc:
        return Check(
            "Node.js",
            "fail",
            str(exc).split(" (", 1)[0],
            notes=notes,
            fix=f"install {SUPPORTED} (https://nodejs.org), or `pip install 'mcp-pyodide[node]'`, "
            "or pass --node /path/to/node",
        ), None
    return Check("Node.js", "ok", f"{node.version_text} at {node.path}", notes=notes), node


def check_runtime(node: NodeBinary, config: RuntimeConfig) -> tuple[Check, RuntimeFiles | None]:
    name = "runtime"
    try:
        source = host_dir()
        files = ensure_runtime(node, cache_dir=config.runtime_cache_dir)
    except SetupError as exc:
        return Check(
            name,
            "fail",
            str(exc),
            fix="run `mcp-pyodide install-runtime` and read its error; "
            "it needs network access to the npm registry the first time",
        ), None
    problems = []
    try:
        installed = json.loads((files.pyodide_dir / "package.json").read_text(encoding="utf-8"))
        wanted = json.loads((source / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Check(
            name,
            "fail",
            f"cannot read the runtime's package.json: {exc}",
            fix="delete the runtime folder and run `mcp-pyodide install-runtime`",
        ), None
    pinned = str(wanted.get("dependencies", {}).get("pyodide", ""))
    if installed.get("version") != PYODIDE_VERSION:
        problems.append(f"installed pyodide is {installed.get('version')}, expected {PYODIDE_VERSION}")
    if pinned != PYODIDE_VERSION:
        problems.append(f"node_runtime/package.json pins pyodide {pinned!r}, expected {PYODIDE_VERSION}")
    if wanted.get("version") != __version__:
        problems.append(
            f"node_runtime/package.json is version {wanted.get('version')}, the Python package {__version__}"
        )
    if not files.lock_file.exists():
        problems.append(f"{files.lock_file} is missing")
    if problems:
        return Check(
            name,
            "fail",
            "; ".join(problems),
            fix=f"delete {files.modules_dir.parent} and run `mcp-pyodide install-runtime`",
        ), None
    if (files.pyodide_dir / ".bundled").is_file():
        return Check(name, "ok", f"Pyodide {PYODIDE_VERSION} bundled with the package in {files.pyodide_dir}"), files
    return Check(name, "ok", f"Pyodide {PYODIDE_VERSION} installed and verified in {files.modules_dir.parent}"), files


def _writable(folder: Path) -> str | None:
    """None if we can create a file in `folder` (creating the folder), else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-", delete=True) as handle:
            handle.write(b"ok")
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def check_package_cache(config: RuntimeConfig) -> Check:
    from ..packages.cache import default_cache_dir

    folder = (config.package_cache_dir or default_cache_dir()).expanduser()
    problem = _writable(folder)
    if problem:
        return Check(
            "package cache",
            "fail",
            f"{folder} is not writable ({problem})",
            fix="pass --cache-dir PATH (or set PYODIDE_CACHE_DIR) to a folder you can write",
        )
    count = sum(1 for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return Check("package cache", "ok", f"{folder} is writable ({count} files cached)")


def head(url: str, timeout: float = HEAD_TIMEOUT_S) -> int:
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": f"mcp-pyodide/{__version__} doctor"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(response.status)


def check_package_source(config: RuntimeConfig) -> Check:
    from ..packages.source import DEFAULT_PACKAGE_SOURCE, FolderSource, HttpSource, open_source

    name = "package source"
    source = open_source(config.package_source)
    if isinstance(source, FolderSource):
        root = source.root
        if not root.is_dir():
            return Check(
                name,
                "fail",
                f"folder {root} does not exist",
                fix="fix --package-source / MCP_PYODIDE_PACKAGE_SOURCE, or drop it to use the Pyodide CDN",
            )
        wheels = sum(1 for p in root.iterdir() if p.suffix in (".whl", ".zip", ".tar"))
        return Check(name, "ok", f"folder {root} ({wheels} package files)")
    assert isinstance(source, HttpSource)
    base = str(config.package_source or DEFAULT_PACKAGE_SOURCE)
    url = base.rstrip("/") + "/pyodide-lock.json"
    label = "the Pyodide CDN" if config.package_source is None else base
    try:
        status = head(url)
    except urllib.error.HTTPError as exc:
        return Check(
            name,
            "warn",
            f"{label}: HEAD {url} answered HTTP {exc.code}",
            fix="check the URL; packages not already cached cannot be loaded until it answers",
        )
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Check(
            name,
            "warn",
            f"{label} is not reachable ({reason})",
            fix="code can run, but packages not already cached will fail to load; check the network "
            "or fill the cache with `mcp-pyodide fetch-packages` / use a local --package-source folder",
        )
    return Check(name, "ok", f"{label} reachable (HTTP {status})")


def check_folders(args: argparse.Namespace, mount_config: Callable[[argparse.Namespace], Any]) -> list[Check]:
    try:
        mounts, output_dir = mount_config(args)
    except (MountError, ValueError) as exc:
        return [
            Check(
                "mounts",
                "fail",
                str(exc),
                fix="fix the --mount / --output-dir option or the "
                "MCP_PYODIDE_MOUNTS / PYODIDE_DATA_DIR variable it names",
            )
        ]
    checks = []
    if output_dir is not None:
        problem = _writable(output_dir)
        checks.append(
            Check(
                "output folder",
                "fail",
                f"{output_dir} is not writable ({problem})",
                fix="pass --output-dir PATH to a folder you can write",
            )
            if problem
            else Check("output folder", "ok", f"{output_dir} is writable (at /mnt/output)")
        )
    for mount in mounts:
        label = f"mount {mount.name}"
        if not os.access(mount.host_path, os.R_OK | os.X_OK):
            checks.append(
                Check(
                    label,
                    "fail",
                    f"{mount.host_path} is not readable",
                    fix=f"give yourself read access to {mount.host_path}, or drop the mount",
                )
            )
            continue
        if mount.read_only:
            checks.append(Check(label, "ok", f"{mount.host_path} is readable (read-only at {mount.guest_path})"))
            continue
        problem = _writable(mount.host_path)
        checks.append(
            Check(
                label,
                "fail",
                f"{mount.host_path} is not writable ({problem})",
                fix=f"make it writable, or mount it read-only with --mount {mount.name}=PATH:ro",
            )
            if problem
            else Check(label, "ok", f"{mount.host_path} is readable and writable (at {mount.guest_path})")
        )
    if not mounts:
        checks.append(Check("mounts", "ok", "none besides the output folder"))
    return checks


def check_policy(args: argparse.Namespace) -> Check:
    path = getattr(args, "policy", None)
    if not path:
        return Check("policy", "ok", "built-in default (every tool allowed; 10 runs a minute)")
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        text = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
        return Check("policy", "fail", text, fix=f"run `mcp-pyodide policy check {path}` and fix what it names")
    return Check("policy", "ok", f"{path} is valid (default {policy.default})")


def check_isolation(node: NodeBinary, config: RuntimeConfig) -> Check:
    try:
        isolation = choose_isolation(node, config.isolation)
    except IsolationUnavailable as exc:
        return Check("isolation", "fail", f"--isolation {config.isolation} is not available here", fix=str(exc))
    status: Status = "ok"
    fix = ""
    if isolation.level.value == "standard" and config.isolation == "auto":
        status = "warn"
        fix = "for network isolation enable unprivileged user namespaces (Linux) or use Node.js 25 or newer"
    return Check("isolation", status, isolation.describe(), fix=fix)


async def _smoke(config: RuntimeConfig) -> tuple[str | None, str, float]:
    from ..sandbox import Sandbox

    started = time.perf_counter()
    async with Sandbox(config=config) as sandbox:
        booted = time.perf_counter()
        result = await asyncio.wait_for(sandbox.execute("1+1"), SMOKE_TIMEOUT_S)
    error = f"{result.error.type}: {result.error.message}" if result.error else ""
    return result.result, error, (booted - started) * 1000


def check_smoke(config: RuntimeConfig) -> Check:
    name = "smoke test"
    started = time.perf_counter()
    try:
        value, error, boot_ms = asyncio.run(asyncio.wait_for(_smoke(config), SMOKE_TIMEOUT_S))
    except (MCPPyodideError, IsolationUnavailable, OSError, TimeoutError) as exc:
        return Check(
            name,
            "fail",
            f"the sandbox did not start: {type(exc).__name__}: {exc}",
            fix="run with MCP_PYODIDE_LOG_LEVEL=debug `mcp-pyodide run -c 1+1` to see the Node side's log",
        )
    total_ms = (time.perf_counter() - started) * 1000
    if value != "2":
        return Check(
            name,
            "fail",
            f"1+1 gave {value!r} {error}".strip(),
            fix="please report this with the output of `mcp-pyodide doctor`",
        )
    return Check(name, "ok", f"booted a sandbox and ran 1+1 = 2 in {total_ms:.0f} ms (boot {boot_ms:.0f} ms)")
