"""Correlates requests to the Node process with their streamed output and replies.

Every frame that arrives is decoded here, once, by the catalogue in `_protocol`: callers get
typed, bounded values and never see a raw payload.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ._protocol import (
    REQUESTS_FROM_NODE,
    ErrorReply,
    Event,
    ExecuteReply,
    Limits,
    Output,
    ProtocolError,
    Request,
    decode,
    decode_event,
    decode_frame,
    decode_reply,
    encode,
)
from ._transport import Transport
from .errors import RuntimeCrashed

log = logging.getLogger("mcp_pyodide.runtime")

OutputListener = Callable[[str, str], None]
EventListener = Callable[[Event], None]
# Requests the Node side makes of the broker (only "fetch"): the decoded request -> reply payload.
RequestHandler = Callable[[Any], Awaitable[dict[str, Any]]]


class RemoteError(Exception):
    """An error reply from the Node process; for `execute`, `outcome` is what the run produced."""

    def __init__(self, reply: ErrorReply, outcome: ExecuteReply | None = None) -> None:
        super().__init__(reply.message)
        self.reply = reply
        self.code = reply.code
        self.outcome = outcome


@dataclass
class _Pending:
    kind: str
    future: asyncio.Future[Any]
    on_output: OutputListener | None = None


class Connection:
    """One request/reply session over a Transport; fails every open call when the pipe closes."""

    def __init__(
        self,
        transport: Transport,
        on_event: EventListener | None = None,
        on_request: RequestHandler | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._transport = transport
        self._on_event = on_event
        self._on_request = on_request
        self._limits = limits or Limits()
        self._serving: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._closed_reason: str | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.closed_event = asyncio.Event()

    def start(self) -> None:
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    async def request(self, message: Request, on_output: OutputListener | None = None) -> Any:
        """Send one request and wait for its decoded reply; raises RemoteError or RuntimeCrashed."""
        if self._closed_reason is not None:
            raise RuntimeCrashed(self._closed_reason)
        request_id = next(self._ids)
        pending = _Pending(message.kind, asyncio.get_running_loop().create_future(), on_output)
        self._pending[request_id] = pending
        try:
            await self._transport.send({"id": request_id, "kind": message.kind, "payload": encode(message)})
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
        except (ValueError, KeyError, TypeError, RecursionError, ProtocolError) as exc:  # the pipe can't be trusted
            reason = f"the Node process sent an unreadable message ({exc})"
            log.error(reason)
        finally:
            self.fail_all(reason)

    def _dispatch(self, message: object) -> None:
        frame = decode_frame(message)
        if frame.id is None:
            try:
                event = decode_event(frame.payload, self._limits)
            except ProtocolError as exc:
                log.warning("ignored a malformed event: %s", exc)
                return
            if event is not None and self._on_event is not None:
                self._on_event(event)
            return
        if isinstance(frame.id, str):  # a request from the Node side
            task = asyncio.get_running_loop().create_task(self._serve(frame.id, frame.kind, frame.payload))
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)
            return
        pending = self._pending.get(frame.id)
        if pending is None or pending.future.done():
            return
        try:
            if frame.kind == "output":
                chunk = decode(Output, frame.payload, self._limits, "output")
                if pending.on_output is not None:
                    pending.on_output(chunk.stream, chunk.text)
            elif frame.kind == "result":
                pending.future.set_result(decode_reply(pending.kind, frame.payload, self._limits))
            elif frame.kind == "error":
                reply = decode(ErrorReply, frame.payload, self._limits, f"{pending.kind} error")
                outcome = None
                if pending.kind == "execute" and "ok" in frame.payload:
                    outcome = decode(ExecuteReply, frame.payload, self._limits, "execute error")
                pending.future.set_exception(RemoteError(reply, outcome))
        except ProtocolError as exc:
            log.error("the Node process broke the protocol: %s", exc)
            pending.future.set_exception(exc)

    async def _serve(self, request_id: str, kind: str, payload: dict[str, Any]) -> None:
        try:
            cls = REQUESTS_FROM_NODE.get(kind)
            if self._on_request is None or cls is None:
                raise LookupError(f"the broker does not serve {kind!r} requests")
            request = decode(cls, payload, self._limits, f"{kind} request")
            reply = {"id": request_id, "kind": "result", "payload": await self._on_request(request)}
        except Exception as exc:  # noqa: BLE001 - any failure is an answer for the sandbox, not a crash here
            reply = {"id": request_id, "kind": "error", "payload": {"message": str(exc) or type(exc).__name__}}
        try:
            await self._transport.send(reply)
        except ConnectionError:
            pass

    def fail_all(self, reason: str) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
        self.closed_event.set()
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(RuntimeCrashed(reason))

    async def close(self) -> None:
        self.fail_all("the runtime was shut down")
        self._transport.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
