"""The decision procedure: one :class:`Decision` per tool call.

Order of checks (first refusal wins): hidden, tool ``action: deny``, default
deny for unlisted tools, ``deny_if``, ``require``, rate limits, then
``require_approval``. Quota is consumed only by calls that pass every check, and given
back when the user declines or the call is never served (see :meth:`PolicyEngine.refund`).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .conditions import violation
from .model import Limit, Policy, ToolRule
from .ratelimit import Blocked, Reservation, SlidingWindowLimiter
from .store import LimitStore, StoreUnavailable

DENIED_PREFIX = "[POLICY DENIED]"
APPROVAL_PREFIX = "[POLICY APPROVAL REQUIRED]"
RESERVATION_TTL_S = 300.0
"""Seconds a quota reservation waits for the user's answer before it is given back."""


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one call.

    ``message`` is the text for the model: the ``[POLICY DENIED] ...`` line for
    refusals, an approval prompt for ``needs_approval``, empty when allowed.
    ``ticket`` identifies a pending approval reservation; treat it as opaque.
    """

    allowed: bool
    needs_approval: bool
    rule: str
    reason: str
    message: str
    tool: str = ""
    session_id: str = ""
    retry_after: int | None = None
    ticket: int | str | None = field(default=None, repr=False, compare=False)
    principal: str = ""
    # The quota an admitted call holds, so `refund` can give it back if the call is never served.
    reservation: object | None = field(default=None, repr=False, compare=False)

    @classmethod
    def refused(
        cls,
        rule: str,
        reason: str,
        *,
        tool: str = "",
        session_id: str = "",
        message: str | None = None,
        retry_after: int | None = None,
        principal: str = "",
    ) -> Decision:
        """A refusal: by the policy, or before it was asked (a handle, the shared store, an approval)."""
        if message is None:
            message = f"{DENIED_PREFIX} {tool}: {reason}" if tool else f"{DENIED_PREFIX} {reason}"
        return cls(False, False, rule, reason, message, tool, session_id, retry_after, principal=principal)

    @property
    def kind(self) -> Literal["allow", "deny", "needs_approval"]:
        """Single-word form used in the audit log."""
        if self.needs_approval:
            return "needs_approval"
        return "allow" if self.allowed else "deny"


def _approved(decision: Decision, reservation: object) -> Decision:
    """A decision the user approved; it keeps the quota reserved for it (see :meth:`PolicyEngine.refund`)."""
    return replace(
        decision, allowed=True, needs_approval=False, reason="approved by user", message="", reservation=reservation
    )


def _rate_reason(blocked: Blocked) -> str:
    limit = blocked.limit
    text = f"rate limit {limit.max} {limit.per_text} reached (counter {limit.counter})"
    seconds = blocked.retry_seconds
    if seconds is None:
        return f"{text}; calls are not allowed"
    return f"{text}; retry in {seconds} s"


class PolicyEngine:
    """Applies one immutable :class:`Policy` with its own rate-limit state.

    Approval flow (reserve / release): when ``decide`` returns
    ``needs_approval``, the quota for that call is already *reserved* so that
    concurrent calls cannot take the last slot while the user is asked. The
    caller must then call exactly one of :meth:`commit` (user approved - the
    reservation becomes a counted call) or :meth:`release` (declined, failed or
    cancelled - the quota is given back); :func:`~mcp_pyodide.policy.admit.admit`
    does this cancel-safely. A reservation nobody settles (a client that never
    comes back with its answer) expires ``reservation_ttl_s`` seconds after it
    was made, by the injected clock, and its quota is given back then.
    """

    def __init__(
        self,
        policy: Policy,
        clock: Callable[[], float] = time.monotonic,
        store: LimitStore | None = None,
        *,
        reservation_ttl_s: float = RESERVATION_TTL_S,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self.reservation_ttl_s = reservation_ttl_s
        self._limiter = SlidingWindowLimiter(policy.all_limits(), clock)
        self._store = store  # None: counts live in this process (the limiter above)
        self._lock = threading.Lock()
        self._tickets = itertools.count(1)
        self._pending: dict[int, tuple[Reservation, float]] = {}  # ticket -> (quota held, expiry time)

    @property
    def policy(self) -> Policy:
        """The policy this engine enforces (immutable)."""
        return self._policy

    @property
    def clock(self) -> Callable[[], float]:
        """The monotonic clock limits and reservations are timed by (injected in tests)."""
        return self._clock

    @property
    def limiter(self) -> SlidingWindowLimiter:
        """The rate-limit state (exposed for diagnostics)."""
        return self._limiter

    @property
    def pending_approvals(self) -> int:
        """Reservations waiting for :meth:`commit` or :meth:`release`."""
        self.expire_reservations()
        with self._lock:
            return len(self._pending)

    def expire_reservations(self) -> int:
        """Give back the quota of every reservation past its expiry; returns how many."""
        now = self._clock()
        with self._lock:
            expired = [ticket for ticket, (_, until) in self._pending.items() if now >= until]
            held = [self._pending.pop(ticket)[0] for ticket in expired]
        for reservation in held:
            self._limiter.release(reservation)
        return len(held)

    def is_visible(self, tool: str) -> bool:
        """False for hidden tools: leave them out of tools/list."""
        return not self._policy.is_hidden(tool)

    def visible_tools(self, tools: Iterable[str]) -> list[str]:
        """Filter tool names for tools/list, keeping order."""
        return [name for name in tools if self.is_visible(name)]

    async def decide(self, tool: str, arguments: Mapping[str, Any], session_id: str, principal: str = "") -> Decision:
        """Decide one call and record its quota if admitted.

        With the in-process limiter this never awaits: check and record happen
        in one step, so concurrent calls cannot overshoot a limit. With a shared
        store (Redis) the store does the same in one atomic script. ``arguments``
        should already have defaults filled in (see docs: a ``require`` on a
        missing argument fails).
        """
        if self._store is None:
            return self.decide_now(tool, arguments, session_id, principal)
        checked = self._check(tool, arguments, session_id, principal)
        if isinstance(checked, Decision):
            return checked
        rule, limits = checked
        approval = rule is not None and rule.action == "require_approval"
        if not limits and not approval:
            return self._admit(tool, rule, session_id, principal, None)
        try:
            outcome = await self._store.try_acquire(limits, session_id, principal)
            if isinstance(outcome, Blocked):
                return self._blocked(tool, session_id, principal, outcome)
            if approval:  # held in the store (even with no limits), so any replica can settle it
                ticket = await self._store.hold(outcome, self.reservation_ttl_s)
                return self._admit(tool, rule, session_id, principal, ticket)
        except StoreUnavailable as exc:
            return Decision.refused(
                "state",
                f"{exc}; limited tools are refused until it answers",
                tool=tool,
                session_id=session_id,
                principal=principal,
            )
        return self._admit(tool, rule, session_id, principal, None, outcome)

    def decide_now(self, tool: str, arguments: Mapping[str, Any], session_id: str, principal: str = "") -> Decision:
        """Synchronous form of :meth:`decide` for the in-process limiter (same semantics)."""
        if self._store is not None:
            raise RuntimeError("a policy engine with a shared store decides through `decide`")
        self.expire_reservations()
        checked = self._check(tool, arguments, session_id, principal)
        if isinstance(checked, Decision):
            return checked
        rule, limits = checked
        outcome = self._limiter.try_acquire(limits, session_id, principal)
        if isinstance(outcome, Blocked):
            return self._blocked(tool, session_id, principal, outcome)
        if rule is not None and rule.action == "require_approval":
            with self._lock:
                ticket = next(self._tickets)
                self._pending[ticket] = (outcome, self._clock() + self.reservation_ttl_s)
            return self._admit(tool, rule, session_id, principal, ticket)
        return self._admit(tool, rule, session_id, principal, None, outcome)

    def _check(
        self, tool: str, arguments: Mapping[str, Any], session_id: str, principal: str
    ) -> Decision | tuple[ToolRule | None, tuple[Limit, ...]]:
        """Every check before the rate limits: a refusal, or the rule and the limits that apply."""
        policy = self._policy
        if policy.is_hidden(tool):
            return Decision.refused(
                "hide", "tool is hidden by policy", tool=tool, session_id=session_id, principal=principal
            )
        rule = policy.rule_for(tool)
        if rule is not None and rule.action == "deny":
            reason = rule.reason or "not allowed by policy"
            return Decision.refused(
                f"{rule.place}.action", f"{reason} (action deny)", tool=tool, session_id=session_id, principal=principal
            )
        if rule is None and policy.default == "deny":
            return Decision.refused(
                "default", "not allowed by policy (default deny)", tool=tool, session_id=session_id, principal=principal
            )
        if rule is not None:
            for condition in (*rule.deny_if, *rule.require):
                problem = violation(condition, arguments)
                if problem is not None:
                    return Decision.refused(
                        condition.place, problem, tool=tool, session_id=session_id, principal=principal
                    )
        return rule, tuple(policy.all_tools_limits) + (tuple(rule.limits) if rule is not None else ())

    @staticmethod
    def _blocked(tool: str, session_id: str, principal: str, outcome: Blocked) -> Decision:
        return Decision.refused(
            outcome.limit.place,
            _rate_reason(outcome),
            tool=tool,
            session_id=session_id,
            retry_after=outcome.retry_seconds,
            principal=principal,
        )

    @staticmethod
    def _admit(
        tool: str,
        rule: ToolRule | None,
        session_id: str,
        principal: str,
        ticket: int | str | None,
        reservation: object | None = None,
    ) -> Decision:
        """Allowed (holding ``reservation``), or awaiting approval (holding ``ticket``)."""
        if rule is not None and rule.action == "require_approval":
            reason = rule.reason or "this tool needs the user's approval"
            return Decision(
                allowed=False,
                needs_approval=True,
                rule=f"{rule.place}.action",
                reason=reason,
                message=f"{APPROVAL_PREFIX} {tool}: {reason}",
                tool=tool,
                session_id=session_id,
                ticket=ticket,
                principal=principal,
            )
        place, why = (
            ("default", "allowed by policy (default allow)") if rule is None else (rule.place, "allowed by policy")
        )
        return Decision(True, False, place, why, "", tool, session_id, principal=principal, reservation=reservation)

    async def settle(self, decision: Decision, approved: bool, reason: str = "approval declined by user") -> Decision:
        """Resolve a pending approval either way (works with the in-process limiter and a shared store)."""
        if self._store is None or not isinstance(decision.ticket, str):
            return self.commit(decision) if approved else self.release(decision, reason)
        try:
            reservation = await self._store.take(decision.ticket)
            if approved:
                if reservation is None:
                    raise ValueError(f"approval for {decision.tool} is no longer pending")
                return _approved(decision, reservation)
            if reservation is not None:
                await self._store.release(reservation)
        except StoreUnavailable as exc:
            return Decision.refused(
                "state", str(exc), tool=decision.tool, session_id=decision.session_id, principal=decision.principal
            )
        return Decision.refused(
            decision.rule, reason, tool=decision.tool, session_id=decision.session_id, principal=decision.principal
        )

    def commit(self, decision: Decision) -> Decision:
        """The user approved: keep the reserved quota and return an allowed decision.

        An already-allowed decision is returned unchanged. Raises ``ValueError``
        for a refusal or a reservation that was already released or committed.
        """
        if decision.allowed and not decision.needs_approval:
            return decision
        if not decision.needs_approval or not isinstance(decision.ticket, int):
            raise ValueError(f"cannot commit a refused call to {decision.tool}")
        self.expire_reservations()
        with self._lock:
            held = self._pending.pop(decision.ticket, None)
        if held is None:
            raise ValueError(f"approval for {decision.tool} is no longer pending (answered too late, or twice)")
        return _approved(decision, held[0])

    async def refund(self, decision: Decision) -> bool:
        """Give back the quota of an admitted call that was never served (no interpreter could be had).

        True when quota was given back; False when the call held none or the shared store did not
        answer (then the window simply ends as usual). Once per decision: the caller owns it.
        """
        if not decision.allowed or decision.reservation is None:
            return False
        if self._store is None:
            assert isinstance(decision.reservation, Reservation)
            self._limiter.release(decision.reservation)
            return True
        try:
            await self._store.release(decision.reservation)
        except StoreUnavailable:
            return False
        return True

    def release(self, decision: Decision, reason: str = "approval declined by user") -> Decision:
        """Give back a pending reservation and return the refusal to send to the model.

        Safe to call more than once (later calls change no counts); for a
        decision that was not awaiting approval nothing is released.
        """
        if isinstance(decision.ticket, int):
            with self._lock:
                held = self._pending.pop(decision.ticket, None)
            if held is not None:
                self._limiter.release(held[0])
        return Decision.refused(
            decision.rule, reason, tool=decision.tool, session_id=decision.session_id, principal=decision.principal
        )
