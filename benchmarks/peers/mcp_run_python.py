"""An offline copy of pydantic's `mcp-run-python`, so benchmarks/run.py can race it in the same run.

Script-side only: the product never imports this. `ensure()` sets the copy up once in a cache
directory outside the repository and says how to launch its stdio server.

mcp-run-python 0.0.22 is a Deno TypeScript server that loads Pyodide 0.28.2 (npm) and, on the
first call, the Pyodide packages micropip and pydantic. Out of the box it needs jsr.io (for
`@std/cli`) and the Pyodide CDN (for those packages); neither is reachable here. The patch:

- `src/main.ts` imports `parseArgs` from a vendored `src/parseArgs.ts` (the subset it uses)
  instead of `jsr:@std/cli`; the unused `jsr:@std/path` goes from `deno.jsonc` and `deno.lock`.
  The npm dependencies stay pinned by the shipped `deno.lock` and come from the npm registry.
- `src/runCode.ts` calls `loadPyodide({indexURL, packageCacheDir})` with a local copy of the
  `pyodide` 0.28.2 npm package (`node_modules/pyodide-offline/`, inside the directory the server
  may already read) holding the official package files for micropip, pydantic and their
  dependencies. Those come from the `open-webui` 0.8.0 wheel on PyPI, which ships an unmodified
  copy of them; each is checked against the sha256 in Pyodide's own `pyodide-lock.json`.

Everything else is upstream: the server runs as `mcp-run-python stdio` finally runs it
(`deno run --allow-net --allow-read=./node_modules --node-modules-dir=auto src/main.ts stdio`),
without the Python wrapper's copy-and-install step, which boots Pyodide once more before the
server starts (so the cold-start figure here favours the peer).

    python benchmarks/peers/mcp_run_python.py   # set up (idempotent) and print the launch
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

VERSION = "0.0.22"
DENO_VERSION = "2.9.8"
PYODIDE_VERSION = "0.28.2"
PACKAGE_FILES_FROM = "open-webui==0.8.0"  # its wheel ships the official Pyodide 0.28.2 package files
PACKAGE_FILES_PREFIX = "open_webui/frontend/pyodide/"
LOADED_PACKAGES = ("micropip", "pydantic")  # runCode.ts: pyodide.loadPackage(['micropip', 'pydantic'])
TOOL = "run_python_code"
CODE_ARG = "python_code"
ROOT_ENV = "MCP_PYODIDE_BENCH_PEER_DIR"
READY = "READY.json"
SERVER_ARGS = ["run", "--allow-net", "--allow-read=./node_modules", "--node-modules-dir=auto", "src/main.ts", "stdio"]
STEP_TIMEOUT_S = 600

PARSE_ARGS_TS = """\
// Offline stand-in for jsr:@std/cli/parse-args (jsr.io is unreachable here): the subset main.ts uses.
export function parseArgs(
  argv: string[],
  opts: { string: string[]; default: Record<string, string> },
): Record<string, any> & { _: string[] } {
  const out: Record<string, any> = { ...opts.default, _: [] }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=')
      if (eq > 0) out[arg.slice(2, eq)] = arg.slice(eq + 1)
      else out[arg.slice(2)] = argv[++i]
    } else out._.push(arg)
  }
  return out
}
"""


class PeerSetupError(Exception):
    """The offline copy could not be set up; the message names the step and its cause."""


@dataclass(frozen=True)
class Launch:
    """How to start the peer's stdio server (`env` holds only the additions to the caller's)."""

    command: str
    args: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def default_root() -> Path:
    override = os.environ.get(ROOT_ENV)
    return Path(override) if override else Path.home() / ".cache" / "mcp-pyodide-bench" / "mcp-run-python"


def _say(message: str) -> None:
    print(f"[mcp-run-python setup] {message}", file=sys.stderr, flush=True)


def _run(step: str, cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise PeerSetupError(f"{step}: {' '.join(cmd[:3])}... failed: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise PeerSetupError(f"{step}: `{' '.join(cmd)}` exited {done.returncode}:\n{tail}")
    return done.stdout


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    if text.count(old) != 1:
        raise PeerSetupError(f"patch: {path.name} no longer holds {old.strip()!r} exactly once (upstream changed?)")
    path.write_text(text.replace(old, new), encoding="utf-8")


def _env(root: Path) -> dict[str, str]:
    return {"DENO_DIR": str(root / "deno-dir"), "DENO_NO_UPDATE_CHECK": "1", "NO_COLOR": "1"}


def _pip_download(step: str, requirement: str, dest: Path, extra: list[str] | None = None) -> Path:
    _say(f"pip download {requirement}")
    _run(
        step, [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *(extra or []), requirement, "-d", str(dest)]
    )
    name = _normalize(requirement.split("==")[0]).replace("-", "_")
    found = [p for p in dest.glob("*.whl") if _normalize(p.name.split("-")[0]).replace("-", "_") == name]
    if not found:
        raise PeerSetupError(f"{step}: pip saved no wheel for {requirement} in {dest}")
    return found[0]


def _install_deno(root: Path, tmp: Path) -> Path:
    deno = root / "bin" / "deno"
    wheel = _pip_download("deno", f"deno=={DENO_VERSION}", tmp)
    member = f"deno-{DENO_VERSION}.data/scripts/deno"
    deno.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(deno, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (KeyError, OSError, zipfile.BadZipFile) as exc:
        raise PeerSetupError(f"deno: no {member} in {wheel.name}: {exc}") from exc
    deno.chmod(0o755)
    _say(f"deno {DENO_VERSION} -> {deno}")
    return deno


def _patch_server(root: Path, tmp: Path) -> Path:
    """Extract the Deno sources from the mcp-run-python wheel and apply the offline patch."""
    wheel = _pip_download("mcp-run-python", f"mcp-run-python=={VERSION}", tmp)
    server = root / "server"
    shutil.rmtree(server, ignore_errors=True)
    prefix = "mcp_run_python/deno/"
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
        if not names:
            raise PeerSetupError(f"patch: {wheel.name} holds no {prefix}")
        for name in names:
            target = server / name[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))

    src = server / "src"
    (src / "parseArgs.ts").write_text(PARSE_ARGS_TS, encoding="utf-8")
    _replace_once(
        src / "main.ts",
        "import { parseArgs } from '@std/cli/parse-args'",
        "import { parseArgs } from './parseArgs.ts'",
    )
    local = json.dumps(str(server / "node_modules" / "pyodide-offline") + "/")
    _replace_once(
        src / "runCode.ts",
        "    const pyodide = await loadPyodide({\n",
        f"    const pyodide = await loadPyodide({{\n      indexURL: {local},\n      packageCacheDir: {local},\n",
    )
    config = server / "deno.jsonc"
    lines = config.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if '"jsr:' not in line]
    if len(lines) - len(kept) != 2:
        raise PeerSetupError("patch: deno.jsonc no longer has the two jsr: imports (upstream changed?)")
    config.write_text("".join(kept), encoding="utf-8")
    lock_path = server / "deno.lock"
    lock = json.loads(lock_path.read_text(encoding="utf-8"))
    lock["specifiers"] = {k: v for k, v in lock.get("specifiers", {}).items() if not k.startswith("jsr:")}
    lock.pop("jsr", None)
    workspace = lock.get("workspace", {})
    workspace["dependencies"] = [d for d in workspace.get("dependencies", []) if not d.startswith("jsr:")]
    lock_path.write_text(json.dumps(lock, indent=2) + "\n", encoding="utf-8")
    left = [p.name for p in server.rglob("*") if p.is_file() and re.search(r"[\"']jsr:", p.read_text(encoding="utf-8"))]
    if left:
        raise PeerSetupError(f"patch: jsr: imports remain in {left}")
    _say(f"mcp-run-python {VERSION} sources -> {server} (patched: parseArgs vendored, local Pyodide indexURL)")
    return server


def _package_files(lock_path: Path) -> dict[str, str]:
    """file name -> sha256 for the packages runCode.ts loads and everything they depend on."""
    packages = {_normalize(k): v for k, v in json.loads(lock_path.read_text(encoding="utf-8"))["packages"].items()}
    todo, seen, files = [_normalize(n) for n in LOADED_PACKAGES], set(), {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        entry = packages.get(name)
        if entry is None:
            raise PeerSetupError(f"pyodide: {name} is not in {lock_path}")
        files[str(entry["file_name"])] = str(entry["sha256"])
        todo += [_normalize(d) for d in entry.get("depends", [])]
    return files


def _local_pyodide(root: Path, server: Path, deno: Path, tmp: Path) -> dict[str, str]:
    """npm dependencies through `deno install`, then the local Pyodide copy with its package files."""
    _say("deno install --frozen (npm dependencies pinned by deno.lock)")
    _run(
        "deno install",
        [str(deno), "install", "--frozen", "--node-modules-dir=auto"],
        server,
        {**os.environ, **_env(root)},
    )
    installed = server / "node_modules" / ".deno" / f"pyodide@{PYODIDE_VERSION}" / "node_modules" / "pyodide"
    if not (installed / "pyodide.asm.wasm").is_file():
        raise PeerSetupError(f"pyodide: deno install left no npm pyodide {PYODIDE_VERSION} at {installed}")
    local = server / "node_modules" / "pyodide-offline"
    shutil.rmtree(local, ignore_errors=True)
    shutil.copytree(installed, local)
    wanted = _package_files(local / "pyodide-lock.json")
    wheel = _pip_download("pyodide packages", PACKAGE_FILES_FROM, tmp)
    with zipfile.ZipFile(wheel) as zf:
        for name, digest in wanted.items():
            try:
                data = zf.read(PACKAGE_FILES_PREFIX + name)
            except KeyError as exc:
                raise PeerSetupError(f"pyodide: {PACKAGE_FILES_FROM} does not ship {name}") from exc
            if _sha256(data) != digest:
                raise PeerSetupError(f"pyodide: {name} from {PACKAGE_FILES_FROM} does not match pyodide-lock.json")
            (local / name).write_bytes(data)
    _say(f"Pyodide {PYODIDE_VERSION} -> {local} with {', '.join(sorted(wanted))} (sha256 checked)")
    return wanted


def _launch(root: Path) -> Launch:
    return Launch(
        command=str(root / "bin" / "deno"),
        args=[*SERVER_ARGS, "--return-mode=xml"],
        cwd=root / "server",
        env=_env(root),
        versions={"mcp-run-python": VERSION, "deno": DENO_VERSION, "pyodide": PYODIDE_VERSION},
    )


def _ready(root: Path) -> bool:
    """True if a finished set-up is still intact (the package files re-hashed: a few MB, milliseconds)."""
    try:
        marker = json.loads((root / READY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if marker.get("versions") != _launch(root).versions or not (root / "bin" / "deno").is_file():
        return False
    local = root / "server" / "node_modules" / "pyodide-offline"
    try:
        return (
            all(_sha256((local / n).read_bytes()) == d for n, d in marker["files"].items())
            and (root / "server" / "src" / "parseArgs.ts").is_file()
        )
    except (OSError, KeyError, AttributeError):
        return False


def ensure(root: Path | None = None, say: Callable[[str], None] = _say) -> Launch:
    """Set up the offline copy unless it is already there; raise PeerSetupError naming what failed."""
    root = (root or default_root()).resolve()
    if _ready(root):
        say(f"mcp-run-python {VERSION} ready in {root}")
        return _launch(root)
    say(f"setting up mcp-run-python {VERSION} in {root}")
    root.mkdir(parents=True, exist_ok=True)
    (root / READY).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="mcp-run-python-dl-") as tmp_name:
        tmp = Path(tmp_name)  # downloads (about 150 MB of wheels) are dropped once unpacked
        deno = _install_deno(root, tmp)
        version = _run("deno", [str(deno), "--version"]).split()[1:2]
        if version != [DENO_VERSION]:
            raise PeerSetupError(f"deno: {deno} reports {version}, expected {DENO_VERSION}")
        server = _patch_server(root, tmp)
        files = _local_pyodide(root, server, deno, tmp)
    launch = _launch(root)
    (root / READY).write_text(json.dumps({"versions": launch.versions, "files": files}, indent=2) + "\n")
    say(f"mcp-run-python {VERSION} set up in {root}")
    return launch


if __name__ == "__main__":
    try:
        got = ensure()
    except PeerSetupError as exc:
        print(f"mcp-run-python setup failed: {exc}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"command": got.command, "args": got.args, "cwd": str(got.cwd), "env": got.env}, indent=2))
