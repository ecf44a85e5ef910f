"""Shared state in a real Redis: exact sliding windows across processes, fail closed when Redis is gone, audit stream.

Each test starts its own `redis-server` on a free port (no system service).
The end-to-end test runs three real front-end replicas over HTTP against one Redis.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from scale_support import HttpServerProcess, RedisServer, connect, execute

from mcp_pyodide.policy import PolicyEngine, parse_policy
from mcp_pyodide.state.redis_audit import STREAM, AuditTee
from mcp_pyodide.state.redis_store import RedisLimitStore
from mcp_pyodide.state.redis_store import connect as redis_connect

LIMITED = {
    "version": "1",
    "default": "allow",
    "tools": {
        "pyodide_execute": {"limits": [{"counter": "runs", "window": "minute", "max": 10, "scope": "grant"}]},
        "approve_me": {"action": "require_approval", "limits": [{"counter": "a", "window": 60, "max": 1}]},
    },
}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def engine_on(url: str) -> PolicyEngine:
    policy = parse_policy(LIMITED)
    return PolicyEngine(policy, store=RedisLimitStore(redis_connect(url), url, policy.all_limits()))


def test_concurrent_engines_on_one_redis_admit_exactly_the_limit(redis_server: RedisServer) -> None:
    async def scenario() -> list[bool]:
        engines = [engine_on(redis_server.url) for _ in range(3)]  # three "replicas", one store
        decisions = await asyncio.gather(
            *(engines[i % 3].decide("pyodide_execute", {"code": "1"}, f"s{i}", "alice") for i in range(50))
        )
        other = await engines[0].decide("pyodide_execute", {"code": "1"}, "s", "bob")  # bob's quota is his own
        assert other.allowed
        last = next(d for d in decisions if not d.allowed)
        assert "rate limit 10 per minute" in last.message and last.retry_after is not None
        assert 1 <= last.retry_after <= 60
        return [d.allowed for d in decisions]

    assert sum(asyncio.run(scenario())) == 10
    keys = redis.Redis.from_url(redis_server.url).keys("mcp-pyodide:rl:*")
    assert sorted(keys) == [b"mcp-pyodide:rl:runs:grant:alice", b"mcp-pyodide:rl:runs:grant:bob"]
    assert redis.Redis.from_url(redis_server.url).ttl(keys[0]) > 0  # windows expire on their own


def test_an_approval_reservation_is_held_in_redis_and_given_back_on_decline(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        front, other = engine_on(redis_server.url), engine_on(redis_server.url)
        pending = await front.decide("approve_me", {}, "s", "alice")
        assert pending.needs_approval and isinstance(pending.ticket, str)
        assert not (await other.decide("approve_me", {}, "s2", "alice")).needs_approval  # the one slot is held
        declined = await other.settle(pending, False, "the user said no")  # resolved on another replica
        assert declined.message.endswith("the user said no")
        again = await front.decide("approve_me", {}, "s", "alice")  # quota given back
        assert again.needs_approval
        assert (await other.settle(again, True)).allowed
        with pytest.raises(ValueError, match="no longer pending"):
            await front.settle(again, True)  # a ticket is good once

    asyncio.run(scenario())


def test_redis_down_fails_closed_naming_the_store_and_recovers(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        engine = engine_on(redis_server.url)
        assert (await engine.decide("pyodide_execute", {}, "s", "")).allowed
        redis_server.stop()
        down = await asyncio.wait_for(engine.decide("pyodide_execute", {}, "s", ""), 15)
        assert not down.allowed
        assert f"the shared state store redis://127.0.0.1:{redis_server.port}/0 is unreachable" in down.message
        assert (await engine.decide("unlimited_tool", {}, "s", "")).allowed  # no limit: no store needed
        redis_server.start()
        assert (await asyncio.wait_for(engine.decide("pyodide_execute", {}, "s", ""), 15)).allowed

    asyncio.run(scenario())


def test_the_audit_log_goes_to_a_bounded_stream_and_the_file(redis_server: RedisServer, tmp_path: Path) -> None:
    from mcp_pyodide.policy import AuditLog, audit_record

    async def scenario() -> None:
        engine = engine_on(redis_server.url)
        tee = AuditTee(AuditLog(tmp_path / "audit.jsonl"), redis_connect(redis_server.url), maxlen=100)
        for i in range(3):
            decision = await engine.decide("pyodide_execute", {"code": f"secret = {i}"}, "s", "alice")
            tee.write(audit_record(decision, {"code": f"secret = {i}"}, outcome="ok"))
        await tee.flush()

    asyncio.run(scenario())
    entries = redis.Redis.from_url(redis_server.url, decode_responses=True).xrange(STREAM)
    records = [json.loads(fields["record"]) for _, fields in entries]
    assert [r["principal"] for r in records] == ["alice"] * 3
    assert all("secret" not in json.dumps(r) for r in records)  # code is digested, never stored
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 3


def test_three_replicas_enforce_one_limit_exactly_and_fail_closed_without_redis(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    replicas = [HttpServerProcess(tmp_path, LIMITED, "--state", redis_server.url, name=f"replica{i}") for i in range(3)]
    try:

        async def fifty_calls() -> list[dict[str, object]]:
            async with connect(replicas[0].url) as a, connect(replicas[1].url) as b, connect(replicas[2].url) as c:
                sessions = [a, b, c]
                return await asyncio.gather(*(execute(sessions[i % 3], f"{i} + 1") for i in range(50)))

        results = asyncio.run(asyncio.wait_for(fifty_calls(), 300))
        ran = [r for r in results if not r["is_error"]]
        assert len(ran) == 10, [r["text"] for r in results]
        assert all(r["error"] is None and str(r["result"]).isdigit() for r in ran)  # really ran in an interpreter
        assert all("rate limit 10 per minute" in str(r["text"]) for r in results if r["is_error"])

        redis_server.stop()

        async def one_call(replica: HttpServerProcess) -> dict[str, object]:
            async with connect(replica.url) as session:
                return await execute(session, "'after'")

        down = asyncio.run(asyncio.wait_for(one_call(replicas[1]), 60))
        assert down["is_error"] and f"redis://127.0.0.1:{redis_server.port}/0 is unreachable" in str(down["text"])
        redis_server.start()  # no persistence: the windows start empty
        back = asyncio.run(asyncio.wait_for(one_call(replicas[2]), 120))
        assert back.get("result") == "'after'", back
        stream = redis.Redis.from_url(redis_server.url).xlen(STREAM)
        assert stream >= 1  # the replicas write the audit stream again
    finally:
        for replica in replicas:
            replica.stop()
    for replica in replicas:
        assert "Traceback" not in replica.log_text()
