"""The approval round trip, fast: one `admit` for every caller, 2026-07-28 pending approvals.

A fake clock stands in for time; the end-to-end proof is in test_protocol_eras.py.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import anyio
import mcp_types as types
import pytest

from mcp_pyodide.policy import PolicyEngine, parse_policy
from mcp_pyodide.policy.admit import MAX_PROMPT_CHARS, admit, approval_prompt
from mcp_pyodide.server.approval import APPROVAL_KEY, LocalApprovals, PendingApprovals, binding

TOOL = "pyodide_execute"
POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {
        TOOL: {
            "action": "require_approval",
            "reason": "code runs only with your OK",
            "limits": [{"counter": "runs", "window": "minute", "max": 1}],
        }
    },
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(clock: FakeClock) -> PolicyEngine:
    return PolicyEngine(parse_policy(POLICY, "test.json"), clock=clock, reservation_ttl_s=300)


def quota_used(engine: PolicyEngine) -> int:
    limit = engine.policy.rule_for(TOOL).limits[0]  # type: ignore[union-attr]
    return engine.limiter.count(limit)


def answer(approved: bool, why: str = "declined") -> Any:
    async def ask(prompt: str) -> tuple[bool, str]:
        return approved, why

    return ask


def test_the_prompt_shows_the_whole_code_verbatim(engine: PolicyEngine) -> None:
    code = "".join(f"line_{i} = {i}  # {'x' * 20}\n" for i in range(300))  # ~12,000 characters
    seen: list[str] = []

    async def ask(prompt: str) -> tuple[bool, str]:
        seen.append(prompt)
        return True, ""

    decision = asyncio.run(admit(engine, TOOL, {"code": code, "timeout": 30000}, "s", ask))
    assert decision.allowed
    assert code in seen[0] and "timeout: 30000" in seen[0] and "code runs only with your OK" in seen[0]
    assert quota_used(engine) == 1 and engine.pending_approvals == 0


def test_a_call_too_long_to_show_is_refused_saying_why_and_gives_its_quota_back(engine: PolicyEngine) -> None:
    asked: list[str] = []

    async def ask(prompt: str) -> tuple[bool, str]:
        asked.append(prompt)
        return True, ""

    decision = asyncio.run(admit(engine, TOOL, {"code": "x" * MAX_PROMPT_CHARS}, "s", ask))
    assert not decision.allowed and not asked
    assert "too long to show in full" in decision.message and f"{MAX_PROMPT_CHARS:,}" in decision.message
    assert quota_used(engine) == 0 and engine.pending_approvals == 0


def test_decline_releases_the_reservation(engine: PolicyEngine) -> None:
    decision = asyncio.run(admit(engine, TOOL, {"code": "1"}, "s", answer(False, "the user said no")))
    assert not decision.allowed and "the user said no" in decision.message
    assert quota_used(engine) == 0 and engine.pending_approvals == 0
    assert asyncio.run(admit(engine, TOOL, {"code": "1"}, "s", answer(True))).allowed  # the slot is free


def test_a_cancelled_approval_releases_the_reservation(engine: PolicyEngine) -> None:
    async def scenario() -> None:
        asking = anyio.Event()

        async def ask(prompt: str) -> tuple[bool, str]:
            asking.set()
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async with anyio.create_task_group() as group:
            group.start_soon(admit, engine, TOOL, {"code": "1"}, "s", ask)
            await asking.wait()
            assert engine.pending_approvals == 1 and quota_used(engine) == 1  # held while the user is asked
            group.cancel_scope.cancel()  # the client gives up

    asyncio.run(scenario())
    assert engine.pending_approvals == 0 and quota_used(engine) == 0


def test_no_answer_in_time_is_a_refusal_that_releases(engine: PolicyEngine) -> None:
    async def ask(prompt: str) -> tuple[bool, str]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    decision = asyncio.run(admit(engine, TOOL, {"code": "1"}, "s", ask, timeout_s=0))
    assert not decision.allowed and "did not answer within" in decision.message
    assert engine.pending_approvals == 0 and quota_used(engine) == 0


def test_an_unsettled_reservation_expires_by_the_clock(engine: PolicyEngine, clock: FakeClock) -> None:
    decision = engine.decide_now(TOOL, {"code": "1"}, "s")
    assert decision.needs_approval and engine.pending_approvals == 1
    clock.now += 299
    assert engine.pending_approvals == 1
    clock.now += 2
    assert engine.pending_approvals == 0
    late = engine.decide_now(TOOL, {"code": "1"}, "s")  # the quota came back with the expiry
    assert late.needs_approval


def _ctx(elicitation: bool = True) -> Any:
    caps = types.ClientCapabilities(elicitation=types.ElicitationCapability() if elicitation else None)
    return SimpleNamespace(session=SimpleNamespace(client_capabilities=caps))


def _accept() -> dict[str, Any]:
    return {APPROVAL_KEY: types.ElicitResult(action="accept")}


def test_input_required_approval_is_single_use_and_bound_to_the_call(engine: PolicyEngine) -> None:
    book = LocalApprovals(engine.clock)
    approvals = PendingApprovals(engine, book)
    args = {"code": "21 * 2", "timeout": 30000}
    bound = binding(TOOL, args, "")
    asked = asyncio.run(approvals.ask(_ctx(), engine.decide_now(TOOL, args, "s"), args, bound, "sid"))
    assert isinstance(asked, types.InputRequiredResult) and asked.request_state
    request = asked.input_requests[APPROVAL_KEY]  # type: ignore[index]
    assert isinstance(request, types.ElicitRequest) and "21 * 2" in request.params.message
    assert quota_used(engine) == 1  # held across the round trip

    other = binding(TOOL, {"code": "import os", "timeout": 30000}, "")
    refused, _ = asyncio.run(approvals.answer(asked.request_state, other, _accept()))
    assert not refused.allowed and "not the call the user was asked about" in refused.message
    assert quota_used(engine) == 0 and len(book) == 0  # a mismatch consumes and releases

    asked = asyncio.run(approvals.ask(_ctx(), engine.decide_now(TOOL, args, "s"), args, bound, "sid"))
    assert isinstance(asked, types.InputRequiredResult) and asked.request_state
    decision, session = asyncio.run(approvals.answer(asked.request_state, bound, _accept()))
    assert decision.allowed and session == "sid"
    replay, _ = asyncio.run(approvals.answer(asked.request_state, bound, _accept()))
    assert not replay.allowed and "already used" in replay.message


def test_input_required_approval_decline_and_expiry_release(engine: PolicyEngine, clock: FakeClock) -> None:
    book = LocalApprovals(engine.clock)
    approvals = PendingApprovals(engine, book)
    args = {"code": "1"}
    bound = binding(TOOL, args, "")
    asked = asyncio.run(approvals.ask(_ctx(), engine.decide_now(TOOL, args, "s"), args, bound, "sid"))
    assert isinstance(asked, types.InputRequiredResult) and asked.request_state
    decision, _ = asyncio.run(
        approvals.answer(asked.request_state, bound, {APPROVAL_KEY: types.ElicitResult(action="decline")})
    )
    assert not decision.allowed and "decline" in decision.message and quota_used(engine) == 0

    asked = asyncio.run(approvals.ask(_ctx(), engine.decide_now(TOOL, args, "s"), args, bound, "sid"))
    assert isinstance(asked, types.InputRequiredResult) and asked.request_state
    clock.now += 301  # the client never comes back
    assert quota_used(engine) == 0 and engine.pending_approvals == 0  # the quota is back at the expiry
    late, _ = asyncio.run(approvals.answer(asked.request_state, bound, _accept()))
    assert not late.allowed and "expired" in late.message and len(book) == 0


def test_input_required_needs_an_elicitation_capable_client(engine: PolicyEngine) -> None:
    book = LocalApprovals(engine.clock)
    approvals = PendingApprovals(engine, book)
    refused = asyncio.run(
        approvals.ask(_ctx(elicitation=False), engine.decide_now(TOOL, {"code": "1"}, "s"), {}, "b", "sid")
    )
    assert not isinstance(refused, types.InputRequiredResult)
    assert "no elicitation support" in refused.message and quota_used(engine) == 0


def test_approval_prompt_shows_other_arguments_as_json(engine: PolicyEngine) -> None:
    decision = engine.decide_now(TOOL, {"code": "1"}, "s")
    prompt = approval_prompt(decision, {"code": "1", "packages": "numpy\ncode: evil"})
    assert 'packages: "numpy\\ncode: evil"' in prompt
    engine.release(decision)
