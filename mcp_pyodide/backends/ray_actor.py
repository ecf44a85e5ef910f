"""The Ray actor that owns one session's interpreter (`--backend ray`).

It runs a `Sandbox` (so its Node process) on whichever node Ray placed it, writes
the session's outputs to a private temporary folder there, and answers with plain
values: the bytes of the run's figures and files, capped here and checked again
by the front-end, which trusts nothing it gets back. It ends itself after `idle_timeout_s` without a call, so a
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

from .._outputs import MAX_RETURNED, read_inside
from ..config import RuntimeConfig
from ..sandbox import Sandbox

MAX_FILE_BYTES = 8 * 1024 * 1024
"""Largest figure or file carried back to the front-end; a bigger one is counted in files_not_returned."""
MAX_RESULT_BYTES = 16 * 1024 * 1024
MAX_NOTEBOOK_CHARS = 64 * 1024 * 1024
"""Largest exported notebook carried back (a history holds 16 MiB of text plus its figures)."""
"""All figures and files of one run together (Ray's object store carries them)."""
KV_NAMESPACE = "mcp-pyodide"
"""Ray internal-KV namespace of the "this session has had an actor" markers."""
MARKER_MARGIN_S = 120.0
"""A marker not refreshed for the idle timeout plus this is garbage: its handle has expired everywhere."""


def kv_key(name: str) -> bytes:
    return f"started:{name}".encode()


def marker_value(now: float) -> bytes:
    """A marker says when its session last used its actor (wall-clock seconds)."""
    return f"{now:.3f}".encode()


def marker_fresh(value: object, now: float, idle_timeout_s: float) -> bool:
    """Whether a marker can still belong to a live handle (anything unreadable counts as stale)."""
    try:
        stamp = float(value.decode() if isinstance(value, bytes) else "nan")
    except ValueError:
        return False
    return now - idle_timeout_s - MARKER_MARGIN_S <= stamp <= now + MARKER_MARGIN_S


class SandboxActor:
    """One session's interpreter; every method returns JSON-like values only."""

    def __init__(self, config: RuntimeConfig, idle_timeout_s: float, name: str) -> None:
        self._out = Path(tempfile.mkdtemp(prefix="mcp-pyodide-ray-"))
        self._sandbox = Sandbox(config=replace(config, mounts=()), output_dir=self._out)
        self._idle_timeout_s = idle_timeout_s
        self._name = name
        self._last = time.monotonic()
        self._marked = self._last  # the front-end wrote the marker when it created this actor
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
        outputs: list[list[object]] = []
        left, not_sent = MAX_RESULT_BYTES, 0
        for kind, paths in (("figure", result.figures), ("file", result.files)):
            for path in paths[:MAX_RETURNED]:
                data = read_inside(self._out, Path(path), min(MAX_FILE_BYTES, left))
                if data is None or len(outputs) >= MAX_RETURNED:
                    not_sent += 1
                    continue
                left -= len(data)
                outputs.append([Path(path).relative_to(self._out).as_posix(), data, kind])
        payload["outputs"] = outputs
        payload["outputs_not_sent"] = not_sent
        del payload["figures"], payload["files"]
        return payload

    async def notebook(self) -> dict[str, Any]:
        """The session's history as notebook text (nbformat 4), with how many calls it holds and dropped."""
        self._begin()
        try:
            from ..notebook import to_notebook

            nbformat: Any = __import__("nbformat")
            text = await asyncio.to_thread(lambda: nbformat.writes(to_notebook(self._sandbox.history)))
            kept, dropped = self._sandbox.history_counts()
            return {"text": text if len(text) <= MAX_NOTEBOOK_CHARS else None, "cells": kept, "dropped": dropped}
        finally:
            self._done()

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

    def _mark(self) -> None:
        from ray.experimental import internal_kv

        internal_kv._internal_kv_put(kv_key(self._name), marker_value(time.time()), namespace=KV_NAMESPACE)

    async def _end_when_idle(self) -> None:
        step = max(0.05, min(30.0, self._idle_timeout_s / 4))
        while True:
            await asyncio.sleep(step)
            if self._busy or self._last > self._marked:  # used since the marker was written: refresh it
                self._marked = time.monotonic()
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self._mark)
            if not self._busy and time.monotonic() - self._last > self._idle_timeout_s:
                await self._close()
                os._exit(0)  # a detached actor with no restarts: Ray records it dead and frees its name
