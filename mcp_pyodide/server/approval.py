"""Asking the user to approve a call, in whichever way the client's protocol era allows.

Handshake era (2025-11-25 and earlier): the server pushes `elicitation/create`
while the call waits (`policy.admit`). 2026-07-28: the call returns an
`input_required` result carrying the same prompt, and the client retries the
call with the user's answer. Between the two requests the quota reservation
is held; the pending approval is

- bound to the exact call: a digest of the canonical JSON of tool name,
  arguments and session, so a retry cannot run other code than was shown;
- single use: the first retry consumes it, a replay finds nothing;
- bounded in time and number: it expires with the engine's reservation
  (`RESERVATION_TTL_S`, `--approval-timeout`), and at most `MAX_PENDING` wait at once;
- kept in this process, or with `--state` in Redis (`ApprovalBook`), so the
  retry may reach any replica.

The `requestState` the client echoes is sealed by the SDK's
`RequestStateBoundary` (AES-GCM, bound to tool and arguments, expiring; the key
is this process's own, or with `--state` one shared through Redis); it carries
only the pending approval's random id.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.request_state import compact_json

from ..policy import Decision, PolicyEngine
from ..policy.admit import PromptTooLong, approval_prompt, settle_approval

APPROVAL_KEY = "approval"
"""The key of our one input request in `input_required` results."""
MAX_PENDING = 256
"""2026-07-28 approvals that may wait for their retry at once; more are refused, never queued."""
APPROVAL_SCHEMA: types.ElicitRequestedSchema = {"type": "object", "properties": {}}


def binding(tool: str, arguments: Mapping[str, Any], session_key: str) -> str:
    """What an approval is for: the tool, its exact arguments as sent, and the session."""
    canonical = compact_json({"tool": tool, "arguments": dict(arguments), "session": session_key}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def approval_link(approval_id: str) -> str:
    """What the audit log records of an approval (its id is a secret): the same on the asked and answer lines."""
    return hashlib.sha256(b"mcp-pyodide approval audit:" + approval_id.encode()).hexdigest()[:16]


def no_elicitation(ctx: ServerRequestContext[Any]) -> str | None:
    """The refusal when the client cannot show an approval form; None when it can."""
    caps = ctx.session.client_capabilities
    if caps is None or caps.elicitation is None:
        return "this call needs the user's approval, and the client cannot ask (no elicitation support)"
    return None


async def ask_by_elicitation(ctx: ServerRequestContext[Any], prompt: str) -> tuple[bool, str]:
    """Handshake era: push `elicitation/create` and wait for the user's answer."""
    refusal = no_elicitation(ctx)
    if refusal is not None:
        return False, refusal
    try:
        answer = await ctx.session.elicit_form(prompt, APPROVAL_SCHEMA, related_request_id=ctx.request_id)
    except Exception as exc:  # noqa: BLE001 - any failure to ask is a refusal, never a crash
        return False, f"asking the user for approval failed ({exc})"
    return answer_outcome(answer.action)


def answer_outcome(action: str) -> tuple[bool, str]:
    if action == "accept":
        return True, ""
    return False, f"the user answered {action!r} to the approval request"


@dataclass
class Pending:
    """An approval waiting for the client's retry."""

    decision: Decision
    binding: str
    session: str  # the session id the call runs in (a handle may have been minted for it)


class ApprovalBook(Protocol):
    """Where pending approvals wait: this process (default) or Redis (``--state``), so any replica answers."""

    async def put(self, approval_id: str, pending: Pending, ttl_s: float) -> bool:
        """Keep ``pending`` for ``ttl_s`` seconds; False when MAX_PENDING already wait."""
        ...

    async def pop(self, approval_id: str) -> Pending | None:
        """Remove and return one (None: unknown, expired or already used)."""
        ...

    async def expired(self) -> list[Pending]:
        """Approvals this book dropped unanswered whose quota the engine must still give back."""
        ...


class LocalApprovals:
    """Pending approvals in this process, timed by the injected clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[Pending, float]] = {}

    async def put(self, approval_id: str, pending: Pending, ttl_s: float) -> bool:
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                return False
            self._pending[approval_id] = (pending, self._clock() + ttl_s)
            return True

    async def pop(self, approval_id: str) -> Pending | None:
        with self._lock:
            held = self._pending.pop(approval_id, None)
        return None if held is None else held[0]  # one that expired just now: the engine's own expiry refuses it

    async def expired(self) -> list[Pending]:
        now = self._clock()
        with self._lock:
            gone = [key for key, (_, until) in self._pending.items() if now >= until]
            return [self._pending.pop(key)[0] for key in gone]

    def __len__(self) -> int:
        return len(self._pending)


class PendingApprovals:
    """2026-07-28 approvals waiting for the client's retry."""

    def __init__(self, engine: PolicyEngine, book: ApprovalBook) -> None:
        self.engine = engine
        self.book = book

    async def _expire(self) -> None:
        for pending in await self.book.expired():
            await settle_approval(self.engine, pending.decision, False, "the approval expired")

    async def ask(
        self,
        ctx: ServerRequestContext[Any],
        decision: Decision,
        arguments: Mapping[str, Any],
        bound_to: str,
        session: str,
    ) -> types.InputRequiredResult | Decision:
        """Hold `decision`'s reservation and return the question; a refusal when it cannot be asked."""
        refusal = no_elicitation(ctx)
        if refusal is not None:
            return await settle_approval(self.engine, decision, False, refusal)
        try:
            prompt = approval_prompt(decision, arguments)
        except PromptTooLong as exc:
            return await settle_approval(self.engine, decision, False, str(exc))
        await self._expire()
        approval_id = secrets.token_urlsafe(18)
        if not await self.book.put(approval_id, Pending(decision, bound_to, session), self.engine.reservation_ttl_s):
            why = f"{MAX_PENDING} approvals are already waiting for an answer; try again later"
            return await settle_approval(self.engine, decision, False, why)
        request = types.ElicitRequest(
            params=types.ElicitRequestFormParams(message=prompt, requested_schema=APPROVAL_SCHEMA)
        )
        return types.InputRequiredResult(input_requests={APPROVAL_KEY: request}, request_state=approval_id)

    async def answer(
        self, approval_id: str, bound_to: str, responses: Mapping[str, Any] | None
    ) -> tuple[Decision, str]:
        """Consume a pending approval with the client's answer: (the settled decision, its session id).

        Unknown, expired, already used or mismatched approvals come back refused (session "").
        """
        await self._expire()
        pending = await self.book.pop(approval_id)
        if pending is None:
            why = "this approval has expired or was already used; call the tool again to be asked again"
            return Decision.refused("approval", why), ""
        if pending.binding != bound_to:
            why = "the retry is not the call the user was asked about"
            return await settle_approval(self.engine, pending.decision, False, why), ""
        answer = (responses or {}).get(APPROVAL_KEY)
        if not isinstance(answer, types.ElicitResult):
            why = "the client sent no answer to the approval request"
            return await settle_approval(self.engine, pending.decision, False, why), ""
        settled = await settle_approval(self.engine, pending.decision, *answer_outcome(answer.action))
        return settled, pending.session
