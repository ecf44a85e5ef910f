"""Exact sliding-window rate limiting over an injected monotonic clock.

Each (counter, scope key) owns a deque of call timestamps. A call is admitted
only if every applicable limit has room, and then one timestamp is appended per
distinct counter - all under one lock with no ``await`` in between, so
concurrent calls can never overshoot and refused calls never consume quota.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .model import Limit

SWEEP_EVERY = 1000
"""Admitted calls between sweeps of idle session counters."""

CounterKey = tuple[str, str, str]
"""(counter name, scope, session id for session scope or the principal for grant scope)."""


@dataclass(frozen=True)
class Reservation:
    """Timestamps recorded for one admitted call, so they can be given back."""

    entries: tuple[tuple[CounterKey, float], ...]


@dataclass(frozen=True)
class Blocked:
    """The limit that refused the call and when to retry (``None``: never, max is 0)."""

    limit: Limit
    retry_after: float | None

    @property
    def retry_seconds(self) -> int | None:
        """Whole seconds until the oldest counted call leaves the window (rounded up)."""
        if self.retry_after is None:
            return None
        return max(1, math.ceil(self.retry_after))


def counter_key(limit: Limit, session_id: str, principal: str = "") -> CounterKey:
    """Grant-scope limits count per credential (one server-wide count without auth); session-scope per session."""
    return (limit.counter, limit.scope, session_id if limit.scope == "session" else principal)


class SlidingWindowLimiter:
    """Counts calls per counter in exact sliding windows."""

    def __init__(self, limits: Iterable[Limit], clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._calls: dict[CounterKey, deque[float]] = {}
        self._admitted = 0
        # Keep timestamps as long as the longest window that reads this counter.
        self._horizon: dict[str, float] = {}
        for limit in limits:
            self._horizon[limit.counter] = max(self._horizon.get(limit.counter, 0.0), limit.window)

    def _prune(self, key: CounterKey, now: float) -> deque[float]:
        calls = self._calls.get(key)
        if calls is None:
            return deque()
        horizon = self._horizon.get(key[0], 0.0)
        while calls and now - calls[0] >= horizon:
            calls.popleft()
        if not calls:
            del self._calls[key]
        return calls

    def _sweep(self, now: float) -> None:
        """Drop expired counters of sessions that stopped calling, bounding memory."""
        for key in list(self._calls):
            self._prune(key, now)

    @property
    def tracked_counters(self) -> int:
        """How many (counter, scope key) deques are held (for tests and diagnostics)."""
        with self._lock:
            return len(self._calls)

    @staticmethod
    def _blocked(limit: Limit, calls: deque[float], now: float) -> Blocked | None:
        in_window = [t for t in calls if now - t < limit.window]
        if len(in_window) < limit.max:
            return None
        if limit.max == 0:
            return Blocked(limit, None)
        # This many of the oldest counted calls must leave before there is room.
        must_leave = len(in_window) - limit.max
        return Blocked(limit, in_window[must_leave] + limit.window - now)

    def try_acquire(self, limits: Sequence[Limit], session_id: str, principal: str = "") -> Reservation | Blocked:
        """Admit and record the call, or report the limit that blocks it the longest."""
        with self._lock:
            now = self._clock()
            worst: Blocked | None = None
            for limit in limits:
                blocked = self._blocked(limit, self._prune(counter_key(limit, session_id, principal), now), now)
                if blocked is None:
                    continue
                if worst is None or _later(blocked, worst):
                    worst = blocked
            if worst is not None:
                return worst
            keys = list(dict.fromkeys(counter_key(limit, session_id, principal) for limit in limits))
            for key in keys:
                self._calls.setdefault(key, deque()).append(now)
            self._admitted += 1
            if self._admitted % SWEEP_EVERY == 0:
                self._sweep(now)
            return Reservation(tuple((key, now) for key in keys))

    def release(self, reservation: Reservation) -> None:
        """Give back a reservation's quota (e.g. the user declined approval)."""
        with self._lock:
            for key, stamp in reservation.entries:
                calls = self._calls.get(key)
                if calls is None:
                    continue
                try:
                    calls.remove(stamp)
                except ValueError:
                    continue  # already slid out of every window
                if not calls:
                    del self._calls[key]

    def count(self, limit: Limit, session_id: str = "", principal: str = "") -> int:
        """Calls currently inside ``limit``'s window (for diagnostics and tests)."""
        with self._lock:
            now = self._clock()
            calls = self._prune(counter_key(limit, session_id, principal), now)
            return sum(1 for t in calls if now - t < limit.window)


def _later(candidate: Blocked, current: Blocked) -> bool:
    if candidate.retry_after is None:
        return current.retry_after is not None
    if current.retry_after is None:
        return False
    return candidate.retry_after > current.retry_after
