"""FetchBroker on its own (no Node): bounded concurrency and bytes, cancellation, a free event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from slow_http import SlowServer

from mcp_pyodide import netbroker
from mcp_pyodide.netbroker import FetchBroker, NetworkDenied, NetworkPolicy


@pytest.fixture
def slow() -> Iterator[SlowServer]:
    server = SlowServer(delay_s=1.5)
    yield server
    server.close()


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    """How late a 10 ms sleep wakes up: the event loop's responsiveness."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - started - 0.01)


def test_two_hundred_requests_are_bounded_and_the_loop_stays_free(slow: SlowServer) -> None:
    async def attack() -> tuple[list[object], list[float]]:
        broker = FetchBroker(NetworkPolicy((f"127.0.0.1:{slow.port}",)))
        lags: list[float] = []
        stop = asyncio.Event()
        ticker = asyncio.create_task(_ticker(lags, stop))
        outcomes = await asyncio.gather(
            *(broker.fetch({"url": f"{slow.url}/{i}"}) for i in range(200)), return_exceptions=True
        )
        stop.set()
        await ticker
        return outcomes, lags

    outcomes, lags = asyncio.run(attack())
    answered = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, NetworkDenied)]
    assert slow.peak <= netbroker.MAX_CONCURRENT, f"{slow.peak} upstream connections at once"
    assert len(answered) == netbroker.MAX_CONCURRENT + netbroker.MAX_QUEUED
    assert all(o["status"] == 200 for o in answered)  # type: ignore[index]
    assert len(refused) == 200 - len(answered) and "too many network requests" in str(refused[0])
    assert max(lags) < 0.05, f"the event loop stalled for {max(lags) * 1000:.0f} ms"


def test_cancel_all_ends_the_requests_upstream_and_answers_the_sandbox(slow: SlowServer) -> None:
    async def attack() -> list[object]:
        broker = FetchBroker(NetworkPolicy((f"127.0.0.1:{slow.port}",)))
        tasks = [asyncio.create_task(broker.fetch({"url": f"{slow.url}/{i}"})) for i in range(20)]
        deadline = time.monotonic() + 5
        while slow.active < netbroker.MAX_CONCURRENT and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        broker.cancel_all()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert broker.active == 0
        return outcomes

    outcomes = asyncio.run(attack())
    assert all(isinstance(o, NetworkDenied) and "cancelled" in str(o) for o in outcomes), outcomes
    assert slow.wait_idle(2.0), f"{slow.active} upstream connections outlived cancel_all"


def test_request_and_response_bodies_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = FetchBroker(NetworkPolicy(("127.0.0.1",)))
    huge = "A" * ((netbroker.MAX_REQUEST_BYTES // 3 + 2) * 4)
    with pytest.raises(NetworkDenied, match="request body is larger"):
        asyncio.run(broker.fetch({"url": "http://127.0.0.1:9/", "method": "POST", "body": huge}))

    class Response:
        async def aiter_bytes(self) -> object:
            for _ in range(100):
                yield b"x" * (1024 * 1024)

    monkeypatch.setattr(netbroker, "MAX_RESPONSE_BYTES", 4 * 1024 * 1024)
    with pytest.raises(NetworkDenied, match="larger than"):
        asyncio.run(broker._read_body(Response(), "http://example.test/"))
    assert broker._in_flight_bytes == 0


def test_one_client_serves_every_request() -> None:
    async def clients() -> tuple[object, object]:
        return await netbroker.shared_client(), await netbroker.shared_client()

    first, second = asyncio.run(clients())
    assert first is second
