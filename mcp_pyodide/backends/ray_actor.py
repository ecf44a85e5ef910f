"""The Ray actor that owns one session's interpreter (`--backend ray`).

It runs a `Sandbox` (so its Node process) on whichever node Ray placed it, writes
the session's outputs to a private temporary folder there, and answers with plain
values: figure bytes capped here and checked again by the front-end, which trusts
nothing it gets back. It ends itself after `idle_timeout_s` without a call, so a
front-end that dies leaks nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .._outputs import read_inside
from ..config import RuntimeConfig
from ..sandbox import Sandbox

MAX_FIGURES = 8
MAX_FIGURE_BYTES = 2 * 1024 * 1024
KV_NAMESPACE = "mcp-pyodide"
"""Ray internal-KV namespace of the "this session has had an actor" markers."""


def kv_key(name: str) -> bytes:
    return f"started:{name}".encode()


class SandboxActor:
    """One session's interpreter; every method returns JSON-like values only."""

    def __init__(self, config: RuntimeConfig, idle_timeout_s: float, name: str) -> None:
        self._out = Path(tempfile.mkdtemp(prefix="mcp-pyodide-ray-"))
        self._sandbox = Sandbox(config=replace(config, mounts=()), output_dir=self._out)
        self._idle_timeout_s = idle_timeout_s
        self._name = name
        self._last = time.monotonic()
        self._busy = 0
        self._watch: asyncio.Task[None] | None = None

    def _begin(self) -> None:
        self._busy += 1
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._end_when_idle())

    def _done(self) -> None:
        self._busy -= 1
        self._last = time.monotonic()

    async def where(self) -> str:
        """The Ray node id this actor runs on (tests and operators use it)."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    async def execute(self, code: str, timeout_ms: int | None) -> dict[str, Any]:
        self._begin()
        try:
            result = await self._sandbox.execute(code, timeout_ms=timeout_ms)
        finally:
            self._done()
        payload = asdict(result)
        figures = []
        for path in result.figures[:MAX_FIGURES]:
            data = read_inside(self._out, Path(path), MAX_FIGURE_BYTES)
            if data is not None:
                figures.append([str(Path(path).relative_to(self._out)), data])
        payload["figures"] = figures
        payload["files"] = [str(Path(p).relative_to(self._out)) for p in result.files]
        return payload

    async def reset(self) -> dict[str, Any]:
        self._begin()
        try:
            return asdict(await self._sandbox.reset())
        finally:
            self._done()

    async def install(self, names: list[str]) -> list[dict[str, Any]]:
        self._begin()
        try:
            return [asdict(o) for o in await self._sandbox.install(names)]
        finally:
            self._done()

    async def end(self) -> None:
        """Close the interpreter and leave (the session ended)."""
        await self._close()
        import ray

        ray.actor.exit_actor()  # type: ignore[no-untyped-call]

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self._sandbox.close()
        shutil.rmtree(self._out, ignore_errors=True)
        with contextlib.suppress(Exception):
            from ray.experimental import internal_kv

            internal_kv._internal_kv_del(kv_key(self._name), namespace=KV_NAMESPACE)

    async def _end_when_idle(self) -> None:
        step = max(0.05, min(30.0, self._idle_timeout_s / 4))
        while True:
            await asyncio.sleep(step)
            if not self._busy and time.monotonic() - self._last > self._idle_timeout_s:
                await self._close()
                os._exit(0)  # a detached actor with no restarts: Ray records it dead and frees its name
