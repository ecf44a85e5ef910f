"""Correlates requests to the Node process with their streamed output and replies."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ._transport import Transport
from .errors import RuntimeCrashed

log = logging.getLogger("mcp_pyodide.runtime")

OutputListener = Callable[[str, str], None]
EventListener = Callable[[dict[str, Any]], None]
# Requests the Node side makes of the broker (e.g. "fetch"): kind, payload -> reply payload.
RequestHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class RemoteError(Exception):
    """An error reply from the Node process; `code` says which kind."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(str(payload.get("message", "unknown error")))
        self.payload = payload
        self.code = str(payload.get("code", "runtime"))


@dataclass
class _Pending:
    future: asyncio.Future[dict[str, Any]]
    on_output: OutputListener | None = None
    output: list[tuple[str, str]] = field(default_factory=list)


class Connection:
    """One request/reply session over a Transport; fails every open call when the pipe closes."""

    def __init__(
        self,
        transport: Transport,
        on_event: EventListener | None = None,
        on_request: RequestHandler | None = None,
    ) -> None:
        self._transport = transport
        self._on_event = on_event
        self._on_request = on_request
        self._serving: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._closed_reason: str | None = None
        self._reader_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    async def request(
        self, kind: str, payload: dict[str, Any] | None = None, on_output: OutputListener | None = None
    ) -> dict[str, Any]:
        """Send one request and wait for its reply; raises RemoteError or RuntimeCrashed."""
        if self._closed_reason is not None:
            raise RuntimeCrashed(self._closed_reason)
        request_id = next(self._ids)
        pending = _Pending(asyncio.get_running_loop().create_future(), on_output)
        self._pending[request_id] = pending
        try:
            await self._transport.send({"id": request_id, "kind": kind, "payload": payload or {}})
            return await pending.future
        except (ConnectionError, RuntimeError) as exc:  # the pipe broke while sending
            raise RuntimeCrashed(self._closed_reason or f"the Node process is gone ({exc})") from exc
        finally:
            self._pending.pop(request_id, None)

    async def _read_loop(self) -> None:
        reason = "the Node process exited"
        try:
            while True:
                message = await self._transport.receive()
                if message is None:
                    break
                self._dispatch(message)
        except (ValueError, KeyError, TypeError) as exc:  # a malformed frame: the pipe can't be trusted
            reason = f"the Node process sent an unreadable message ({exc})"
            log.error(reason)
        finally:
            self.fail_all(reason)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        payload = message.get("payload") or {}
        request_id = message.get("id")
        if request_id is None:
            if self._on_event is not None:
                self._on_event(payload)
            return
        if isinstance(request_id, str):  # a request from the Node side
            task = asyncio.get_running_loop().create_task(self._serve(request_id, str(kind), payload))
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)
            return
        pending = self._pending.get(request_id) if isinstance(request_id, int) else None
        if pending is None:
            return
        if kind == "output":
            stream, text = str(payload.get("stream")), str(payload.get("text", ""))
            if pending.on_output is not None:
                pending.on_output(stream, text)
        elif kind == "result" and not pending.future.done():
            pending.future.set_result(payload)
        elif kind == "error" and not pending.future.done():
            pending.future.set_exception(RemoteError(payload))

    async def _serve(self, request_id: str, kind: str, payload: dict[str, Any]) -> None:
        try:
            if self._on_request is None:
                raise LookupError(f"the broker does not serve {kind!r} requests")
            reply = {"id": request_id, "kind": "result", "payload": await self._on_request(kind, payload)}
        except Exception as exc:  # noqa: BLE001 - any failure is an answer for the sandbox, not a crash here
            reply = {"id": request_id, "kind": "error", "payload": {"message": str(exc) or type(exc).__name__}}
        try:
            await self._transport.send(reply)
        except ConnectionError:
            pass

    def fail_all(self, reason: str) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(RuntimeCrashed(reason))

    async def close(self) -> None:
        self.fail_all("the runtime was shut down")
        self._transport.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
