"""The cyclic garbage collector paused while the server starts.

A server's start is mostly imports (the MCP SDK's pydantic models above all), which allocate
some 140,000 objects that live as long as the process: the collector scanning them again and
again is about a tenth of the start. The entry points pause it before anything is imported;
`resume()` runs once the SDK has imported. It freezes what exists then (gc.freeze: never
scanned again, so no full collection pauses the event loop for their sake) instead of
collecting it, at the price of the few garbage cycles the imports left (about 1,000 objects).
"""

from __future__ import annotations

import gc
import logging

_paused = False
log = logging.getLogger("mcp_pyodide.startup")


def pause() -> None:
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Hand the collector back, if pause() took it; idempotent."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
        log.debug("garbage collector resumed; %d start-up objects frozen", gc.get_freeze_count())
