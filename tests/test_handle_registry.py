"""The one session-handle registry interface, the same cases against both implementations (memory, real Redis).

A handle answers only the principal that minted it; another principal's,
a guessed and an expired handle look alike (None). The Redis cases run
against a `redis-server` of this module's own on a free port.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from scale_support import RedisServer

from mcp_pyodide.policy.store import StoreUnavailable
from mcp_pyodide.server.handles import HandleRegistry, InMemoryHandles
from mcp_pyodide.state.redis_handles import RedisHandles, handle_key
from mcp_pyodide.state.redis_store import RedisLimitStore
from mcp_pyodide.state.redis_store import connect as redis_connect

EXPIRY_WAIT_S = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    make: Callable[[float], HandleRegistry]  # idle timeout (s) -> a registry; two calls: two "replicas"
    let_expire: Callable[[], None]  # time passes beyond the idle timeout of a registry made with `short`
    short: float  # an idle timeout `let_expire` outlasts


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-handles"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        clock = FakeClock()
        shared: dict[float, InMemoryHandles] = {}  # one process: both "replicas" are the same registry

        def memory(idle: float) -> HandleRegistry:
            return shared.setdefault(idle, InMemoryHandles(idle, clock=clock))

        def advance() -> None:
            clock.now += 61

        return Backend(memory, advance, 60)
    server: RedisServer = request.getfixturevalue("redis_server")

    def on_redis(idle: float) -> HandleRegistry:
        client = redis_connect(server.url)
        return RedisHandles(RedisLimitStore(client, server.url, ()), client, idle)

    def wait() -> None:  # Redis keeps the time: wait (bounded) until its TTL has ended every short handle
        deadline = time.monotonic() + EXPIRY_WAIT_S
        probe = redis.Redis.from_url(server.url)
        while probe.keys("mcp-pyodide:handle:*") and time.monotonic() < deadline:
            time.sleep(0.05)
        probe.close()

    redis.Redis.from_url(server.url).flushall()
    return Backend(on_redis, wait, 0.3)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_a_handle_answers_only_the_principal_that_made_it(backend: Backend) -> None:
    async def scenario() -> None:
        a, b = backend.make(60), backend.make(60)
        handle = await a.mint("alice")
        assert len(handle.id) >= 32 and handle.label not in handle.id and handle.folder not in handle.id
        found = await b.lookup(handle.id, "alice")  # through the other replica too
        assert found is not None and (found.label, found.folder, found.principal) == (
            handle.label,
            handle.folder,
            "alice",
        )
        assert await b.lookup(handle.id, "bob") is None  # another principal's: unknown
        assert await b.lookup(handle.id, "") is None  # nor the anonymous principal's
        assert await b.lookup(handle.id[:-1] + ("a" if handle.id[-1] != "a" else "b"), "alice") is None
        assert await a.lookup("x" * 500, "alice") is None
        assert await a.lookup(handle.id, "alice") is not None  # a refused lookup left the handle alone

    run(scenario())


def test_end_forgets_a_handle_everywhere(backend: Backend) -> None:
    async def scenario() -> None:
        a, b = backend.make(60), backend.make(60)
        handle = await a.mint("alice")
        await b.end(handle.id)
        assert await a.lookup(handle.id, "alice") is None

    run(scenario())


def test_an_idle_handle_expires_and_use_or_touch_restarts_its_idle_time(backend: Backend) -> None:
    async def scenario() -> None:
        registry = backend.make(backend.short)
        idle = await registry.mint("alice")
        backend.let_expire()
        assert await registry.lookup(idle.id, "alice") is None
        assert idle.id in await registry.sweep() or await registry.lookup(idle.id, "alice") is None
        long = backend.make(60)
        kept = await long.mint("alice")
        await long.touch(kept.id)
        assert (await long.lookup(kept.id, "alice")) is not None
        await long.touch("never-minted")  # touching an unknown handle creates nothing
        assert await long.lookup("never-minted", "alice") is None

    run(scenario())


def test_the_memory_registry_is_bounded_least_recently_used_first() -> None:
    async def scenario() -> None:
        handles = InMemoryHandles(60, clock=FakeClock(), max_handles=3)
        kept = [await handles.mint("alice") for _ in range(4)]
        assert await handles.lookup(kept[0].id, "alice") is None
        assert all([await handles.lookup(h.id, "alice") for h in kept[1:]])
        assert len({h.id for h in kept}) == 4 and all(h.here for h in kept)

    run(scenario())


def test_redis_keeps_principal_created_and_last_used_with_the_idle_timeout_as_ttl(redis_server: RedisServer) -> None:
    client = redis_connect(redis_server.url)
    store = RedisLimitStore(client, redis_server.url, ())
    probe = redis.Redis.from_url(redis_server.url, decode_responses=True)

    async def scenario() -> None:
        mine, other = RedisHandles(store, client, 60), RedisHandles(store, redis_connect(redis_server.url), 60)
        handle = await mine.mint("alice")
        key = handle_key(handle.id)
        assert handle.id not in str(probe.keys("*"))  # Redis holds a digest of the handle, not the secret
        record = probe.hgetall(key)
        assert record["principal"] == "alice" and float(record["created"]) <= time.time()
        assert float(record["last_used"]) >= float(record["created"])
        assert 55_000 < probe.pttl(key) <= 60_000
        probe.pexpire(key, 10_000)
        seen = await other.lookup(handle.id, "alice")
        assert seen is not None and not seen.here and probe.pttl(key) > 55_000  # use restarts the TTL
        assert (await mine.lookup(handle.id, "alice")).here  # type: ignore[union-attr]
        probe.delete(key)
        assert await mine.sweep() == [handle.id]

    asyncio.run(scenario())


def test_redis_down_means_no_handle_rather_than_a_local_one(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    client = redis_connect(server.url)
    registry = RedisHandles(RedisLimitStore(client, server.url, ()), client, 60)
    server.stop()
    with pytest.raises(StoreUnavailable, match="is unreachable"):
        asyncio.run(registry.mint("alice"))
    with pytest.raises(StoreUnavailable, match="is unreachable"):
        asyncio.run(registry.lookup("a" * 32, "alice"))
