"""Throughput and p50 of `1+1` through 1 and 3 HTTP replicas sharing one Redis, and RSS per interpreter.

    python benchmarks/replicas.py [--calls N] [--concurrency C] [--replicas 1,3] [--backend local|ray]

Starts its own redis-server and `mcp-pyodide --transport streamable-http --state redis://...` replicas on
free loopback ports (a limited policy, so every call runs the Redis script), opens one MCP session per
replica with the official client, warms each interpreter, then sends N calls from C concurrent workers
spread round-robin over the replicas. Prints one line per replica count. Not a test; see docs/deploy.md.

With `--backend ray` the interpreters are Ray actors on a local cluster this script starts (a head that
hosts none and two worker nodes), inside a user and network namespace of its own (`unshare -rn`, loopback
only: Ray would otherwise bind the machine's address); it also reports sessions per node: the RSS of one
session's actor process plus its Node process, and how many sessions a worker node fits by declaration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
        rss = [p.memory_info().rss / 2**20 for r in replicas for p in r.node_processes()] or actor_rss()
    p95 = statistics.quantiles(latencies, n=20)[-1] * 1000
    return calls / elapsed, statistics.median(latencies) * 1000, p95, rss


RAY_NODE_MEMORY = 4 * 2**30
"""The memory each worker node declares to Ray (as a node of that size would)."""
RAY_SESSION_MB = 512
"""--ray-memory-mb as shipped."""


def actor_rss() -> list[float]:
    """MiB per Ray session actor: its Ray worker process plus the Node process it owns."""
    sizes = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(arg.endswith("host.mjs") for arg in proc.info["cmdline"] or []):
                parent = proc.parent()
                sizes.append((proc.memory_info().rss + (parent.memory_info().rss if parent else 0)) / 2**20)
    return sizes


def start_ray() -> tuple[Any, list[str]]:
    """A local cluster (head with no CPUs for sessions, two worker nodes) and the replica options to use it."""
    import ray
    from ray.cluster_utils import Cluster

    root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    node = {"object_store_memory": 100 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **node})
    for _ in range(2):
        cluster.add_node(num_cpus=2, memory=RAY_NODE_MEMORY, **node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="bench", log_to_driver=False)
    options = ["--backend", "ray", "--ray-address", cluster.address, "--ray-namespace", "bench"]
    return cluster, [*options, "--ray-cpus", "0.25", "--ray-memory-mb", str(RAY_SESSION_MB)]


def in_private_network() -> int | None:
    """Re-run this script in a loopback-only namespace when it is not in one (for Ray); its exit code."""
    if {name for _, name in socket.if_nameindex()} <= {"lo"}:
        return None
    inner = " ".join([sys.executable, *sys.argv])
    return subprocess.run(["unshare", "-rn", "sh", "-c", f"ip link set lo up && exec {inner}"]).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--replicas", default="1,3")
    parser.add_argument("--backend", choices=["local", "ray"], default="local")
    args = parser.parse_args()
    cluster, backend = None, []
    if args.backend == "ray":
        code = in_private_network()
        if code is not None:
            return code
        cluster, backend = start_ray()
    tmp = Path(tempfile.mkdtemp(prefix="mcp-pyodide-bench-replicas-"))
    redis = RedisServer(tmp)
    try:
        for count in (int(n) for n in args.replicas.split(",")):
            replicas = [
                HttpServerProcess(tmp, POLICY, "--state", redis.url, *backend, name=f"r{count}-{i}")
                for i in range(count)
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
        if cluster is not None:
            per_node = RAY_NODE_MEMORY // (RAY_SESSION_MB * 2**20)
            print(
                f"sessions per worker node: {per_node} by declaration (a {RAY_NODE_MEMORY // 2**30} GiB node, "
                f"--ray-memory-mb {RAY_SESSION_MB}); the interpreter RSS above is per session actor "
                "(its Ray worker process plus its Node process)",
                flush=True,
            )
    finally:
        redis.stop()
        if cluster is not None:
            import ray

            ray.shutdown()
            cluster.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
