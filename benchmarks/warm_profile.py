"""Warm `1+1` over stdio beside the MCP floor, in one run: p50/p90 and their ratio to the floor.

A script, not a test. Every server (the trivial one, then one per `--checkout`) is started once
over stdio with the official client and warmed; then `--rounds` rounds each time a block of
calls on every server in turn (the order alternates by round), so machine noise falls on all
alike. Blocks, not call-by-call alternation: switching process trees on every call costs each
of them its caches and makes every figure, the floor's too, several times slower than a real
client sees.

    python benchmarks/warm_profile.py [--checkout DIR ...] [--calls 300] [--rounds 6]
    python benchmarks/warm_profile.py --cprofile out.prof   # the server's profile over the calls
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TRIVIAL = HERE / "trivial_server.py"
ALLOW_ALL = REPO / "tests" / "policies" / "allow-all.json"
WARMUP = 30

PROFILED_SERVER = """
import cProfile, os, signal, sys, runpy
prof = cProfile.Profile()
def stop(*_):
    prof.disable(); prof.dump_stats(os.environ["WARM_PROFILE_OUT"]); os._exit(0)
signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
signal.signal(signal.SIGUSR2, stop)
sys.argv = ["mcp_pyodide", *sys.argv[1:]]
runpy.run_module("mcp_pyodide", run_name="__main__")
"""


async def open_session(stack: AsyncExitStack, command: list[str], env: dict[str, str], cwd: Path) -> Any:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=str(cwd))
    read, write = await stack.enter_async_context(stdio_client(params, errlog=sys.stderr))
    session = await stack.enter_async_context(ClientSession(read, write))
    await session.initialize()
    return session


def server_command(checkout: Path, profile: bool) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    head = [sys.executable, "-c", PROFILED_SERVER] if profile else [sys.executable, "-m", "mcp_pyodide"]
    return [*head, "--policy", str(ALLOW_ALL)], env


async def call(session: Any, name: str, arguments: dict[str, Any]) -> float:
    started = time.perf_counter()
    result = await session.call_tool(name, arguments)
    elapsed = (time.perf_counter() - started) * 1000
    if result.is_error:
        raise RuntimeError(f"{name} failed: {result.content}")
    return elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def tree_cpu(root: Any) -> dict[str, float]:
    """CPU seconds so far of a server process and its children (Node), by process name."""
    out: dict[str, float] = collections.Counter()
    for proc in (root, *root.children(recursive=True)):
        try:
            times = proc.cpu_times()
            out["python" if proc is root else proc.name()] += times.user + times.system
        except Exception:  # noqa: BLE001 - a child that just ended
            continue
    return out


def server_pids(before: set[int]) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process().children() if p.pid not in before]


async def main(args: argparse.Namespace) -> None:
    import psutil

    checkouts = [c.resolve() for c in (args.checkout or [REPO])]
    targets: list[tuple[str, Any, str]] = []
    trees: dict[str, psutil.Process] = {}  # each server's process (its Node process is a child)
    profiled_pid = None
    async with AsyncExitStack() as stack:
        before = {p.pid for p in psutil.Process().children()}
        trivial = await open_session(stack, [sys.executable, str(TRIVIAL)], dict(os.environ), HERE)
        targets.append(("trivial", trivial, "echo"))
        trees["trivial"] = psutil.Process(server_pids(before)[0])
        for checkout in checkouts:
            before = {p.pid for p in psutil.Process().children()}
            command, env = server_command(checkout, args.cprofile is not None)
            if args.cprofile is not None:
                env["WARM_PROFILE_OUT"] = str(args.cprofile.resolve())
            session = await open_session(stack, command, env, checkout)
            targets.append((str(checkout), session, "pyodide_execute"))
            trees[str(checkout)] = psutil.Process(server_pids(before)[0])
            if args.cprofile is not None and profiled_pid is None:
                profiled_pid = server_pids(before)[0]
        for _, session, name in targets:
            for _ in range(WARMUP):
                await call(session, name, {"code": "1+1"})
        if profiled_pid is not None:
            os.kill(profiled_pid, __import__("signal").SIGUSR1)
            await asyncio.sleep(0.2)
        times: dict[str, list[float]] = {label: [] for label, *_ in targets}
        ratios: dict[str, list[float]] = {label: [] for label, *_ in targets}  # per round, to the floor's
        cpu: dict[str, collections.Counter[str]] = {label: collections.Counter() for label, *_ in targets}
        block = max(1, args.calls // args.rounds)
        for r in range(args.rounds):
            medians: dict[str, float] = {}
            for label, session, name in targets if r % 2 == 0 else targets[::-1]:
                cpu_before = tree_cpu(trees[label])
                got = [await call(session, name, {"code": "1+1"}) for _ in range(block)]
                cpu[label] += {k: v - cpu_before.get(k, 0.0) for k, v in tree_cpu(trees[label]).items()}
                times[label] += got
                medians[label] = statistics.median(got)
            for label, value in medians.items():
                ratios[label].append(value / medians["trivial"])
        if profiled_pid is not None:
            os.kill(profiled_pid, __import__("signal").SIGUSR2)
            await asyncio.sleep(0.5)
    floor50, floor90 = pct(times["trivial"], 0.5), pct(times["trivial"], 0.9)
    for label, values in times.items():
        p50, p90 = pct(values, 0.5), pct(values, 0.9)
        print(
            f"{label}: p50 {p50:.3f} ms ({p50 / floor50:.2f}x)  p90 {p90:.3f} ms ({p90 / floor90:.2f}x)  "
            f"mean {statistics.fmean(values):.3f}  n={len(values)}  "
            f"round medians / floor's: median {statistics.median(ratios[label]):.2f}x"
        )
        parts = ", ".join(f"{k} {v / len(values) * 1e6:.0f}" for k, v in sorted(cpu[label].items()))
        print(f"    CPU per call (us, user+system): {parts}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, action="append", help="source tree(s) to run (default: this one)")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--cprofile", type=Path, help="profile the first checkout's server over the timed calls")
    asyncio.run(main(parser.parse_args()))
