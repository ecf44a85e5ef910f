"""Throughput and p50 of `1+1` through 1 and 3 HTTP replicas sharing one Redis, and RSS per interpreter.

    python benchmarks/replicas.py [--calls N] [--concurrency C] [--replicas 1,3]

Starts its own redis-server and `mcp-pyodide --transport streamable-http --state redis://...` replicas on
free loopback ports (a limited policy, so every call runs the Redis script), opens one MCP session per
replica with the official client, warms each interpreter, then sends N calls from C concurrent workers
spread round-robin over the replicas. Prints one line per replica count. Not a test; see docs/deploy.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import psutil
from scale_support import HttpServerProcess, RedisServer, connect, execute

POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {"pyodide_execute": {"limits": [{"counter": "runs", "window": "minute", "max": 10**9}]}},
}


async def measure(
    replicas: list[HttpServerProcess], calls: int, concurrency: int
) -> tuple[float, float, float, list[float]]:
    async with contextlib.AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(connect(r.url)) for r in replicas]
        for session in sessions:
            assert (await execute(session, "1+1"))["result"] == "2"  # boot + warm
        latencies: list[float] = []
        queue = iter(range(calls))

        async def worker(index: int) -> None:
            session = sessions[index % len(sessions)]
            for _ in queue:
                started = time.perf_counter()
                result = await execute(session, "1+1")
                latencies.append(time.perf_counter() - started)
                assert result["result"] == "2", result

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
        rss = [p.memory_info().rss / 2**20 for r in replicas for p in r.node_processes()]
    p95 = statistics.quantiles(latencies, n=20)[-1] * 1000
    return calls / elapsed, statistics.median(latencies) * 1000, p95, rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--replicas", default="1,3")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mcp-pyodide-bench-replicas-"))
    redis = RedisServer(tmp)
    try:
        for count in (int(n) for n in args.replicas.split(",")):
            replicas = [
                HttpServerProcess(tmp, POLICY, "--state", redis.url, name=f"r{count}-{i}") for i in range(count)
            ]
            try:
                rate, p50, p95, rss = asyncio.run(measure(replicas, args.calls, args.concurrency))
                front = [psutil.Process(r.proc.pid).memory_info().rss / 2**20 for r in replicas]
                print(
                    f"{count} replica(s): {rate:.0f} calls/s, p50 {p50:.2f} ms, p95 {p95:.2f} ms "
                    f"({args.calls} calls, {args.concurrency} workers); interpreter RSS "
                    f"{statistics.median(rss):.0f} MiB, front-end RSS {statistics.median(front):.0f} MiB",
                    flush=True,
                )
            finally:
                for replica in replicas:
                    replica.stop()
    finally:
        redis.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
