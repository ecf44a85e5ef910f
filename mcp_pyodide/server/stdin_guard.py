"""Answer lines on stdin that are not JSON-RPC instead of dropping them silently.

The MCP SDK's stdio reader turns an unparsable line into an exception on the read stream
and the dispatcher discards it at debug level: the client waits forever for a reply that
never comes, and nothing is logged. This sits between the two: it logs the line (bounded)
and answers with a JSON-RPC error with `"id": null`, as JSON-RPC 2.0 prescribes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError
from pydantic import ValidationError

from .fast_stdio import LineTooLong

log = logging.getLogger("mcp_pyodide.server")
MAX_LOGGED_CHARS = 200


def describe(exc: Exception) -> tuple[int, str]:
    """(JSON-RPC error code, short message) for what the reader could not decode."""
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        if errors and errors[0].get("type") == "json_invalid":
            return PARSE_ERROR, "Parse error: the line is not valid JSON"
        return INVALID_REQUEST, "Invalid Request: the line is JSON but not a JSON-RPC 2.0 message"
    if isinstance(exc, LineTooLong):
        return PARSE_ERROR, f"Parse error: {exc}; it was skipped"
    return PARSE_ERROR, f"Parse error: {type(exc).__name__}"


def error_reply(exc: Exception) -> SessionMessage:
    code, message = describe(exc)
    return SessionMessage(JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=code, message=message)))


def _input_of(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        for error in exc.errors():
            value: Any = error.get("input")
            if value is not None:
                text = value if isinstance(value, str) else repr(value)
                return text[:MAX_LOGGED_CHARS] + ("..." if len(text) > MAX_LOGGED_CHARS else "")
    return ""


class _Answering(ObjectReceiveStream[SessionMessage | Exception]):
    """`read_stream` with undecodable lines answered in place: no task or stream hop per message."""

    def __init__(
        self,
        read_stream: ObjectReceiveStream[SessionMessage | Exception],
        write_stream: ObjectSendStream[SessionMessage],
    ) -> None:
        self._read = read_stream
        self._write = write_stream

    async def receive(self) -> SessionMessage | Exception:
        while True:
            item = await self._read.receive()
            if not isinstance(item, Exception):
                return item
            _, message = describe(item)
            log.warning("ignored a line on stdin (%s): %r", message, _input_of(item))
            try:
                await self._write.send(error_reply(item))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                raise anyio.EndOfStream from None

    async def aclose(self) -> None:
        await self._read.aclose()


@asynccontextmanager
async def answer_bad_lines(
    read_stream: ObjectReceiveStream[SessionMessage | Exception],
    write_stream: ObjectSendStream[SessionMessage],
) -> AsyncIterator[ObjectReceiveStream[SessionMessage | Exception]]:
    """A read stream like `read_stream` from which undecodable lines were answered and removed."""
    async with _Answering(read_stream, write_stream) as stream:
        yield stream
