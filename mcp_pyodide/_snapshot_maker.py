"""Makes the memory snapshot in a Node process of its own, one that never runs user code.

On the first start on a machine the serving interpreter boots from scratch, as bare Pyodide
does, and answers at once; a second Node process, started once the first is ready, boots
with `makeSnapshot`, sends the image and is killed. The broker accepts an image only from
such a process: one in which no user code ever ran cannot have been steered into saving a
poisoned interpreter for every later server on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from . import _caches
from ._connection import Connection
from ._launch import Launch, pump_stderr
from ._protocol import Event, Limits, SnapshotEvent
from ._transport import Transport

log = logging.getLogger("mcp_pyodide.runtime")

MAKE_TIMEOUT_S = 120.0  # a boot takes seconds; a process still silent after this is stuck
_making: dict[Path, asyncio.Task[None]] = {}


def make_soon(launch: Launch) -> asyncio.Task[None] | None:
    """Start making `launch`'s snapshot in the background, unless it exists or is being made.

    Servers and HTTP sessions in this process share one maker per snapshot file.
    """
    target = launch.snapshot_file
    if not launch.config.use_snapshot or target.exists():
        return None
    task = _making.get(target)
    if task is None or not _caches.on_this_loop(task):
        task = asyncio.get_running_loop().create_task(make(launch))
        _making[target] = task
    return task


def tasks() -> list[asyncio.Task[None]]:
    """The makers started in this process (`_caches.finish_pending` waits for this loop's)."""
    return list(_making.values())


async def make(launch: Launch) -> None:
    """Boot a fresh Node process that only makes the snapshot, save what it sends, end it."""
    process = await launch.spawn()
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    image: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def on_event(event: Event) -> None:
        if isinstance(event, SnapshotEvent) and not image.done():
            image.set_result(event.data)

    async def refuse(request: Any) -> dict[str, Any]:
        raise LookupError(f"the snapshot process asked for {type(request).__name__}")

    connection = Connection(
        Transport(process.stdout, process.stdin), on_event=on_event, on_request=refuse, limits=Limits()
    )
    connection.start()
    stderr = asyncio.get_running_loop().create_task(pump_stderr(process.stderr, logging.DEBUG, "[snapshot process] "))
    booting = asyncio.ensure_future(connection.request(launch.init_request(make_snapshot=True)))
    try:
        async with asyncio.timeout(MAKE_TIMEOUT_S):
            await asyncio.wait({image, booting}, return_when=asyncio.FIRST_COMPLETED)
        if image.done():
            await asyncio.to_thread(_caches.save_snapshot, launch.snapshot_file, image.result())
        else:
            failure = booting.exception() if not booting.cancelled() else None
            log.warning("the snapshot process sent no memory snapshot (%s); the next start tries again", failure)
    except TimeoutError:
        log.warning("the snapshot process sent nothing in %.0f s; ended it", MAKE_TIMEOUT_S)
    finally:
        booting.cancel()
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await connection.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(process.wait(), 5)
        stderr.cancel()
