"""The Python API: a sandbox that runs code, loads packages it imports, and collects its files.

`Sandbox` sits on the runtime broker (`Runtime`), adding what users think in:
packages (fetched and verified on the host, then loaded), mounts, figures and
files written to the output folder. The MCP server is built on this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from . import _bytecode, _caches, _outputs
from ._protocol import PackageTreeSpec
from .config import RuntimeConfig
from .history import History, recorded
from .mounts import GUEST_ROOT, OUTPUT_NAME, Mount
from .packages import (
    IntegrityError,
    PackageBroker,
    PackageSourceError,
    UnknownPackageError,
    normalize_name,
)
from .packages.broker import EnsureResult, ProgressCallback
from .packages.imports import find_imports
from .packages.trees import ensure_tree
from .result import ErrorInfo, InterpreterInfo, PackageOutcome, Result
from .runtime import OutputListener, Runtime

__all__ = ["PackageOutcome", "Result", "Sandbox", "private_cell"]  # Result and PackageOutcome: see result.py

log = logging.getLogger("mcp_pyodide.sandbox")

# Run after preloading matplotlib: importing pyplot is most of a first figure's cost (font
# cache, backend). A private cell, so nothing is left in the user's namespace.
WARM_MATPLOTLIB = "async def main():\n    import matplotlib.pyplot\n"
# A client's first call usually follows its handshake at once; preloading waits this long for it
# (or until it is answered), so the first answer is never held up by a package loading.
PRELOAD_GRACE_S = 1.0


def private_cell(source: str) -> str:
    """A cell that runs `source` (which defines `async def main()`) in a namespace of its own.

    It binds no name in the user's globals (not even `_`: its value is None, hidden by the `;`),
    so the broker's own work in the user's interpreter leaves nothing behind. Report through stdout.
    """
    return (
        "await (lambda ns: (__import__('builtins').exec(__import__('builtins').compile("
        f"{source!r}, '<mcp-pyodide>', 'exec'), ns), ns['main']())[1])"
        "({'__name__': '__mcp_pyodide__', '__builtins__': __import__('builtins')});"
    )


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
        self._compile_asked: set[str] = set()  # loaded names already handed to _bytecode
        self._loaded_for: tuple[int, int] | None = None
        self._install_lock = asyncio.Lock()
        self._preload_task: asyncio.Task[None] | None = None
        self._answered = asyncio.Event()  # a first call has been answered
        self.history = History()  # what this session ran, for export_notebook()
        self._run_lock = asyncio.Lock()
        self._tracker: _outputs.Tracker | None = None

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
        """Load `names` one at a time once the runtime is up and a first call was answered (or
        none came within PRELOAD_GRACE_S), so a call that arrives later waits at most for the
        package being loaded."""
        try:
            await self.runtime.wait_ready()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), PRELOAD_GRACE_S)
            started = time.perf_counter()
            for name in names:
                for outcome in await self._install([name]):
                    if outcome.error:
                        log.warning("--preload %s: %s", name, outcome.error)
                if normalize_name(name) == "matplotlib" and "matplotlib" in self._loaded:
                    await self.runtime.execute(private_cell(WARM_MATPLOTLIB), timeout_ms=300_000)
            log.info("preloaded %s in %.0f ms", ", ".join(names), (time.perf_counter() - started) * 1000)
            self._compile_soon()
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

    @recorded
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
            outcomes = await self._install(wanted, progress=progress)
            failed = [o for o in outcomes if o.error]
            if failed:
                detail = "; ".join(f"{o.name}: {o.error}" for o in failed)
                return Result(
                    error=ErrorInfo(
                        type="PackageError",
                        message=f"Could not load the packages this code imports ({detail}). The code was not run.",
                        traceback="",
                    ),
                    loaded_packages=outcomes,
                )
        output = self.output_dir
        tracker = self._tracker
        if output is not None and (tracker is None or tracker.root != output):
            tracker = self._tracker = _outputs.Tracker(output)
        async with self._run_lock:  # the folder as last seen must be this sandbox's own
            if tracker is not None:
                await tracker.start()
            try:
                result, reply = await self.runtime.execute(code, timeout_ms=timeout_ms, on_output=on_output)
            finally:
                self._answered.set()
            folder_changed = False
            if tracker is not None:
                prefix = f"{GUEST_ROOT}/{OUTPUT_NAME}/"
                figure_hints = [p[len(prefix) :] for p in (reply.figures if reply else []) if p.startswith(prefix)]
                hints = [p[len(prefix) :] for p in (reply.written if reply else []) if p.startswith(prefix)]
                reported = reply is None or bool(reply.written or reply.removed or reply.figures)  # no reply: walk
                made, folder_changed = await tracker.finish(figure_hints, hints, reported)
                result.figures, result.files, result.files_not_returned = made.figures, made.files, made.not_returned
        result.loaded_packages = [o for o in outcomes if o.installed]
        if outcomes:
            self._compile_soon()  # after the run, which it would slow down
        written = bool(reply and (reply.written or reply.removed))  # other mounts: the guest's word, a hint
        result.mounts_changed = written or folder_changed or result.state_reset
        return result

    async def reset(self) -> InterpreterInfo:
        """Replace the interpreter with a fresh one; all globals and loaded packages are gone."""
        info = await self.runtime.reset()
        self._loaded.clear()
        self.history.record_reset()
        await self.after_record()
        return InterpreterInfo(pyodide_version=info.pyodide_version, generation=info.generation)

    # -- the session as a notebook ---------------------------------------------------------

    async def export_notebook(self, name: str = "session.ipynb", *, overwrite: bool = True) -> Path:
        """Write this session's history as a Jupyter notebook into the output folder; returns its path."""
        from .notebook import export

        return await asyncio.to_thread(export, self.history, self.output_dir, name, overwrite=overwrite)

    def history_counts(self) -> tuple[int, int]:
        """(calls kept in the history, older calls dropped from it), as the last export saw them."""
        return len(self.history.entries), self.history.dropped

    async def after_record(self) -> None:
        """With `RuntimeConfig.notebook` set, rewrite that notebook after every call."""
        if self.config.notebook is None:
            return
        from .notebook import NotebookError

        try:
            await self.export_notebook(self.config.notebook)
        except (NotebookError, OSError) as exc:
            log.warning("could not write the notebook %s: %s", self.config.notebook, exc)

    # -- packages --------------------------------------------------------------------------

    async def broker(self) -> PackageBroker:
        if self._broker is None:
            self._broker = PackageBroker(
                await self.runtime.lock_file(),
                self.config.package_source or None,
                await self.runtime.package_cache_dir(),
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
        outcomes = await self._install(names, progress=progress)
        self._compile_soon()
        return outcomes

    def _compile_soon(self) -> None:
        """Have the loaded packages' modules compiled for later interpreters, once per machine."""
        broker = self._broker
        if broker is None:
            return
        fresh = [name for name in self._loaded if name not in self._compile_asked]
        self._compile_asked.update(fresh)
        entries = [entry for name in fresh if (entry := broker.lock.get(name)) is not None]
        if entries:
            _bytecode.build_soon(self.config, entries, broker.cache_dir)
        if "matplotlib" in fresh and not _bytecode.builds_fonts():
            _caches.build_fonts_soon(self.config)  # the bytecode builder, when it runs, makes it too

    async def _install(self, names: Iterable[str], *, progress: ProgressCallback | None = None) -> list[PackageOutcome]:
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
            reply = await self.runtime.load_packages(load_names, trees=await self._trees_for(broker, ensured))
            self._forget_if_replaced()
            # The guest's word: only names it was asked to load (and whose files were verified)
            # count, so a hostile reply cannot have the broker build the cache for others.
            asked = {normalize_name(name) for name in load_names}
            loaded = {normalize_name(k): v for k, v in reply.loaded.items() if normalize_name(k) in asked}
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
                outcome.error = reply.error or "the sandbox did not load it"
        return list(outcomes.values())

    async def _trees_for(self, broker: PackageBroker, ensured: EnsureResult) -> list[PackageTreeSpec]:
        """The verified wheels of `ensured` unpacked on the host (made now where missing), to link."""
        if not self.config.use_package_trees:
            return []
        wanted = [(p.name, entry, p.path) for p in ensured.packages if (entry := broker.lock.get(p.name)) is not None]
        found = await asyncio.gather(*(asyncio.to_thread(ensure_tree, entry, wheel) for _, entry, wheel in wanted))
        specs = []
        for (name, _, _), t in zip(wanted, found, strict=True):
            if t is not None:
                lists = [list(t.dirs), list(t.files), list(t.dynlibs), list(t.datafiles)]
                specs.append(PackageTreeSpec(name, t.file_name, t.folder, *lists))
        return specs

    async def _install_from_pypi(self, names: list[str], outcomes: dict[str, PackageOutcome]) -> None:
        """Pure-Python wheels from PyPI via micropip, inside the sandbox; the broker makes each request."""
        source = (
            "async def main():\n"
            "    import json, micropip\n"
            "    errors = {}\n"
            f"    for name in {names!r}:\n"
            "        try:\n"
            "            await micropip.install(name)\n"
            "        except Exception as exc:\n"
            "            text = str(exc).strip()\n"
            "            errors[name] = text.splitlines()[0] if text else type(exc).__name__\n"
            "    have = {p.name.lower().replace('_', '-'): p.version for p in micropip.list().values()}\n"
            "    print(json.dumps({'errors': errors, 'have': have}))\n"
        )
        result, _ = await self.runtime.execute(private_cell(source), timeout_ms=max(self.config.timeout_ms, 120_000))
        lines = result.stdout.strip().splitlines()
        try:
            report = json.loads(lines[-1]) if result.error is None and lines else None
        except ValueError:
            report = None
        if not isinstance(report, dict):
            for name in names:
                reason = result.error.message if result.error else "no answer"
                outcomes[name].error = f"installing from PyPI failed: {reason}"
            return
        errors, have = dict(report.get("errors") or {}), dict(report.get("have") or {})
        for name in names:
            outcome = outcomes[name]
            if name in errors:
                outcome.error = f"PyPI: {str(errors[name])[:500]}"
                continue
            version = have.get(normalize_name(name))
            outcome.installed = version is not None
            outcome.version = str(version)[:100] if version is not None else None
            if version is None:
                outcome.error = "micropip reported no error, but the package is not installed"
