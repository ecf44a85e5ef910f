"""One policy round trip for a call: decide, ask the user when the policy says so, then commit or release.

Every caller (the MCP server in both protocol eras, `mcp-pyodide run`) goes
through here, so the rules hold everywhere: the prompt shows the whole call or
the call is refused saying why; a reservation is settled exactly once, also
when the asking is cancelled or times out.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio

from .engine import Decision, PolicyEngine

MAX_PROMPT_CHARS = 20_000
"""Largest approval prompt we ask with (about 400 lines of code). A longer call is refused, never shortened."""

Asker = Callable[[str], Awaitable[tuple[bool, str]]]
"""Shows the prompt to the user; returns (approved, reason when not)."""


class PromptTooLong(ValueError):
    """The call is too long to show the user in full, so it cannot be approved."""


def approval_prompt(decision: Decision, arguments: Mapping[str, Any]) -> str:
    """The text the user approves: the rule's reason and every argument in full.

    `code` is shown verbatim (it is what runs); other values as JSON, so an
    argument cannot pass itself off as part of another.
    """
    parts = []
    for key, value in arguments.items():
        if key == "code" and isinstance(value, str):
            parts.append(f"code:\n{value}")
        else:
            parts.append(f"{key}: {json.dumps(value, ensure_ascii=False, default=str)}")
    prompt = f"Allow the tool call {decision.tool}? ({decision.reason})\n\n" + "\n".join(parts)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise PromptTooLong(
            f"this call needs the user's approval, but at {len(prompt):,} characters it is too long to show in "
            f"full (the limit is {MAX_PROMPT_CHARS:,}), and it is never shown shortened; split the code into "
            "smaller calls or load it from a mounted file"
        )
    return prompt


async def admit(
    engine: PolicyEngine,
    tool: str,
    arguments: Mapping[str, Any],
    session_id: str,
    ask: Asker,
    *,
    timeout_s: float | None = None,
    principal: str = "",
) -> Decision:
    """Decide one call, asking the user through `ask` when the policy requires approval.

    The quota reserved for the call is released on decline, on failure, on
    timeout (`timeout_s`, default the engine's reservation lifetime) and on
    cancellation: nothing leaks.
    """
    decision = await engine.decide(tool, arguments, session_id, principal)
    if not decision.needs_approval:
        return decision
    settled: Decision | None = None
    try:
        try:
            prompt = approval_prompt(decision, arguments)
        except PromptTooLong as exc:
            settled = await settle_approval(engine, decision, False, str(exc))
            return settled
        limit = engine.reservation_ttl_s if timeout_s is None else timeout_s
        approved, why = False, f"the user did not answer within {limit:.0f} s"
        with anyio.move_on_after(limit):
            approved, why = await ask(prompt)
        settled = await settle_approval(engine, decision, approved, why)
        return settled
    finally:
        if settled is None:  # cancelled (or `ask` raised): give the quota back
            with anyio.CancelScope(shield=True):
                await settle_approval(engine, decision, False, "the approval request was cancelled")


async def settle_approval(engine: PolicyEngine, decision: Decision, approved: bool, why: str) -> Decision:
    """`engine.settle` (in-process or shared store), turning a too-late approval into a refusal."""
    try:
        return await engine.settle(decision, approved, why)
    except ValueError as exc:
        return engine.release(decision, str(exc))
