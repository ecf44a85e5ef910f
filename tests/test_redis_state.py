"""Shared state in a real Redis: exact sliding windows across processes, fail closed when Redis is gone, audit stream.

Each test starts its own `redis-server` on a free port (no system service).
The end-to-end test runs three real front-end replicas over HTTP against one Redis.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
from scale_support import HttpServerProcess, RedisServer, connect, execute
from support import runs_per_session_policy

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
        "approve_unlimited": {"action": "require_approval"},
    },
}
APPROVED_RUN = {
    "version": "1",
    "default": "allow",
    "tools": {
        "pyodide_execute": {
            "action": "require_approval",
            "limits": [{"counter": "runs", "window": "minute", "max": 1, "scope": "grant"}],
        }
    },
}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def engine_on(url: str, reservation_ttl_s: float = 300.0) -> PolicyEngine:
    policy = parse_policy(LIMITED)
    store = RedisLimitStore(redis_connect(url), url, policy.all_limits())
    return PolicyEngine(policy, store=store, reservation_ttl_s=reservation_ttl_s)


async def until(check: Callable[[], Awaitable[bool]], within_s: float) -> bool:
    """Poll ``check`` (Redis keeps the time here: there is no clock to inject) until it holds or time is up."""
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


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


def test_an_approval_with_no_limits_is_held_in_redis_too(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        front, other = engine_on(redis_server.url), engine_on(redis_server.url)
        pending = await front.decide("approve_unlimited", {}, "s", "alice")
        assert pending.needs_approval and isinstance(pending.ticket, str)
        assert (await other.settle(pending, True)).allowed  # approved through another replica
        with pytest.raises(ValueError, match="no longer pending"):
            await front.settle(pending, True)

    asyncio.run(scenario())


def test_an_unanswered_approval_gives_its_quota_back_when_it_expires(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        front, other = engine_on(redis_server.url, 0.5), engine_on(redis_server.url, 0.5)
        pending = await front.decide("approve_me", {}, "s", "alice")
        assert pending.needs_approval
        held = await other.decide("approve_me", {}, "s2", "alice")
        assert not held.needs_approval and "rate limit 1" in held.message  # the one slot is held...
        started = time.monotonic()

        async def free_again() -> bool:
            decision = await other.decide("approve_me", {}, "s2", "alice")
            if decision.needs_approval:
                await other.settle(decision, False)
            return decision.needs_approval

        assert await until(free_again, 10)  # ...until the approval expires, not until the 60 s window ends
        assert 0.4 <= time.monotonic() - started < 5
        with pytest.raises(ValueError, match="no longer pending"):  # the answer came too late: refused
            await front.settle(pending, True)
        assert (await front.decide("approve_me", {}, "s", "alice")).needs_approval

    asyncio.run(scenario())


def test_pending_approvals_in_redis_are_shared_single_use_and_capped(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcp_pyodide.server.approval import Pending
    from mcp_pyodide.state import redis_approvals
    from mcp_pyodide.state.redis_approvals import RedisApprovals

    async def scenario() -> None:
        engine = engine_on(redis_server.url)
        decision = await engine.decide("approve_unlimited", {"code": "1"}, "s", "alice")
        clients = [redis_connect(redis_server.url) for _ in range(2)]  # two replicas
        books = [RedisApprovals(RedisLimitStore(c, redis_server.url, []), c) for c in clients]
        assert await books[0].put("approval-1", Pending(decision, "bound", "sid"), 60)
        found = await books[1].pop("approval-1")  # the retry reached the other replica
        assert found == Pending(decision, "bound", "sid") and found.decision.ticket == decision.ticket
        assert await books[0].pop("approval-1") is None  # single use
        monkeypatch.setattr(redis_approvals, "MAX_PENDING", 3)
        assert [await books[i % 2].put(f"a{i}", Pending(decision, "b", "s"), 60) for i in range(4)] == [
            True,
            True,
            True,
            False,
        ]
        assert await books[0].put("short", Pending(decision, "b", "s"), 0.2) is False  # still full
        stored = redis.Redis.from_url(redis_server.url).keys("mcp-pyodide:approval:*")
        assert len(stored) == 3 and all(b"a0" not in key for key in stored)  # named by digests, not by the id

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
        other = [r["text"] for r in results if r["is_error"] and "rate limit" not in str(r["text"])]
        assert len(ran) == 10, (len(ran), other, [r["text"] for r in results][:3])
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
        assert not replica.traceback(), replica.traceback()


def test_a_call_never_served_gets_its_quota_back_in_redis(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        a, b = engine_on(redis_server.url), engine_on(redis_server.url)  # two replicas
        admitted = [await a.decide("pyodide_execute", {"code": "1"}, "s", "alice") for _ in range(10)]
        assert all(d.allowed for d in admitted)
        assert not (await b.decide("pyodide_execute", {"code": "1"}, "s", "alice")).allowed
        assert await a.refund(admitted[0])  # it found no interpreter: the slot is free on every replica
        assert (await b.decide("pyodide_execute", {"code": "1"}, "s", "alice")).allowed
        assert not (await b.decide("pyodide_execute", {"code": "1"}, "s", "alice")).allowed
        redis_server.stop()
        assert not await a.refund(admitted[1])  # Redis gone: nothing given back, nothing raised

    asyncio.run(scenario())


def test_first_calls_sent_at_once_share_the_connections_one_interpreter_and_quota(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Handles in Redis take a round trip to mint: calls that open a connection together must not each mint one
    (each would get an interpreter the connection's end never closes, and a per-session quota of its own)."""
    server = HttpServerProcess(tmp_path, runs_per_session_policy(4), "--state", redis_server.url)
    append = "seen = globals().setdefault('seen', []); seen.append({})"

    async def interpreters(count: int) -> bool:
        return len(server.node_processes()) == count

    async def scenario() -> None:
        async with connect(server.url) as session:
            results = await asyncio.gather(*(execute(session, append.format(i)) for i in range(3)))
            assert [r["error"] for r in results] == [None] * 3, results
            assert len({str(r["text"]).split("session: ")[-1] for r in results}) == 1, results
            assert (await execute(session, "sorted(seen)"))["result"] == "[0, 1, 2]"  # one interpreter ran all three
            assert await interpreters(1)
            refused = await execute(session, "1")  # the connection's fifth call: its one quota of 4 is used up
            assert refused["is_error"] and "rate limit 4 per hour" in str(refused["text"])
        assert await until(lambda: interpreters(0), 20)  # the connection ended: so did its only interpreter

    try:
        asyncio.run(asyncio.wait_for(scenario(), 180))
    finally:
        server.stop()
    assert not server.traceback(), server.traceback()


