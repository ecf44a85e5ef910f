"""Transport framing and request correlation against a fake Node peer (asyncio streams, no Node)."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mcp_pyodide._connection import Connection, RemoteError
from mcp_pyodide._protocol import (
    MAX_URL,
    ExecuteReply,
    ExecuteRequest,
    FetchRequest,
    Limits,
    PingRequest,
    ProtocolError,
    RestartingEvent,
)
from mcp_pyodide._transport import MAX_FRAME, Transport, encode_frame
from mcp_pyodide.errors import RuntimeCrashed

Peer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    message: dict[str, Any] = json.loads(await reader.readexactly(size))
    return message


async def pair() -> tuple[Transport, asyncio.StreamReader, asyncio.StreamWriter]:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    peer_reader, peer_writer = await asyncio.open_connection(sock=theirs)
    return Transport(reader, writer), peer_reader, peer_writer


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))


def test_frames_round_trip() -> None:
    async def main() -> None:
        transport, peer_reader, peer_writer = await pair()
        await transport.send({"id": 1, "kind": "ping", "payload": {}})
        assert await read_frame(peer_reader) == {"id": 1, "kind": "ping", "payload": {}}
        peer_writer.write(encode_frame({"id": 1, "kind": "result", "payload": {"generation": 1}}))
        assert await transport.receive() == {"id": 1, "kind": "result", "payload": {"generation": 1}}
        peer_writer.close()
        assert await transport.receive() is None  # closed pipe: no message, no exception

    run(main)


def test_an_oversize_frame_header_is_refused_before_reading_the_body() -> None:
    async def main() -> None:
        transport, _, peer_writer = await pair()
        peer_writer.write(struct.pack(">I", MAX_FRAME + 1))  # no body follows: we must not wait for it
        with pytest.raises(ValueError, match="exceeds"):
            await transport.receive()

    run(main)


@pytest.mark.parametrize("body", [b"[1, 2]", b"{not json", b"[" * 100_000 + b"]" * 100_000])
def test_malformed_frames_are_errors(body: bytes) -> None:
    async def main() -> None:
        transport, _, peer_writer = await pair()
        peer_writer.write(struct.pack(">I", len(body)) + body)
        with pytest.raises(ValueError):
            await transport.receive()

    run(main)


async def connect(peer: Peer, **kwargs: Any) -> Connection:
    transport, peer_reader, peer_writer = await pair()
    connection = Connection(transport, limits=Limits(output=100), **kwargs)
    connection.start()
    task = asyncio.get_running_loop().create_task(peer(peer_reader, peer_writer))
    connection._peer_task = task  # type: ignore[attr-defined] # keep it alive
    return connection


def test_output_then_a_typed_reply() -> None:
    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_frame(reader)
        assert request["kind"] == "execute" and request["payload"] == {"code": "1+1", "timeoutMs": 50}
        rid = request["id"]
        writer.write(encode_frame({"id": rid, "kind": "output", "payload": {"stream": "stdout", "text": "hi\n"}}))
        writer.write(encode_frame({"id": rid, "kind": "result", "payload": {"ok": True, "result": "2"}}))

    async def main() -> None:
        seen: list[tuple[str, str]] = []
        connection = await connect(peer)
        reply = await connection.request(ExecuteRequest("1+1", 50), on_output=lambda s, t: seen.append((s, t)))
        assert isinstance(reply, ExecuteReply) and reply.result == "2"
        assert seen == [("stdout", "hi\n")]
        await connection.close()

    run(main)


def test_an_error_reply_carries_code_and_the_runs_outcome() -> None:
    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rid = (await read_frame(reader))["id"]
        payload = {
            "code": "timeout",
            "message": "timed out",
            "stateReset": False,
            "ok": False,
            "stdoutTruncatedChars": 3,
        }
        writer.write(encode_frame({"id": rid, "kind": "error", "payload": payload}))

    async def main() -> None:
        connection = await connect(peer)
        with pytest.raises(RemoteError) as caught:
            await connection.request(ExecuteRequest("x", 1))
        assert caught.value.code == "timeout" and str(caught.value) == "timed out"
        assert caught.value.outcome is not None and caught.value.outcome.stdout_truncated_chars == 3

    run(main)


def test_a_malformed_reply_fails_that_call_clearly() -> None:
    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rid = (await read_frame(reader))["id"]
        writer.write(encode_frame({"id": rid, "kind": "result", "payload": {"ok": True, "result": ["list"]}}))

    async def main() -> None:
        connection = await connect(peer)
        with pytest.raises(ProtocolError, match=r"execute reply\.result: expected a string"):
            await connection.request(ExecuteRequest("x", 1))

    run(main)


def test_the_peer_exiting_fails_open_calls_and_sets_the_closed_event() -> None:
    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        writer.close()

    async def main() -> None:
        connection = await connect(peer)
        with pytest.raises(RuntimeCrashed, match="exited"):
            await connection.request(PingRequest())
        await asyncio.wait_for(connection.closed_event.wait(), 1)
        assert connection.closed
        with pytest.raises(RuntimeCrashed):
            await connection.request(PingRequest())

    run(main)


def test_events_are_typed_and_malformed_ones_dropped() -> None:
    events: list[object] = []

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode_frame({"id": None, "kind": "event", "payload": {"event": "restarting", "generation": "x"}}))
        writer.write(encode_frame({"id": None, "kind": "event", "payload": {"event": "restarting", "reason": "t"}}))
        rid = (await read_frame(reader))["id"]
        writer.write(encode_frame({"id": rid, "kind": "result", "payload": {"generation": 1}}))

    async def main() -> None:
        connection = await connect(peer, on_event=events.append)
        await connection.request(PingRequest())
        assert events == [RestartingEvent(reason="t", generation=0)]

    run(main)


def test_requests_from_node_are_decoded_and_answered() -> None:
    answers: list[dict[str, Any]] = []
    served: list[object] = []

    async def handler(request: object) -> dict[str, Any]:
        served.append(request)
        return {"status": 200}

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode_frame({"id": "n1", "kind": "fetch", "payload": {"url": "https://a.test/"}}))
        writer.write(encode_frame({"id": "n2", "kind": "fetch", "payload": {"url": "h" * (MAX_URL + 1)}}))
        writer.write(encode_frame({"id": "n3", "kind": "spawn", "payload": {}}))
        for _ in range(3):
            answers.append(await read_frame(reader))

    async def main() -> None:
        connection = await connect(peer, on_request=handler)
        while len(answers) < 3:
            await asyncio.sleep(0.01)
        by_id = {a["id"]: a for a in answers}
        assert by_id["n1"] == {"id": "n1", "kind": "result", "payload": {"status": 200}}
        assert by_id["n2"]["kind"] == "error" and "over the limit" in by_id["n2"]["payload"]["message"]
        assert by_id["n3"]["kind"] == "error" and "does not serve" in by_id["n3"]["payload"]["message"]
        assert served == [FetchRequest(url="https://a.test/")]
        await connection.close()

    run(main)
