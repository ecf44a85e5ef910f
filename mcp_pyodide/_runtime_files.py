"""Locate the Node-side files: the runtime a wheel carries, or one installed from npm.

A wheel carries the verified `pyodide` package (see hatch_build.py). A checkout has
none, so its npm packages are installed with `npm ci`, which checks every file against
the integrity hashes in the shipped `package-lock.json`. The install goes to a
folder named after the lockfile's hash, built beside its final place and
renamed into it, so a half-finished install is never used and several servers
starting at once do not trip over each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ._node import NodeBinary
from ._paths import cache_root
from .errors import SetupError

PYODIDE_VERSION = "0.27.7"
HOST_FILES = ("host.mjs", "worker.mjs", "protocol.mjs", "scope.mjs", "package.json", "package-lock.json")


@dataclass(frozen=True)
class RuntimeFiles:
    """Every file the Node process needs, listed in one place."""

    host_dir: Path  # our own JavaScript
    modules_dir: Path  # the installed node_modules

    @property
    def host_script(self) -> Path:
        return self.host_dir / "host.mjs"

    @property
    def pyodide_dir(self) -> Path:
        return self.modules_dir / "pyodide"

    @property
    def lock_file(self) -> Path:
        return self.pyodide_dir / "pyodide-lock.json"

    def readable_paths(self) -> list[Path]:
        """What the sandbox may read: our scripts and the pyodide package, not `ws` or anything else."""
        return [self.host_dir / name for name in HOST_FILES if name.endswith(".mjs")] + [self.pyodide_dir]


def host_dir() -> Path:
    """The `node_runtime` folder: inside the installed package, or beside it in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "node_runtime", here.parent / "node_runtime"):
        if (candidate / "host.mjs").exists():
            return candidate
    raise SetupError(f"the node_runtime folder is missing (looked in {here} and {here.parent})")


def lock_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "package-lock.json").read_bytes()).hexdigest()[:16]


def bundled_runtime(source: Path) -> RuntimeFiles | None:
    """The pyodide package a wheel carries (put there, verified, by hatch_build.py), if any."""
    files = RuntimeFiles(host_dir=source, modules_dir=source / "node_modules")
    if (files.pyodide_dir / ".bundled").is_file() and (files.pyodide_dir / "pyodide.mjs").is_file():
        return files
    return None


def ensure_runtime(node: NodeBinary, *, cache_dir: Path | None = None, quiet: bool = False) -> RuntimeFiles:
    """Return the runtime files: the wheel's bundled copy, or one installed from npm (checkouts)."""
    source = host_dir()
    bundled = bundled_runtime(source)
    if bundled is not None:
        return bundled
    root = (cache_dir or cache_root() / "node-runtime") / f"pyodide-{PYODIDE_VERSION}-{lock_digest(source)}"
    marker = root / ".installed"
    if not marker.exists():
        _install(node, source, root, quiet=quiet)
    files = RuntimeFiles(host_dir=source, modules_dir=root / "node_modules")
    if not (files.pyodide_dir / "pyodide.mjs").exists():
        shutil.rmtree(root, ignore_errors=True)
        raise SetupError(f"the runtime install in {root} is incomplete; it was removed, start again to reinstall")
    return files


def _npm_for(node: NodeBinary) -> list[str]:
    """npm beside the chosen node (wheel-provided Node ships npm as a JS file)."""
    node_dir = Path(node.path).resolve().parent
    for cli in (
        node_dir.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js",
        node_dir / "node_modules" / "npm" / "bin" / "npm-cli.js",
    ):
        if cli.exists():
            return [node.path, str(cli)]
    npm = shutil.which("npm")
    if npm:
        return [npm]
    raise SetupError("npm was not found; it ships with Node.js: reinstall Node.js with npm included")


NETWORK_CODES = ("ECONNREFUSED", "ETIMEDOUT", "ENOTFOUND", "EAI_AGAIN", "ECONNRESET", "ENETUNREACH", "EHOSTUNREACH")
RUNTIME_FIX = (
    "fix: install mcp-pyodide from a wheel (it carries the runtime: `pip wheel --no-deps .` where npm "
    "works, then install that wheel), or run `mcp-pyodide install-runtime` once with npm reachable "
    "(npm_config_registry may name a mirror)"
)


def npm_failure(stderr: str, returncode: int) -> str:
    """npm's many lines of errors reduced to one: what failed, and the fix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    code = next((c for c in NETWORK_CODES if c in stderr), None)
    if code is not None:
        from urllib.parse import urlsplit

        url = next((w for line in lines for w in line.split() if w.startswith(("http://", "https://"))), "")
        target = f" at {urlsplit(url).scheme}://{urlsplit(url).netloc}/" if url else ""
        return f"the Pyodide runtime is not installed and npm cannot reach its registry{target} ({code}); {RUNTIME_FIX}"
    detail = next((line for line in lines if "ERR!" in line and "A complete log" not in line), "")
    detail = detail or (lines[-1] if lines else "no output")
    return f"installing the Pyodide runtime with npm failed (exit {returncode}: {detail[:300]}); {RUNTIME_FIX}"


def _install(node: NodeBinary, source: Path, root: Path, *, quiet: bool) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(
            f"mcp-pyodide: installing the Pyodide {PYODIDE_VERSION} runtime from npm into {root} "
            "(first start only; verified against package-lock.json)...",
            file=sys.stderr,
            flush=True,
        )
    staging = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(source / name, staging / name)
        # npm runs as the trusted installer, not in the sandbox: it needs the user's proxy and
        # certificate settings (NODE_EXTRA_CA_CERTS, HTTPS_PROXY, npm_config_*), so it gets the
        # whole environment.
        env = dict(os.environ)
        env.setdefault("HOME", str(staging))
        cmd = [*_npm_for(node), "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=error"]
        # An unreachable registry must fail in seconds, not after npm's minute of retries.
        cmd += ["--fetch-retries=1", "--fetch-retry-mintimeout=1000", "--fetch-retry-maxtimeout=2000"]
        cmd += ["--fetch-timeout=30000"]
        proc = subprocess.run(cmd, cwd=staging, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise SetupError(npm_failure(proc.stderr, proc.returncode))
        installed = json.loads((staging / "node_modules" / "pyodide" / "package.json").read_text())
        if installed.get("version") != PYODIDE_VERSION:
            raise SetupError(f"npm installed pyodide {installed.get('version')}, expected {PYODIDE_VERSION}")
        (staging / ".installed").write_text(PYODIDE_VERSION + "\n")
        if root.exists() and not (root / ".installed").exists():
            shutil.rmtree(root, ignore_errors=True)  # a broken earlier attempt
        try:
            os.rename(staging, root)
        except OSError:
            if not (root / ".installed").exists():
                raise
            # Another server finished the same install first; theirs is as good as ours.
        if not quiet:
            print("mcp-pyodide: runtime installed.", file=sys.stderr, flush=True)
    except subprocess.TimeoutExpired as exc:
        raise SetupError(
            f"installing the runtime took longer than {exc.timeout} s; check network access to npm"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
