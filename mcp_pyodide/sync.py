"""`SyncSandbox`: the `Sandbox` for scripts, notebooks and tests that do not run an event loop.

`Sandbox` is asyncio-native because the server needs it to be. A plain script
should not have to learn asyncio to run one line of Python in a sandbox, and
cannot call `asyncio.run` at all where a loop is already running (Jupyter). So
this wrapper owns a private event loop in a daemon thread and hands every call
to it: the sandbox lives on one loop for its whole life, whichever thread calls.

    with SyncSandbox(output_dir="out") as sb:
        sb.execute("x = 21")
        print(sb.execute("x * 2").value)   # '42'
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from . import _caches
from .config import RuntimeConfig
from .errors import RuntimeUnavailable
from .history import History
from .mounts import Mount
from .packages.broker import ProgressCallback
from .result import InterpreterInfo, PackageOutcome, Result
from .runtime import OutputListener
from .sandbox import Sandbox

T = TypeVar("T")
CLOSE_TIMEOUT_S = 30.0


class SyncSandbox:
    """A blocking facade over `Sandbox`, with the same constructor arguments.

    Use it as a context manager (or call `start()` and `close()`); the Node
    process ends when it closes. Calls from several threads are fine: they are
    queued on the sandbox's loop and run one at a time, as in the server.
    """

    def __init__(
        self,
        *,
        mounts: Iterable[Mount] = (),
        output_dir: str | Path | None = None,
        config: RuntimeConfig | None = None,
    ) -> None:
        self._args: dict[str, Any] = {"mounts": tuple(mounts), "output_dir": output_dir, "config": config}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sandbox: Sandbox | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> SyncSandbox:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> SyncSandbox:
        """Start the loop thread and boot the interpreter; returns once it can run code."""
        if self._sandbox is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="mcp-pyodide-sandbox", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread

        async def boot() -> Sandbox:
            # Built on its loop, so every asyncio object inside belongs to it.
            sandbox = Sandbox(**self._args)
            try:
                await sandbox.start()
            except BaseException:
                await sandbox.close()
                raise
            return sandbox

        try:
            self._sandbox = self._call(boot())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def close(self) -> None:
        """End the Node process and the loop thread. Safe to call twice."""
        sandbox, self._sandbox = self._sandbox, None
        try:
            if sandbox is not None and self._loop is not None:
                self._call(sandbox.close(), timeout=CLOSE_TIMEOUT_S)
                # The first sandbox on a machine: its cache builds would die with the loop.
                self._call(_caches.finish_pending(), timeout=_caches.FINISH_TIMEOUT_S + CLOSE_TIMEOUT_S)
        finally:
            self._stop_loop()

    @property
    def sandbox(self) -> Sandbox:
        """The underlying async `Sandbox` (for its `config`, `mounts`, `output_dir`, `runtime`)."""
        if self._sandbox is None:
            raise RuntimeUnavailable("the SyncSandbox is not started: use `with SyncSandbox() as sb:` or .start()")
        return self._sandbox

    @property
    def config(self) -> RuntimeConfig:
        return self.sandbox.config

    @property
    def output_dir(self) -> Path | None:
        return self.sandbox.output_dir

    # -- running code ----------------------------------------------------------------------

    def execute(
        self,
        code: str,
        *,
        timeout_ms: int | None = None,
        on_output: OutputListener | None = None,
        progress: ProgressCallback | None = None,
    ) -> Result:
        """Run `code` (loading the Pyodide packages it imports) and return its `Result`.

        A Python exception in the code is not raised here: it is `result.error`,
        as the sandboxed traceback belongs to the sandboxed program. `on_output`
        is called as `(stream, text)` from the sandbox thread while it runs.
        """
        sandbox = self.sandbox
        return self._call(sandbox.execute(code, timeout_ms=timeout_ms, on_output=on_output, progress=progress))

    def install(self, names: Iterable[str], *, progress: ProgressCallback | None = None) -> list[PackageOutcome]:
        """Load packages from Pyodide's set ahead of time (imports load them anyway)."""
        sandbox = self.sandbox
        return self._call(sandbox.install(list(names), progress=progress))

    def reset(self) -> InterpreterInfo:
        """Start over with a fresh interpreter: every variable and import is gone."""
        sandbox = self.sandbox
        return self._call(sandbox.reset())

    @property
    def history(self) -> History:
        """What this session ran so far (bounded), as `export_notebook` writes it."""
        return self.sandbox.history

    def export_notebook(self, name: str = "session.ipynb", *, overwrite: bool = True) -> Path:
        """Write the session so far as a Jupyter notebook in the output folder; returns its path."""
        sandbox = self.sandbox
        return self._call(sandbox.export_notebook(name, overwrite=overwrite))

    # -- the loop thread -------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._loop is None or not self._loop.is_running():
            coro.close()
            raise RuntimeUnavailable("the SyncSandbox is closed")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except BaseException:
            # Ctrl-C or a timeout here must not leave the call running on its own.
            future.cancel()
            raise

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(CLOSE_TIMEOUT_S)
        if not loop.is_running():
            loop.close()
