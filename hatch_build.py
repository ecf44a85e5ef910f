"""Wheel build hook: put the verified `pyodide` npm package inside the wheel.

A wheel built this way needs nothing but Node.js at first start: no npm, no registry.
`npm ci` fetches exactly what `node_runtime/package-lock.json` pins and checks every
tarball against its `integrity` hash; the hook then checks the version and copies only
the `pyodide` folder into `mcp_pyodide/node_runtime/node_modules/pyodide`. Nothing
fetched is ever committed. Editable installs (checkouts) are skipped: they install the
runtime from npm on first start, as does a wheel built where npm could not run.
Set MCP_PYODIDE_BUNDLE_RUNTIME=0 to skip, =1 to make a failure fail the build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PYODIDE_VERSION = "0.27.7"
TARGET = "mcp_pyodide/node_runtime/node_modules/pyodide"


class RuntimeBundleHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        mode = os.environ.get("MCP_PYODIDE_BUNDLE_RUNTIME", "auto")
        if self.target_name != "wheel" or version == "editable" or mode == "0":
            return
        self._staging = Path(tempfile.mkdtemp(prefix="mcp-pyodide-bundle-"))
        try:
            pyodide = self._fetch(Path(self.root) / "node_runtime", self._staging)
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            if mode == "1":
                raise
            print(
                f"mcp-pyodide build: the Pyodide runtime is not bundled ({exc}); "
                "it will be installed from npm on first start",
                file=sys.stderr,
            )
            return
        build_data["force_include"][str(pyodide)] = TARGET

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        staging = getattr(self, "_staging", None)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _fetch(source: Path, staging: Path) -> Path:
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm was not found")
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(source / name, staging / name)
        cmd = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=error"]
        cmd += ["--fetch-retries=1", "--fetch-timeout=30000"]
        proc = subprocess.run(cmd, cwd=staging, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"npm ci failed: {last}")
        pyodide = staging / "node_modules" / "pyodide"
        installed = json.loads((pyodide / "package.json").read_text())
        if installed.get("version") != PYODIDE_VERSION:
            raise RuntimeError(f"npm installed pyodide {installed.get('version')}, expected {PYODIDE_VERSION}")
        for name in ("pyodide.mjs", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json"):
            if not (pyodide / name).is_file():
                raise RuntimeError(f"the pyodide package has no {name}")
        # Source maps and the browser console are not needed to run; keep the wheel small.
        for name in ("pyodide.js.map", "pyodide.mjs.map", "console.html"):
            (pyodide / name).unlink(missing_ok=True)
        (pyodide / ".bundled").write_text(PYODIDE_VERSION + "\n")
        return pyodide
