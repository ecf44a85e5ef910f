"""Where rate-limit counts and pending approvals live when they must be shared between replicas.

The default is no store: :class:`~.ratelimit.SlidingWindowLimiter` in this
process. A :class:`LimitStore` (Redis, see ``mcp_pyodide.state``) makes N
replicas enforce one policy exactly. Reservations are opaque to the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..errors import MCPPyodideError
from .model import Limit
from .ratelimit import Blocked


class StoreUnavailable(MCPPyodideError):
    """The shared store did not answer; the message names it. Limited calls are refused (fail closed)."""


class LimitStore(Protocol):
    async def try_acquire(self, limits: Sequence[Limit], session_id: str, principal: str) -> object | Blocked:
        """Atomically check every limit and, if all have room, record the call; returns a reservation."""
        ...

    async def release(self, reservation: object) -> None:
        """Give a reservation's quota back (approval declined)."""
        ...

    async def hold(self, reservation: object, ttl_s: float) -> str:
        """Keep a reservation while the user is asked; returns an unguessable ticket. After ``ttl_s`` the
        ticket expires and the reservation's quota is given back by the store itself."""
        ...

    async def take(self, ticket: str) -> object | None:
        """Remove and return a held reservation (None: unknown, expired or already taken)."""
        ...
