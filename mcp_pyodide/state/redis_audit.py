"""The audit log to a Redis stream as well (XADD, trimmed with MAXLEN ~), so N replicas leave one trail.

Writes are sent from the event loop without holding up the call; a record
that cannot be sent (Redis down) is logged as an error and is still in the
file log, which stays the record of truth.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from ..policy.audit import AuditLog, redact

log = logging.getLogger("mcp_pyodide.audit")

STREAM = "mcp-pyodide:audit"
MAXLEN = 100_000
MAX_IN_FLIGHT = 1000


class AuditTee(AuditLog):
    """The file log (if any) plus a Redis stream."""

    def __init__(self, file: AuditLog | None, client: Any, *, stream: str = STREAM, maxlen: int = MAXLEN) -> None:
        self.file = file
        self._client = client
        self.stream = stream
        self.maxlen = maxlen
        self._tasks: set[asyncio.Task[None]] = set()

    def write(self, record: Mapping[str, Any]) -> None:
        if self.file is not None:
            self.file.write(record)
        line = json.dumps(redact(record), ensure_ascii=False, separators=(",", ":"), default=str)
        if len(self._tasks) >= MAX_IN_FLIGHT:
            log.error("audit stream %s: %d writes pending; record not sent", self.stream, len(self._tasks))
            return
        task = asyncio.get_running_loop().create_task(self._send(line))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, line: str) -> None:
        try:
            await self._client.xadd(self.stream, {"record": line}, maxlen=self.maxlen, approximate=True)
        except Exception as exc:  # noqa: BLE001 - a lost stream entry must not fail the call; the file has it
            log.error("audit stream %s: record not sent (%s)", self.stream, exc)

    async def flush(self) -> None:
        """Wait for writes in flight (shutdown and tests)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
