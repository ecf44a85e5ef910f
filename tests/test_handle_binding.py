"""Session handles bound to the principal, through the real server: bearer tokens, the official client, both eras.

Principal A's handle, used by principal B, runs nothing and reads exactly like
an unknown handle; with `--state redis://` the handle's record is in Redis
with the idle timeout as its TTL and is gone when the session ends. Each
module fixture is one real HTTP server (tokens for alice and bob); the Redis
one has a `redis-server` of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
import redis
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from scale_support import HttpServerProcess, RedisServer

from mcp_pyodide.server.app import UNKNOWN_HANDLE
from mcp_pyodide.server.auth import add_token
from mcp_pyodide.state.redis_audit import STREAM
from mcp_pyodide.state.redis_handles import handle_key

MODERN = "2026-07-28"
IDLE_S = 8
POLICY = {"version": "1", "default": "allow"}
WRITE_MARKER = "open('/mnt/output/marker', 'w').write('ran'); 'ran'"
SCENARIO_TIMEOUT_S = 240.0


@dataclass
class Served:
    http: HttpServerProcess
    alice: str
    bob: str
    audit: Path
    redis: RedisServer | None
    extra: list[str]

    def markers(self) -> list[Path]:
        return list(self.http.output_dir.rglob("marker"))


def serve(tmp: Path, redis_server: RedisServer | None) -> Served:
    tokens = tmp / "tokens"
    alice, bob = add_token(tokens, "alice"), add_token(tokens, "bob")
    audit = tmp / "audit.jsonl"
    extra = ["--auth-tokens", str(tokens), "--audit-log", str(audit), "--idle-timeout", str(IDLE_S)]
    if redis_server is not None:
        extra += ["--state", redis_server.url]
    return Served(HttpServerProcess(tmp, POLICY, *extra), alice, bob, audit, redis_server, extra)


@contextlib.contextmanager
def serving(tmp: Path, with_redis: bool) -> Iterator[Served]:
    store = RedisServer(tmp) if with_redis else None
    try:
        server = serve(tmp, store)
        try:
            yield server
        finally:
            server.http.stop()
            assert not server.http.traceback(), server.http.traceback()
    finally:
        if store is not None:
            store.stop()


@pytest.fixture(scope="module")
def memory_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("handles-memory"), with_redis=False) as server:
        yield server


@pytest.fixture(scope="module")
def redis_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("handles-redis"), with_redis=True) as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def served(request: pytest.FixtureRequest) -> Served:
    """The server with each registry: in memory, and in Redis (`--state redis://`)."""
    server: Served = request.getfixturevalue(f"{request.param}_served")
    return server


@contextlib.asynccontextmanager
async def client(url: str, token: str, mode: str) -> AsyncIterator[Client]:
    """The official client, in ``mode``, sending ``Authorization: Bearer token`` on every request."""
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as connected:  # type: ignore[arg-type]
            assert connected.protocol_version == (MODERN if mode == MODERN else "2025-11-25")
            yield connected


def text(result: types.CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def structured(result: types.CallToolResult) -> dict[str, Any]:
    assert isinstance(result.structured_content, dict), text(result)
    return result.structured_content


async def execute(connected: Client, code: str, session: str | None) -> types.CallToolResult:
    arguments: dict[str, Any] = {"code": code}
    if session is not None:
        arguments["session"] = session
    return await connected.call_tool("pyodide_execute", arguments)


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s: {what}")
        time.sleep(0.1)


@pytest.mark.parametrize("mode", [MODERN, "legacy"])
def test_another_principals_handle_runs_nothing_and_reads_as_unknown(served: Served, mode: str) -> None:
    async def scenario() -> str:
        async with (
            client(served.http.url, served.alice, mode) as alice,
            client(served.http.url, served.bob, mode) as bob,
        ):
            # 2026-07-28: "new" mints a handle; handshake era: the MCP session's own handle, minted on first call.
            first = await execute(alice, "x = 41", "new" if mode == MODERN else None)
            handle = structured(first)["session"]
            stolen = await execute(bob, WRITE_MARKER, handle)
            guessed = await execute(bob, WRITE_MARKER, handle[:-2] + ("aa" if handle[-2:] != "aa" else "bb"))
            assert stolen.is_error and guessed.is_error
            assert text(stolen) == text(guessed) == UNKNOWN_HANDLE  # no oracle: the same words for both
            assert "session" not in (stolen.structured_content or {})
            assert not served.markers()  # nothing ran
            again = await execute(alice, "x + 1", handle)
            assert not again.is_error and structured(again)["result"] == "42", text(again)
            assert structured(again)["session"] == handle and not structured(again).get("state_reset")
            return str(handle)

    handle = asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))
    audit = served.audit.read_text()
    assert audit and handle not in audit  # the audit log names the public label, never the handle
    assert "alice" in {json.loads(line).get("principal") for line in audit.splitlines()}
    if served.redis is not None:  # nor does the audit stream in Redis
        stream = redis.Redis.from_url(served.redis.url, decode_responses=True).xrange(STREAM)
        assert stream and not any(handle in value for _, entry in stream for value in entry.values())


def test_redis_holds_the_handle_with_the_idle_timeout_as_ttl_until_the_session_ends(redis_served: Served) -> None:
    served = redis_served
    assert served.redis is not None
    probe = redis.Redis.from_url(served.redis.url, decode_responses=True)

    def key(handle: str) -> str:
        assert handle not in str(probe.keys("*"))  # the key is a digest: Redis never holds the secret
        return handle_key(handle)

    async def scenario() -> None:
        async with client(served.http.url, served.alice, MODERN) as alice:
            made = structured(await execute(alice, "y = 1", "new"))
            handle = made["session"]
            record = probe.hgetall(key(handle))
            assert record["principal"] == "alice" and float(record["last_used"]) >= float(record["created"])
            assert 0 < probe.pttl(key(handle)) <= IDLE_S * 1000
            # Idle past --idle-timeout: Redis drops the record, and the handle runs nothing.
            await asyncio.to_thread(wait_until, lambda: not probe.exists(key(handle)), IDLE_S + 15, "TTL end")
            late = await execute(alice, WRITE_MARKER, handle)
            assert late.is_error and text(late) == UNKNOWN_HANDLE and not served.markers()
        async with client(served.http.url, served.alice, "legacy") as legacy:
            handle = structured(await execute(legacy, "z = 1", None))["session"]
            assert probe.hget(key(handle), "principal") == "alice"
        # The MCP session ended (the client's DELETE): its handle is dropped from Redis at once.
        await asyncio.to_thread(wait_until, lambda: not probe.exists(key(handle)), 20, "dropped with the session")

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))


def test_another_replica_knows_the_handle_but_says_its_interpreter_is_elsewhere(
    redis_served: Served, tmp_path: Path
) -> None:
    """The record is shared, the interpreter is not: replica B accepts alice's handle (not bob's) and says the
    state is gone, never pretending it kept it."""
    other = HttpServerProcess(tmp_path, POLICY, *redis_served.extra, name="replica-b")

    async def scenario() -> None:
        async with client(redis_served.http.url, redis_served.alice, MODERN) as on_a:
            handle = structured(await execute(on_a, "w = 1", "new"))["session"]
        async with client(other.url, redis_served.bob, MODERN) as bob_on_b:
            assert text(await execute(bob_on_b, WRITE_MARKER, handle)) == UNKNOWN_HANDLE
        async with client(other.url, redis_served.alice, MODERN) as on_b:
            moved = await execute(on_b, "'w' in globals()", handle)
            assert structured(moved)["result"] == "False" and structured(moved)["state_reset"] is True
            assert "another server replica" in structured(moved)["state_reset_reason"]
            kept = await execute(on_b, "w = 2; w", handle)  # from then on, B's interpreter is the session's
            assert structured(kept)["result"] == "2" and not structured(kept).get("state_reset")

    try:
        asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))
    finally:
        other.stop()
    assert not list(other.output_dir.rglob("marker")) and "Traceback" not in other.log_text()
