"""Pending 2026-07-28 approvals in Redis, so the client's retry may reach any replica.

One key per approval, ``<prefix>:approval:<sha256 of its id>`` (the id is a
secret the client holds, sealed; Redis sees its digest), holding the decision
and the call it is bound to, expiring with the approval. A sorted set of the
digests by expiry bounds how many wait at once (``MAX_PENDING``), checked and
added in one script. The quota an unanswered approval holds is given back by
the limit store's own hold expiry (see ``redis_store``), so nothing here sweeps.

The replicas also share the key that seals ``requestState``: one random secret
kept in Redis (created by the first replica that asks, ``SET NX``). Whoever can
write this Redis can already change every limit, so it adds no new trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
from dataclasses import asdict, fields
from typing import Any

from ..policy import Decision
from ..server.approval import MAX_PENDING, Pending
from .redis_store import PREFIX, RedisLimitStore, safe_url

log = logging.getLogger("mcp_pyodide.server")
KEY_NAME = "request-state-key"

# KEYS[1]: the approval's key; KEYS[2]: the index. ARGV: digest, record, ttl (ms), max waiting.
PUT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
# KEYS[1]: the approval's key; KEYS[2]: the index. ARGV: digest. The record, or false (gone, used or expired).
POP_LUA = """
redis.call('ZREM', KEYS[2], ARGV[1])
local value = redis.call('GET', KEYS[1])
if value then redis.call('DEL', KEYS[1]) end
return value
"""


class RedisApprovals:
    """:class:`~mcp_pyodide.server.approval.ApprovalBook` on Redis, shared by every replica."""

    def __init__(self, store: RedisLimitStore, client: Any, prefix: str = PREFIX) -> None:
        self._store = store  # its `run` names the store and fails closed
        self._prefix = prefix
        self._index = f"{prefix}:approvals"
        self._put = client.register_script(PUT_LUA)
        self._pop = client.register_script(POP_LUA)

    def _key(self, digest: str) -> str:
        return f"{self._prefix}:approval:{digest}"

    async def put(self, approval_id: str, pending: Pending, ttl_s: float) -> bool:
        digest = _digest(approval_id)
        record = {"decision": asdict(pending.decision), "binding": pending.binding, "session": pending.session}
        args = [digest, json.dumps(record), max(1, math.ceil(ttl_s * 1000)), MAX_PENDING]
        done = await self._store.run(lambda: self._put(keys=[self._key(digest), self._index], args=args))
        return int(done) == 1

    async def pop(self, approval_id: str) -> Pending | None:
        digest = _digest(approval_id)
        value = await self._store.run(lambda: self._pop(keys=[self._key(digest), self._index], args=[digest]))
        return None if not value else _decode(value)

    async def expired(self) -> list[Pending]:
        return []  # the limit store gives an expired hold's quota back itself


def _digest(approval_id: str) -> str:
    return hashlib.sha256(b"mcp-pyodide approval:" + approval_id.encode()).hexdigest()


def _decode(value: str) -> Pending | None:
    """A record as written by `put`; anything else (another version, a hand edit) is no approval."""
    try:
        data = json.loads(value)
        names = {f.name for f in fields(Decision)}
        decision = Decision(**{k: v for k, v in data["decision"].items() if k in names})
        return Pending(decision, str(data["binding"]), str(data["session"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def shared_request_state_key(client: Any, url: str, prefix: str = PREFIX) -> bytes | None:
    """The replicas' common `requestState` key (made by the first to ask); None when Redis does not answer."""
    name = f"{prefix}:{KEY_NAME}"
    try:
        client.set(name, secrets.token_hex(32), nx=True)
        key = client.get(name)
    except Exception as exc:  # noqa: BLE001 - reported; this replica then seals with a key of its own
        why = "2026-07-28 approvals are answered only by the replica that asked, and limited tools are refused"
        log.error("state store %s does not answer (%s): %s until it does", safe_url(url), exc, why)
        return None
    return key if isinstance(key, bytes) and len(key) >= 32 else None
