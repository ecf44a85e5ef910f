"""Engine behaviour: the example policy, defaults, scopes, counters, concurrency, approval."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from mcp_pyodide.policy import (
    DEFAULT_POLICY_JSON,
    Decision,
    Policy,
    PolicyEngine,
    default_policy,
    load_policy,
    parse_policy,
)

EXAMPLE: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "hide": ["pyodide_read-image"],
    "all_tools": {"limits": [{"counter": "all", "window": "hour", "max": 500, "scope": "grant"}]},
    "tools": {
        "pyodide_execute": {
            "limits": [
                {
                    "counter": "pyodide_execute_rate",
                    "window": "minute",
                    "max": 10,
                    "scope": "grant",
                }
            ],
            "deny_if": [
                {
                    "path": "code",
                    "op": "matches",
                    "value": "(?i)\\bos\\.system\\b",
                    "reason": "no shell",
                }
            ],
            "require": [{"path": "timeout", "op": "lte", "value": 60000}],
        },
        "pyodide_get-mount-points": {},
    },
}


class FakeClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def engine_for(data: dict[str, Any], clock: FakeClock) -> PolicyEngine:
    return PolicyEngine(parse_policy(data, "test.json"), clock=clock)


def run(
    engine: PolicyEngine,
    tool: str,
    args: dict[str, Any] | None = None,
    session: str = "s1",
) -> Decision:
    return asyncio.run(engine.decide(tool, args if args is not None else {}, session))


OK_ARGS = {"code": "print(1)", "timeout": 30000}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def example(clock: FakeClock) -> PolicyEngine:
    return engine_for(EXAMPLE, clock)


def test_example_loads_from_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(EXAMPLE), encoding="utf-8")
    policy = load_policy(path)
    assert isinstance(policy, Policy)
    assert policy.default == "deny"
    assert policy.source == str(path)


def test_hidden_tool_invisible_and_denied(example: PolicyEngine) -> None:
    assert not example.is_visible("pyodide_read-image")
    assert example.is_visible("pyodide_execute")
    assert example.visible_tools(["pyodide_execute", "pyodide_read-image"]) == ["pyodide_execute"]
    d = run(example, "pyodide_read-image", {"path": "/x.png"})
    assert not d.allowed and not d.needs_approval
    assert d.rule == "hide"
    assert d.message == "[POLICY DENIED] pyodide_read-image: tool is hidden by policy"


def test_hide_star_hides_everything(clock: FakeClock) -> None:
    engine = engine_for({"version": "1", "default": "allow", "hide": ["*"]}, clock)
    assert not engine.is_visible("anything")
    assert run(engine, "anything").message == "[POLICY DENIED] anything: tool is hidden by policy"


def test_unlisted_tool_denied_by_default(example: PolicyEngine) -> None:
    d = run(example, "foo")
    assert not d.allowed
    assert d.rule == "default"
    assert d.message == "[POLICY DENIED] foo: not allowed by policy (default deny)"


def test_listed_empty_entry_allowed_under_default_deny(example: PolicyEngine) -> None:
    d = run(example, "pyodide_get-mount-points")
    assert d.allowed and not d.needs_approval
    assert d.rule == "tools.pyodide_get-mount-points"
    assert d.message == ""


def test_deny_if_fires_with_reason(example: PolicyEngine) -> None:
    d = run(
        example,
        "pyodide_execute",
        {"code": "import os\nOS.System('ls')", "timeout": 1000},
    )
    assert not d.allowed
    assert d.rule == "tools.pyodide_execute.deny_if[0]"
    assert d.message == ("[POLICY DENIED] pyodide_execute: no shell (deny_if code matches '(?i)\\bos\\.system\\b')")


def test_require_timeout(example: PolicyEngine) -> None:
    d = run(example, "pyodide_execute", {"code": "1", "timeout": 60001})
    assert not d.allowed
    assert d.rule == "tools.pyodide_execute.require[0]"
    assert d.message == (
        "[POLICY DENIED] pyodide_execute: argument does not satisfy policy (require timeout lte 60000)"
    )
    assert run(example, "pyodide_execute", {"code": "1", "timeout": 60000}).allowed


def test_require_on_missing_argument_fails(example: PolicyEngine) -> None:
    d = run(example, "pyodide_execute", {"code": "1"})
    assert not d.allowed
    assert "required argument 'timeout' is missing (require timeout lte 60000)" in d.message


def test_deny_if_on_missing_argument_does_not_fire(example: PolicyEngine) -> None:
    assert run(example, "pyodide_execute", {"timeout": 5}).allowed


def test_eleventh_call_denied_with_retry_then_window_slides(example: PolicyEngine, clock: FakeClock) -> None:
    start = clock.now
    for _ in range(10):
        assert run(example, "pyodide_execute", OK_ARGS).allowed
        clock.advance(1)
    clock.now = start + 37
    d = run(example, "pyodide_execute", OK_ARGS)
    assert not d.allowed
    assert d.rule == "tools.pyodide_execute.limits[0]"
    assert d.retry_after == 23
    assert d.message == (
        "[POLICY DENIED] pyodide_execute: rate limit 10 per minute reached "
        "(counter pyodide_execute_rate); retry in 23 s"
    )
    # Just before the oldest call leaves the window: still full.
    clock.now = start + 59.9
    assert run(example, "pyodide_execute", OK_ARGS).retry_after == 1
    # The oldest call (at start) has left; exactly one slot opened.
    clock.now = start + 60
    assert run(example, "pyodide_execute", OK_ARGS).allowed
    denied = run(example, "pyodide_execute", OK_ARGS)
    assert not denied.allowed
    assert denied.retry_after == 1  # the call at start+1 leaves at start+61


def test_sliding_window_does_not_admit_double_at_boundary(example: PolicyEngine, clock: FakeClock) -> None:
    # Fixed minute buckets would admit 10 at :59 and 10 more at 1:01.
    clock.now = 59.0
    for _ in range(10):
        assert run(example, "pyodide_execute", OK_ARGS).allowed
    clock.now = 61.0
    d = run(example, "pyodide_execute", OK_ARGS)
    assert not d.allowed
    assert d.retry_after == 58
    clock.now = 118.99
    assert not run(example, "pyodide_execute", OK_ARGS).allowed
    clock.now = 119.0
    admitted = sum(run(example, "pyodide_execute", OK_ARGS).allowed for _ in range(20))
    assert admitted == 10


def test_refused_calls_do_not_consume_quota(example: PolicyEngine, clock: FakeClock) -> None:
    for _ in range(100):
        assert not run(example, "pyodide_execute", {"code": "os.system('x')", "timeout": 1}).allowed
        assert not run(example, "pyodide_execute", {"code": "1", "timeout": 10**6}).allowed
    admitted = sum(run(example, "pyodide_execute", OK_ARGS).allowed for _ in range(15))
    assert admitted == 10
    # Rate-limited refusals don't count either: the window still frees after 60 s.
    clock.advance(60)
    assert run(example, "pyodide_execute", OK_ARGS).allowed


def test_rate_limited_refusal_does_not_consume_other_counters(clock: FakeClock) -> None:
    data = {
        "version": "1",
        "default": "allow",
        "all_tools": {"limits": [{"counter": "all", "window": "hour", "max": 12}]},
        "tools": {"a": {"limits": [{"counter": "a", "window": "minute", "max": 2}]}},
    }
    engine = engine_for(data, clock)
    results = [run(engine, "a").allowed for _ in range(10)]
    assert results == [True, True] + [False] * 8
    # Only the 2 admitted calls count against "all": 10 more fit for other tools.
    assert sum(run(engine, "b").allowed for _ in range(11)) == 10


def test_all_tools_limit_applies_across_tools(clock: FakeClock) -> None:
    data = dict(EXAMPLE, all_tools={"limits": [{"counter": "all", "window": "hour", "max": 3}]})
    engine = engine_for(data, clock)
    assert run(engine, "pyodide_execute", OK_ARGS).allowed
    assert run(engine, "pyodide_get-mount-points").allowed
    assert run(engine, "pyodide_execute", OK_ARGS).allowed
    d = run(engine, "pyodide_get-mount-points")
    assert d.rule == "all_tools.limits[0]"
    assert d.message == (
        "[POLICY DENIED] pyodide_get-mount-points: rate limit 3 per hour reached (counter all); retry in 3600 s"
    )


def test_default_policy(clock: FakeClock) -> None:
    engine = PolicyEngine(default_policy(), clock=clock)
    assert json.loads(DEFAULT_POLICY_JSON)["tools"]["pyodide_execute"]["limits"][0]["max"] == 10
    results = [run(engine, "pyodide_execute", {"code": "1"}, session=f"s{i}").allowed for i in range(11)]
    assert results == [True] * 10 + [False]  # grant scope: all sessions share the 10
    assert all(run(engine, "pyodide_install-packages", {"packages": ["numpy"]}).allowed for _ in range(100))
    assert all(engine.is_visible(t) for t in ("pyodide_execute", "pyodide_read-image"))
    clock.advance(60)
    assert run(engine, "pyodide_execute", {"code": "1"}).allowed


def test_deny_everything(clock: FakeClock) -> None:
    engine = engine_for({"version": "1", "default": "deny", "tools": {}}, clock)
    for tool in ("pyodide_execute", "pyodide_get-mount-points", "x"):
        assert engine.is_visible(tool)
        d = run(engine, tool, OK_ARGS)
        assert not d.allowed
        assert d.message == f"[POLICY DENIED] {tool}: not allowed by policy (default deny)"


def test_action_deny_and_allow(clock: FakeClock) -> None:
    data = {
        "version": "1",
        "default": "allow",
        "tools": {
            "a": {"action": "deny", "reason": "use b instead"},
            "b": {"action": "deny"},
            "c": {"action": "allow"},
        },
    }
    engine = engine_for(data, clock)
    assert run(engine, "a").message == "[POLICY DENIED] a: use b instead (action deny)"
    assert run(engine, "a").rule == "tools.a.action"
    assert run(engine, "b").message == "[POLICY DENIED] b: not allowed by policy (action deny)"
    assert run(engine, "c").allowed
    assert run(engine, "unlisted").allowed
    assert run(engine, "unlisted").rule == "default"


def test_shared_counter_across_tools(clock: FakeClock) -> None:
    limit = {"counter": "heavy", "window": "minute", "max": 3}
    data = {
        "version": "1",
        "default": "deny",
        "tools": {"a": {"limits": [limit]}, "b": {"limits": [limit]}},
    }
    engine = engine_for(data, clock)
    assert run(engine, "a").allowed
    assert run(engine, "b").allowed
    assert run(engine, "a").allowed
    d = run(engine, "b")
    assert not d.allowed and "(counter heavy)" in d.message
    assert not run(engine, "a").allowed


def test_shared_counter_with_different_maxima(clock: FakeClock) -> None:
    data = {
        "version": "1",
        "default": "deny",
        "tools": {
            "small": {"limits": [{"counter": "c", "window": 10, "max": 2}]},
            "big": {"limits": [{"counter": "c", "window": 10, "max": 4}]},
        },
    }
    engine = engine_for(data, clock)
    for _ in range(3):
        assert run(engine, "big").allowed
        clock.advance(1)
    d = run(engine, "small")  # 3 counted, needs 2 to leave: the second leaves at t0+11
    assert not d.allowed
    assert d.message == "[POLICY DENIED] small: rate limit 2 per 10 s reached (counter c); retry in 8 s"
    assert run(engine, "big").allowed
    assert not run(engine, "big").allowed


def test_session_scope_vs_grant_scope(clock: FakeClock) -> None:
    data = {
        "version": "1",
        "default": "allow",
        "tools": {
            "per_session": {"limits": [{"counter": "ps", "window": "minute", "max": 2, "scope": "session"}]},
            "per_server": {"limits": [{"counter": "pg", "window": "minute", "max": 2, "scope": "grant"}]},
        },
    }
    engine = engine_for(data, clock)
    assert [run(engine, "per_session", session="A").allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert [run(engine, "per_session", session="B").allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert [run(engine, "per_server", session="A").allowed for _ in range(2)] == [
        True,
        True,
    ]
    assert not run(engine, "per_server", session="B").allowed


def test_numeric_window_and_second_window_messages(clock: FakeClock) -> None:
    data = {
        "version": "1",
        "default": "allow",
        "tools": {
            "a": {"limits": [{"counter": "a", "window": 2.5, "max": 1}]},
            "b": {"limits": [{"counter": "b", "window": "second", "max": 1}]},
            "z": {"limits": [{"counter": "z", "window": "day", "max": 0}]},
        },
    }
    engine = engine_for(data, clock)
    assert run(engine, "a").allowed
    assert run(engine, "a").message.endswith("rate limit 1 per 2.5 s reached (counter a); retry in 3 s")
    assert run(engine, "b").allowed
    assert run(engine, "b").message.endswith("rate limit 1 per second reached (counter b); retry in 1 s")
    d = run(engine, "z")
    assert d.message == "[POLICY DENIED] z: rate limit 0 per day reached (counter z); calls are not allowed"
    assert d.retry_after is None


def test_retry_reports_longest_blocking_limit(clock: FakeClock) -> None:
    data = {
        "version": "1",
        "default": "allow",
        "all_tools": {"limits": [{"counter": "all", "window": "minute", "max": 1}]},
        "tools": {"a": {"limits": [{"counter": "a", "window": "hour", "max": 1}]}},
    }
    engine = engine_for(data, clock)
    assert run(engine, "a").allowed
    d = run(engine, "a")
    assert d.rule == "tools.a.limits[0]"
    assert d.retry_after == 3600


def test_concurrent_decides_admit_exactly_the_limit(clock: FakeClock) -> None:
    engine = PolicyEngine(default_policy(), clock=clock)

    async def main() -> list[Decision]:
        return await asyncio.gather(
            *(engine.decide("pyodide_execute", {"code": str(i)}, f"s{i % 3}") for i in range(50))
        )

    decisions = asyncio.run(main())
    assert sum(d.allowed for d in decisions) == 10
    assert all(d.retry_after == 60 for d in decisions if not d.allowed)


def test_concurrent_threads_admit_exactly_the_limit(clock: FakeClock) -> None:
    from concurrent.futures import ThreadPoolExecutor

    engine = PolicyEngine(default_policy(), clock=clock)
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(
            pool.map(
                lambda i: engine.decide_now("pyodide_execute", {}, str(i)).allowed,
                range(200),
            )
        )
    assert sum(results) == 10


def _approval_engine(clock: FakeClock) -> PolicyEngine:
    data = {
        "version": "1",
        "default": "deny",
        "tools": {
            "pyodide_execute": {
                "action": "require_approval",
                "reason": "code runs on your machine",
                "limits": [{"counter": "x", "window": "minute", "max": 2}],
                "require": [{"path": "timeout", "op": "lte", "value": 100}],
            }
        },
    }
    return engine_for(data, clock)


def test_require_approval_reserve_commit(clock: FakeClock) -> None:
    engine = _approval_engine(clock)
    d = run(engine, "pyodide_execute", {"timeout": 1})
    assert d.needs_approval and not d.allowed
    assert d.rule == "tools.pyodide_execute.action"
    assert d.message == "[POLICY APPROVAL REQUIRED] pyodide_execute: code runs on your machine"
    assert engine.pending_approvals == 1
    approved = engine.commit(d)
    assert approved.allowed and not approved.needs_approval
    assert approved.kind == "allow"
    assert engine.pending_approvals == 0
    with pytest.raises(ValueError):
        engine.commit(d)
    assert engine.release(d).message == "[POLICY DENIED] pyodide_execute: approval declined by user"
    # The committed call still counts.
    assert run(engine, "pyodide_execute", {"timeout": 1}).needs_approval
    assert not run(engine, "pyodide_execute", {"timeout": 1}).needs_approval


def test_require_approval_release_returns_quota(clock: FakeClock) -> None:
    engine = _approval_engine(clock)
    first = run(engine, "pyodide_execute", {"timeout": 1})
    second = run(engine, "pyodide_execute", {"timeout": 1})
    assert first.needs_approval and second.needs_approval
    # Both slots are reserved while the user is being asked.
    blocked = run(engine, "pyodide_execute", {"timeout": 1})
    assert not blocked.allowed and not blocked.needs_approval and "rate limit 2" in blocked.message
    declined = engine.release(first)
    assert declined.message == "[POLICY DENIED] pyodide_execute: approval declined by user"
    assert not declined.allowed
    engine.release(first)  # idempotent
    assert engine.pending_approvals == 1
    with pytest.raises(ValueError):
        engine.commit(first)
    assert run(engine, "pyodide_execute", {"timeout": 1}).needs_approval
    assert engine.release(second, "approval timed out").message.endswith(": approval timed out")


def test_require_approval_checks_conditions_first(clock: FakeClock) -> None:
    engine = _approval_engine(clock)
    d = run(engine, "pyodide_execute", {"timeout": 1000})
    assert not d.allowed and not d.needs_approval
    assert engine.pending_approvals == 0
    with pytest.raises(ValueError):
        engine.commit(d)


def test_commit_of_plain_allowed_decision_is_noop(example: PolicyEngine) -> None:
    d = run(example, "pyodide_get-mount-points")
    assert example.commit(d) is d


def test_engine_policy_is_immutable(example: PolicyEngine) -> None:
    with pytest.raises(TypeError):
        example.policy.tools["new"] = example.policy.tools["pyodide_execute"]  # type: ignore[index]


def test_one_second_window_slides_call_by_call(clock: FakeClock) -> None:
    data = {
        "version": "1",
        "default": "allow",
        "tools": {"t": {"limits": [{"counter": "t", "window": 1, "max": 2}]}},
    }
    engine = PolicyEngine(parse_policy(data, "rt.json"), clock=clock)
    assert run(engine, "t").allowed
    clock.now += 0.3
    assert run(engine, "t").allowed
    d = run(engine, "t")
    assert not d.allowed and d.retry_after == 1
    clock.now += 0.69  # the first call is 0.99 s old: still in the window
    assert not run(engine, "t").allowed
    clock.now += 0.02  # now 1.01 s: it has left, the second (0.71 s old) has not
    assert run(engine, "t").allowed
    assert not run(engine, "t").allowed
    clock.now += 0.3  # the second call left too
    assert run(engine, "t").allowed


def test_idle_session_counters_are_swept(clock: FakeClock) -> None:
    data = {
        "version": "1",
        "default": "allow",
        "tools": {"t": {"limits": [{"counter": "t", "window": 1, "max": 5, "scope": "session"}]}},
    }
    engine = engine_for(data, clock)
    for i in range(999):
        assert run(engine, "t", session=f"s{i}").allowed
    assert engine.limiter.tracked_counters == 999
    clock.advance(2)
    assert run(engine, "t", session="last").allowed  # 1000th admission triggers a sweep
    assert engine.limiter.tracked_counters == 1


def test_a_call_never_served_gets_its_quota_back(clock: FakeClock) -> None:
    """No interpreter could be had: the server refunds the call, so a retry is not charged twice."""
    engine = engine_for(
        {
            "version": "1",
            "default": "allow",
            "tools": {"t": {"limits": [{"counter": "c", "window": "minute", "max": 2}]}},
        },
        clock,
    )
    first = run(engine, "t")
    assert first.allowed and asyncio.run(engine.refund(first))
    assert run(engine, "t").allowed and run(engine, "t").allowed  # both slots are free again
    refused = run(engine, "t")
    assert not refused.allowed and "rate limit 2 per minute" in refused.message
    assert not asyncio.run(engine.refund(refused))  # a refusal holds nothing to give back
    unlimited = run(engine, "other")
    assert unlimited.allowed and asyncio.run(engine.refund(unlimited))  # an empty reservation: nothing counted


def test_an_approved_call_never_served_gets_its_quota_back(clock: FakeClock) -> None:
    engine = _approval_engine(clock)
    approved = engine.commit(run(engine, "pyodide_execute", {"timeout": 1}))
    engine.commit(run(engine, "pyodide_execute", {"timeout": 1}))
    assert not run(engine, "pyodide_execute", {"timeout": 1}).needs_approval  # both slots are used
    assert asyncio.run(engine.refund(approved))
    assert run(engine, "pyodide_execute", {"timeout": 1}).needs_approval
