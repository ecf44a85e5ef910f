"""MCP over stdin/stdout on the event loop's own pipe transports.

The SDK's `stdio_server()` reads and writes through `anyio.wrap_file`: every line read and
every message written (and flushed) is a hand-off to a worker thread and back, about a
third of a warm call's time in our Python process. When stdin and stdout are pipes or
sockets, as an MCP client starts us, this reads and writes them on the loop instead. It
keeps what the SDK's transport promises: while serving, fd 0 is the null device and fd 1
is stderr, so stray output from libraries or children misses the wire; lines are decoded
as UTF-8 with replacement and validated the same way. Anything else (a file, a terminal,
Windows) gets the SDK's transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import mcp_types as types
from mcp.server.stdio import stdio_server
from mcp.shared._context_streams import create_context_streams
from mcp.shared.message import SessionMessage

log = logging.getLogger("mcp_pyodide.server")

# A line longer than this is answered with an error and skipped, not buffered without end. The
# largest legitimate one is a call carrying --max-code-bytes of code, each byte escaped at most
# to six; the default 1 MB of code stays far below.
MAX_LINE_BYTES = 256 * 1024 * 1024

# What the SDK's `stdio_server()` yields and `Server.run` takes: its context-carrying memory
# streams of SessionMessage (received: SessionMessage | Exception), untyped in the SDK.
Streams = tuple[Any, Any]


class LineTooLong(ValueError):
    """A line on stdin over MAX_LINE_BYTES; it was skipped."""


def _is_pipe(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def pipes_available() -> bool:
    """Whether stdin and stdout can be served on the loop (pipes or sockets, not Windows)."""
    return sys.platform != "win32" and _is_pipe(0) and _is_pipe(1)


@asynccontextmanager
async def stdio_streams(max_line_bytes: int = MAX_LINE_BYTES) -> AsyncIterator[Streams]:
    """The read and write streams `Server.run` takes, over the process's stdin and stdout."""
    if not pipes_available():
        async with stdio_server() as streams:
            yield streams
        return
    with _claimed_std_fds() as (wire_in, wire_out):
        async with _served(wire_in, wire_out, max_line_bytes) as streams:
            yield streams


@contextlib.contextmanager
def _claimed_std_fds() -> Iterator[tuple[int, int]]:
    """Private copies of fd 0 and fd 1 for the wire; fd 0 becomes the null device and fd 1
    stderr until the end, when both are put back (blocking, as they were)."""
    saved = os.dup(0), os.dup(1)
    wire = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
        os.dup2(2, 1)
    finally:
        os.close(null)
    try:
        yield wire
    finally:
        for fd, copy in zip((0, 1), saved, strict=True):
            with contextlib.suppress(OSError):
                os.dup2(copy, fd)
                os.set_blocking(fd, True)
            os.close(copy)


@asynccontextmanager
async def _served(wire_in: int, wire_out: int, max_line_bytes: int) -> AsyncIterator[Streams]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=max_line_bytes)
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(wire_in, "rb", buffering=0)
    )
    # FlowControlMixin is the protocol asyncio's own StreamWriter uses: `drain()` waits while
    # the client is slow to read, and raises once the pipe is gone.
    write_transport, write_protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(wire_out, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(write_transport, write_protocol, None, loop)
    read_send, read_stream = create_context_streams[SessionMessage | Exception](0)
    write_stream, write_receive = create_context_streams[SessionMessage](0)

    async def read_lines() -> None:
        async with read_send:
            while (line := await _next_line(reader, max_line_bytes)) is not None:
                if isinstance(line, LineTooLong):
                    await read_send.send(line)
                    continue
                try:
                    text = line.decode("utf-8", errors="replace")
                    message = types.jsonrpc_message_adapter.validate_json(text, by_name=False)
                except Exception as exc:  # noqa: BLE001 - answered by stdin_guard, as the SDK's reader does
                    await read_send.send(exc)
                    continue
                await read_send.send(SessionMessage(message))

    async def write_messages(group: anyio.abc.TaskGroup) -> None:
        async with write_receive:
            async for session_message in write_receive:
                data = session_message.message.model_dump_json(by_alias=True, exclude_unset=True)
                try:
                    if write_transport.is_closing():
                        raise BrokenPipeError
                    writer.write(data.encode("utf-8") + b"\n")
                    await writer.drain()
                except (BrokenPipeError, ConnectionResetError):
                    # Nobody reads our answers any more: end serving as when stdin closes.
                    log.info("the client closed our stdout; shutting down")
                    group.cancel_scope.cancel()
                    return

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(read_lines)
            group.start_soon(write_messages, group)
            yield read_stream, write_stream
            group.cancel_scope.cancel()
    finally:
        read_transport.close()
        write_transport.close()


async def _next_line(reader: asyncio.StreamReader, limit: int) -> bytes | LineTooLong | None:
    """The next line (the last may lack its newline), a LineTooLong for one that was skipped, or None at EOF."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial or None
    except asyncio.LimitOverrunError:
        pass
    skipped = 0
    while True:  # drop the rest of the line, in pieces, without holding it
        try:
            skipped += len(await reader.readuntil(b"\n"))
            break
        except asyncio.IncompleteReadError as exc:
            skipped += len(exc.partial)
            break
        except asyncio.LimitOverrunError as exc:
            skipped += len(await reader.read(max(exc.consumed, 1)))
    log.warning("skipped a line on stdin of over %d bytes (%d bytes dropped)", limit, skipped)
    return LineTooLong(f"the line is longer than {limit:,} bytes")
