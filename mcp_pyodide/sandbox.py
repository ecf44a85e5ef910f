"""The Python API: a sandbox that runs code, loads packages it imports, and collects its files.

`Sandbox` sits on the runtime broker (`Runtime`), adding what users think in:
packages (fetched and verified on the host, then loaded), mounts, figures and
files written to the output folder. The MCP server is built on this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from .config import RuntimeConfig
from .mounts import GUEST_ROOT, OUTPUT_NAME, Mount
from .packages import (
    IntegrityError,
    PackageBroker,
    PackageSourceError,
    UnknownPackageError,
    normalize_name,
)
from .packages.broker import ProgressCallback
from .packages.imports import find_imports
from .runtime import ExecutionError, ExecutionResult, OutputListener, Runtime

log = logging.getLogger("mcp_pyodide.sandbox")

# Run after preloading matplotlib: importing pyplot is most of a first figure's cost (font
# cache, backend); nothing is left in the user's namespace.
WARM_MATPLOTLIB = "__import__('matplotlib.pyplot') and None"


@dataclass
class PackageOutcome:
    """What happened to one requested package."""

    name: str
    version: str | None = None
    installed: bool = False
    error: str | None = None
    dependencies: list[str] = field(default_factory=list)


@dataclass
class Result(ExecutionResult):
    """An execution result plus the files and packages that came with it."""

    figures: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    # Whether the run created, changed or removed anything in a writable mount.
    mounts_changed: bool = False
    loaded_packages: list[PackageOutcome] = field(default_factory=list)

    @property
    def value(self) -> str | None:
        return self.result


class Sandbox:
    """A long-lived Pyodide interpreter. Use `async with Sandbox(...) as sb: await sb.execute(...)`."""

    def __init__(
        self,
        *,
        mounts: Iterable[Mount] = (),
        output_dir: str | Path | None = None,
        config: RuntimeConfig | None = None,
    ) -> None:
        base = config or RuntimeConfig()
        out = Path(output_dir).expanduser() if output_dir is not None else base.output_dir
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            out = out.resolve()
        self.config = replace(base, mounts=tuple(mounts) or base.mounts, output_dir=out)
        self.runtime = Runtime(self.config)
        self._broker: PackageBroker | None = None
        self._loaded: dict[str, str] = {}
        self._loaded_for: tuple[int, int] | None = None
        self._install_lock = asyncio.Lock()
        self._preload_task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self, *, wait: bool = True) -> None:
        """Boot the runtime; with wait=False, boot in the background (the server's handshake overlaps it)."""
        self.start_soon()
        if wait:
            await self.runtime.wait_ready()

    def start_soon(self) -> None:
        """Begin booting (and preloading, if configured) without waiting; needs a running loop."""
        self.runtime.start()
        if self.config.preload and self._preload_task is None:
            self._preload_task = asyncio.get_running_loop().create_task(self._preload(self.config.preload))

    async def close(self) -> None:
        if self._preload_task is not None and not self._preload_task.done():
            self._preload_task.cancel()
            with contextlib.suppress(BaseException):
                await self._preload_task
        await self.runtime.close()

    async def _preload(self, names: tuple[str, ...]) -> None:
        """Load `names` one at a time once the runtime is up, so a call that arrives meanwhile
        waits at most for the package being loaded (calls queued before start-up go first)."""
        try:
            await self.runtime.wait_ready()
            started = time.perf_counter()
            for name in names:
                for outcome in await self.install([name]):
                    if outcome.error:
                        log.warning("--preload %s: %s", name, outcome.error)
                if normalize_name(name) == "matplotlib" and "matplotlib" in self._loaded:
                    await self.runtime.execute(WARM_MATPLOTLIB, timeout_ms=300_000)
            log.info("preloaded %s in %.0f ms", ", ".join(names), (time.perf_counter() - started) * 1000)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - preloading is an optimisation; calls still load on demand
            log.warning("preloading %s failed: %s", ", ".join(names), exc)

    @property
    def mounts(self) -> tuple[Mount, ...]:
        return self.config.mounts

    @property
    def output_dir(self) -> Path | None:
        return self.config.output_dir

    # -- running code ----------------------------------------------------------------------

    async def execute(
        self,
        code: str,
        *,
        timeout_ms: int | None = None,
        on_output: OutputListener | None = None,
        progress: ProgressCallback | None = None,
    ) -> Result:
        """Run `code`, loading first any Pyodide packages it imports."""
        outcomes: list[PackageOutcome] = []
        wanted = await self._packages_for(code)
        if wanted:
            outcomes = await self.install(wanted, progress=progress)
            failed = [o for o in outcomes if o.error]
            if failed:
                detail = "; ".join(f"{o.name}: {o.error}" for o in failed)
                return Result(
                    error=ExecutionError(
                        type="PackageError",
                        message=f"Could not load the packages this code imports ({detail}). The code was not run.",
                        traceback="",
                    ),
                    loaded_packages=outcomes,
                )
        plain = await self.runtime.execute(code, timeout_ms=timeout_ms, on_output=on_output)
        result = Result(**vars(plain))
        result.loaded_packages = [o for o in outcomes if o.installed]
        figure_paths = (self._host_path(p) for p in plain.extra.get("figures", []) if isinstance(p, str))
        result.figures = [p for p in figure_paths if p is not None]
        figures = set(result.figures)
        written = [self._host_path(p) for p in plain.extra.get("written", [])]
        output = self.output_dir
        result.files = sorted(
            {
                p
                for p in written
                if p is not None
                and p not in figures
                and output is not None
                and p.is_relative_to(output)
                and p.is_file()
            }
        )
        result.mounts_changed = bool(written or plain.extra.get("removed") or result.state_reset)
        return result

    async def reset(self) -> dict[str, Any]:
        info = await self.runtime.reset()
        self._loaded.clear()
        return info

    # -- packages --------------------------------------------------------------------------

    async def broker(self) -> PackageBroker:
        if self._broker is None:
            await self.runtime.wait_ready()
            assert self.runtime.files is not None
            self._broker = PackageBroker(
                self.runtime.files.lock_file,
                self.config.package_source or None,
                self.runtime.package_cache_dir(),
            )
        return self._broker

    def _forget_if_replaced(self) -> None:
        if self._loaded_for != self.runtime.interpreter_id:
            self._loaded.clear()
            self._loaded_for = self.runtime.interpreter_id

    async def _packages_for(self, code: str) -> list[str]:
        imports = find_imports(code)
        if not imports:
            return []
        broker = await self.broker()
        self._forget_if_replaced()
        names = broker.lock.packages_for_imports(imports)
        return [name for name in names if normalize_name(name) not in self._loaded]

    async def install(self, names: Iterable[str], *, progress: ProgressCallback | None = None) -> list[PackageOutcome]:
        """Make lock-file packages importable: fetch and verify on the host, then load in the sandbox."""
        requested = list(dict.fromkeys(n.strip() for n in names if n.strip()))
        broker = await self.broker()
        outcomes: dict[str, PackageOutcome] = {}
        known: list[str] = []
        from_pypi: list[str] = []
        for name in requested:
            entry = broker.lock.get(name)
            if entry is None:
                hint = ""
                try:
                    broker.resolve([name])
                except UnknownPackageError as exc:
                    if exc.hints:
                        hint = f" (did you mean {', '.join(sorted(set(exc.hints.values())))}?)"
                if not hint and self.config.network.allows("https://pypi.org/simple/"):
                    from_pypi.append(name)
                    outcomes[name] = PackageOutcome(name=name)
                    continue
                outcomes[name] = PackageOutcome(
                    name=name,
                    error=f"not in Pyodide {broker.lock.info.version}'s package set{hint}; "
                    "installing from PyPI needs network access to it (--allow-network "
                    "pypi.org,files.pythonhosted.org)",
                )
            else:
                known.append(entry.name)
                outcomes[name] = PackageOutcome(name=entry.name, version=entry.version)
        if from_pypi:
            known.append("micropip")  # installs pure-Python wheels; its fetches go through the broker
        if not known:
            return list(outcomes.values())
        async with self._install_lock:
            try:
                ensured = await broker.ensure(known, progress=progress)
            except (IntegrityError, PackageSourceError, OSError) as exc:
                for name in requested:
                    if outcomes[name].error is None:
                        outcomes[name].error = str(exc)
                return list(outcomes.values())
            load_names = ensured.names
            reply = await self.runtime.load_packages(load_names)
            self._forget_if_replaced()
            loaded = {normalize_name(str(k)): str(v) for k, v in dict(reply.get("loaded") or {}).items()}
            self._loaded.update(loaded)
        if from_pypi:
            await self._install_from_pypi(from_pypi, outcomes)
        for name in requested:
            outcome = outcomes[name]
            if outcome.error is not None or name in from_pypi:
                continue
            key = normalize_name(outcome.name)
            if key in self._loaded:
                outcome.installed = True
                deps = [p.name for p in broker.resolve([outcome.name]) if normalize_name(p.name) != key]
                outcome.dependencies = deps
            else:
                outcome.error = str(reply.get("error") or "the sandbox did not load it")
        return list(outcomes.values())

    async def _install_from_pypi(self, names: list[str], outcomes: dict[str, PackageOutcome]) -> None:
        """Pure-Python wheels from PyPI via micropip, inside the sandbox; the broker makes each request."""
        code = (
            "import micropip, json\n"
            f"_names = {names!r}\n"
            "_errors = {}\n"
            "for _name in _names:\n"
            "    try:\n"
            "        await micropip.install(_name)\n"
            "    except Exception as _exc:\n"
            "        _errors[_name] = str(_exc).strip().splitlines()[0] if str(_exc).strip() else type(_exc).__name__\n"
            "_have = {p.name.lower().replace('_', '-'): p.version for p in micropip.list().values()}\n"
            "json.dumps({'errors': _errors, 'have': _have})"
        )
        result = await self.runtime.execute(code, timeout_ms=max(self.config.timeout_ms, 120_000))
        if result.error is not None or not result.result:
            for name in names:
                outcomes[
                    name
                ].error = f"installing from PyPI failed: {result.error.message if result.error else 'no answer'}"
            return
        import ast
        import json

        report = json.loads(ast.literal_eval(result.result))
        for name in names:
            outcome = outcomes[name]
            if name in report["errors"]:
                outcome.error = f"PyPI: {report['errors'][name]}"
                continue
            version = report["have"].get(normalize_name(name))
            outcome.installed = version is not None
            outcome.version = version
            if version is None:
                outcome.error = "micropip reported no error, but the package is not installed"

    # -- files -----------------------------------------------------------------------------

    def _host_path(self, guest_path: str) -> Path | None:
        """Map /mnt/NAME/... back to the host folder, or None if it is not inside a mount."""
        tables = [(f"{GUEST_ROOT}/{OUTPUT_NAME}", self.output_dir)] if self.output_dir else []
        tables += [(m.guest_path, m.host_path) for m in self.mounts]
        for prefix, root in tables:
            if root is not None and (guest_path == prefix or guest_path.startswith(prefix + "/")):
                candidate = (root / guest_path[len(prefix) :].lstrip("/")).resolve()
                if candidate.is_relative_to(root):
                    return candidate
        return None
