"""Frames bytes on the private pipe to the Node process; knows nothing of what messages mean.

The format is defined in `node_runtime/protocol.mjs`: a 4-byte big-endian length,
then that many bytes of UTF-8 JSON.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

MAX_FRAME = 256 * 1024 * 1024
_HEADER = struct.Struct(">I")


def encode_frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return _HEADER.pack(len(body)) + body


class Transport:
    """Reads and writes whole messages on a pair of asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def send(self, message: dict[str, Any]) -> None:
        self._writer.write(encode_frame(message))
        await self._writer.drain()

    async def receive(self) -> dict[str, Any] | None:
        """The next message, or None when the other side closed the pipe."""
        try:
            header = await self._reader.readexactly(_HEADER.size)
            (size,) = _HEADER.unpack(header)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes exceeds the {MAX_FRAME}-byte limit")
            body = await self._reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        try:
            message = json.loads(body)
        except RecursionError:
            raise ValueError("a frame nested too deeply") from None
        if not isinstance(message, dict):
            raise ValueError("a frame did not hold a JSON object")
        return message

    def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()