def test_a_stateless_approval_is_answered_through_any_replica_and_an_unanswered_one_expires(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """2026-07-28 approvals behind a load balancer: ask on A, answer on B; decline, approve, never answer."""
    import mcp_types as types
    from mcp import Client

    from mcp_pyodide.server.approval import APPROVAL_KEY

    policy = json.loads(json.dumps(APPROVED_RUN))
    policy["tools"]["pyodide_execute"]["limits"][0]["max"] = 2
    extra = ("--state", redis_server.url, "--approval-timeout", "3")
    audits = [tmp_path / f"audit{i}.jsonl" for i in range(2)]
    replicas = [
        HttpServerProcess(tmp_path, policy, *extra, "--audit-log", str(audits[i]), name=f"replica{i}") for i in range(2)
    ]
    code = {"code": "6 * 7"}

    def answer(action: str) -> dict[str, types.ElicitResult]:
        return {APPROVAL_KEY: types.ElicitResult(action=action)}  # type: ignore[arg-type]

    async def unused(context: object, params: object) -> types.ElicitResult:
        raise AssertionError("the test answers each approval itself, through the replica of its choice")

    def client(url: str) -> Client:  # a client able to show approval forms, driven by hand here
        return Client(url, mode="2026-07-28", elicitation_callback=unused)  # type: ignore[arg-type]

    async def scenario() -> None:
        async with client(replicas[0].url) as a, client(replicas[1].url) as b:
            asked = await a.session.call_tool("pyodide_execute", code, allow_input_required=True)
            assert isinstance(asked, types.InputRequiredResult) and asked.request_state
            declined = await b.session.call_tool(
                "pyodide_execute", code, input_responses=answer("decline"), request_state=asked.request_state
            )
            assert declined.is_error and "decline" in str(declined.content), declined

            asked = await a.session.call_tool("pyodide_execute", code, allow_input_required=True)
            assert isinstance(asked, types.InputRequiredResult), asked  # the declined call's quota came back at once
            approved = await b.session.call_tool(
                "pyodide_execute", code, input_responses=answer("accept"), request_state=asked.request_state
            )
            assert not approved.is_error and (approved.structured_content or {}).get("result") == "42", approved
            replay = await a.session.call_tool(
                "pyodide_execute", code, input_responses=answer("accept"), request_state=asked.request_state
            )
            assert replay.is_error and "already used" in str(replay.content), replay

            forgotten = await a.session.call_tool("pyodide_execute", code, allow_input_required=True)
            assert isinstance(forgotten, types.InputRequiredResult)  # the client never comes back with this one
            held = await b.session.call_tool("pyodide_execute", code, allow_input_required=True)
            assert isinstance(held, types.CallToolResult) and "rate limit 2 per minute" in str(held.content)
            started = time.monotonic()

            async def asked_again() -> bool:
                again = await b.session.call_tool("pyodide_execute", code, allow_input_required=True)
                return isinstance(again, types.InputRequiredResult)

            assert await until(asked_again, 30)  # the quota is back when the approval expires, not at the window
            assert 2.5 <= time.monotonic() - started < 20

            guessed = await b.session.call_tool("pyodide_execute", {"code": "1", "session": "guessed-handle-xyz"})
            assert guessed.is_error and "nothing was run" in str(guessed.content)

    try:
        asyncio.run(asyncio.wait_for(scenario(), 240))
    finally:
        for replica in replicas:
            replica.stop()
    for replica in replicas:
        assert not replica.traceback(), replica.traceback()
    # Each approval's lines share a link across the replicas' logs; the forgotten one has only its "asked" line.
    lines = [json.loads(line) for audit in audits for line in audit.read_text().splitlines()]
    by_link: dict[str, list[str]] = {}
    for line in lines:
        if "approval" in line:
            by_link.setdefault(line["approval"], []).append(line["outcome"])
    outcomes = sorted(sorted(v) for v in by_link.values())
    # declined; approved then replayed; and the forgotten approval and the last question, both only asked
    assert outcomes == [["asked"], ["asked"], ["asked", "ok", "refused"], ["asked", "refused"]], by_link
    assert any(line["rule"] == "session" and line["outcome"] == "refused" for line in lines)
    assert all("guessed-handle" not in json.dumps(line) for line in lines)  # a handle is never logged


def test_request_state_keys_come_from_a_file_of_secrets(tmp_path: Path) -> None:
    from mcp_pyodide.commands.scale import request_state_keys

    keys = tmp_path / "keys"
    keys.write_text("# rotated 2026-12\n" + "n" * 64 + "\n\n" + "o" * 32 + "\n")
    assert request_state_keys(keys) == [b"n" * 64, b"o" * 32]
    assert request_state_keys(None) is None
    keys.write_text("short\n")
    with pytest.raises(ValueError, match="at least 32 characters"):
        request_state_keys(keys)
    with pytest.raises(ValueError, match="No such file"):
        request_state_keys(tmp_path / "missing")
