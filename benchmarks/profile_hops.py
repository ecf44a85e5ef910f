"""Where a warm `1+1` call's time goes, hop by hop, from the client to the worker and back.

A profiling script, never imported by the product and not a test.

    python benchmarks/profile_hops.py [--checkout DIR] [--calls N] [--trivial] [--cprofile OUT]

It runs one server whose Python side is patched from here (the product has no timing
code) and whose Node files are an instrumented copy of the checkout's `node_runtime`; every
hop is stamped with CLOCK_MONOTONIC (Python's `time.monotonic_ns`, Node's `process.hrtime`:
the same clock in every process and thread), and the script prints the median step to each stamp and its
median offset from the client's send. `--trivial` stamps the trivial MCP server the same way (the
SDK's share of a call); warm_profile.py compares whole calls side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from warm_profile import open_session  # the same client set-up (this folder is on sys.path when run)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TRIVIAL = HERE / "trivial_server.py"
ALLOW_ALL = REPO / "tests" / "policies" / "allow-all.json"
PROFILE_ENV = "MCP_PYODIDE_HOPS_CPROFILE"  # where the server writes its cProfile stats (hops --cprofile)
CALLS_ENV = "MCP_PYODIDE_HOPS_CALLS"
WARMUP = 20

# -- the instrumented Node side (a copy; the checkout is never changed) -----------------------

NODE_PRELUDE_HOST = """
import { Worker as __HopsWorker } from "node:worker_threads";
globalThis.__hops = null;
const __hopsNow = () => process.hrtime.bigint().toString();
{
  const post = __HopsWorker.prototype.postMessage;
  __HopsWorker.prototype.postMessage = function (message, transfer) {
    if (message?.type === "run" && globalThis.__hops) globalThis.__hops.n_post = __hopsNow();
    return post.call(this, message, transfer);
  };
  const on = __HopsWorker.prototype.on;
  __HopsWorker.prototype.on = function (name, listener) {
    if (name !== "message") return on.call(this, name, listener);
    return on.call(this, name, (message) => {
      const trace = globalThis.__hops;
      if (trace && message?.__t) {
        const now = __hopsNow();
        const at = { w_recv: message.__recv, w_started: message.__t, n_started: now };
        if (message.type === "started") Object.assign(trace, at);
        if (message.type === "done") Object.assign(trace, message.__marks, { w_done: message.__t, n_done: now });
      }
      return listener(message);
    });
  };
}
"""
NODE_PRELUDE_WORKER = """
import { parentPort as __hopsPort } from "node:worker_threads";
{
  const now = () => process.hrtime.bigint().toString();
  let received = null;
  globalThis.__hopsMarks = {};
  const post = __hopsPort.postMessage.bind(__hopsPort);
  __hopsPort.postMessage = (message, transfer) => {
    if (message && typeof message === "object" && (message.type === "started" || message.type === "done")) {
      message.__t = now();
      message.__recv = received;
      if (message.type === "done") {
        message.__marks = globalThis.__hopsMarks;
        globalThis.__hopsMarks = {};
      }
    }
    return post(message, transfer);
  };
  const on = __hopsPort.on.bind(__hopsPort);
  __hopsPort.on = (name, listener) =>
    on(name, name === "message" ? (message) => { received = now(); return listener(message); } : listener);
}
"""
NODE_PROTOCOL_PATCH = (
    "export function readFrames(stream, onMessage, onEnd) {",
    """export function readFrames(stream, onMessage, onEnd) {
  const __inner = onMessage;
  onMessage = (message) => {
    if (message?.kind === "execute") globalThis.__hops = { n_recv: process.hrtime.bigint().toString() };
    return __inner(message);
  };""",
)
NODE_SEND_PATCH = (
    "export function sendFrame(stream, message) {",
    """export function sendFrame(stream, message) {
  if (globalThis.__hops && message?.kind === "result" && message.payload && "ok" in message.payload) {
    globalThis.__hops.n_send = process.hrtime.bigint().toString();
    message.payload.__hops = globalThis.__hops;
    globalThis.__hops = null;
  }""",
)


# Marks inside the worker's run (anchor -> mark name, placed after the anchor line).
WORKER_MARKS = (
    ("({ out, err } = armRun(message.runId));", "w_armed"),
    ("    protectExecutor();", "w_protected"),
    ("    const report = JSON.parse(reply);", "w_executed"),
    ("  scope.end();\n  abandonFetches();", "w_scope_end"),
    ("  outcome.fatal = fatal;", "w_finished"),
)


def instrumented_runtime(source: Path, into: Path) -> Path:
    """A copy of `source` (node_runtime) with timing stamps; fails loudly if an anchor moved."""
    target = into / "node_runtime"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("node_modules"))
    host = (target / "host.mjs").read_text()
    (target / "host.mjs").write_text(NODE_PRELUDE_HOST + host)
    worker = (target / "worker.mjs").read_text()
    for anchor, mark in WORKER_MARKS:
        if worker.count(anchor) != 1:
            raise SystemExit(f"worker.mjs changed: {anchor!r} not found once; update profile_hops.py")
        worker = worker.replace(anchor, f"{anchor} globalThis.__hopsMarks.{mark} = process.hrtime.bigint().toString();")
    (target / "worker.mjs").write_text(NODE_PRELUDE_WORKER + worker)
    protocol = (target / "protocol.mjs").read_text()
    for anchor, replacement in (NODE_PROTOCOL_PATCH, NODE_SEND_PATCH):
        if anchor not in protocol:
            raise SystemExit(f"protocol.mjs changed: {anchor!r} not found; update profile_hops.py")
        protocol = protocol.replace(anchor, replacement)
    (target / "protocol.mjs").write_text(protocol)
    return target


# -- the patched Python server (runs in the server process) ---------------------------------


def serve_patched(checkout: Path | None, runtime_dir: Path, trace_path: Path, argv: list[str]) -> int:
    """Run the server from `checkout` (None: the trivial server) with stamps at each Python-side hop,
    one JSON line per call."""
    import mcp_types
    from mcp.server import stdio as server_stdio

    now = time.monotonic_ns
    out = trace_path.open("a", buffering=1)
    holder: list[dict[str, Any]] = [{}]  # a fresh record per call: the writer thread keeps the old one

    adapter = mcp_types.jsonrpc_message_adapter
    profiler = cProfile.Profile() if os.environ.get(PROFILE_ENV) else None
    last_call = int(os.environ.get(CALLS_ENV, "0")) + WARMUP - 1

    class StampingAdapter:
        def __getattr__(self, name: str) -> Any:
            return getattr(adapter, name)

        def validate_json(self, line: Any, **kw: Any) -> Any:
            stamp = now()
            message = adapter.validate_json(line, **kw)
            if os.environ.get("HOPS_LINES"):
                print("IN", str(line)[:300], file=sys.stderr)
            if getattr(message, "method", None) == "tools/call":
                meta = (getattr(message, "params", None) or {}).get("_meta") or {}
                holder[0] = {"s_recv": stamp, "s_parsed": now(), "call": meta.get("hop")}
                if profiler is not None and meta.get("hop") == WARMUP:
                    profiler.enable()
            return message

    mcp_types.jsonrpc_message_adapter = StampingAdapter()  # type: ignore[assignment]

    flush = server_stdio._UnownedTextWrapper.flush

    def stamped_flush_record(record: dict[str, Any]) -> None:
        record["s_write"] = now()
        out.write(json.dumps(record) + "\n")
        if profiler is not None and record.get("call") == last_call:
            profiler.disable()
            profiler.dump_stats(os.environ[PROFILE_ENV])

    def stamped_flush(self: Any) -> None:
        flush(self)
        record = holder[0]
        if "s_recv" in record and "s_write" not in record:
            stamped_flush_record(record)

    server_stdio._UnownedTextWrapper.flush = stamped_flush  # type: ignore[method-assign]
    if checkout is None:
        import runpy

        runpy.run_path(str(TRIVIAL), run_name="__main__")
        return 0
    sys.path.insert(0, str(checkout))
    from mcp_pyodide import _runtime_files, _transport, runtime, sandbox
    from mcp_pyodide.server import app, registry

    _runtime_files.host_dir = lambda: runtime_dir  # the instrumented copy

    # The server's own stdio transport (fast_stdio) writes through asyncio.StreamWriter, not
    # the SDK's text wrapper: stamp its first drain after the sandbox returned.
    drain = asyncio.StreamWriter.drain

    async def stamped_drain(self: asyncio.StreamWriter) -> None:
        await drain(self)
        record = holder[0]
        if "s_sandbox_done" in record and "s_write" not in record:
            stamped_flush_record(record)

    asyncio.StreamWriter.drain = stamped_drain  # type: ignore[method-assign]

    def around(owner: Any, name: str, before: str, after: str) -> None:
        original = getattr(owner, name)

        async def stamped(*args: Any, **kwargs: Any) -> Any:
            holder[0][before] = now()
            try:
                return await original(*args, **kwargs)
            finally:
                holder[0][after] = now()

        setattr(owner, name, stamped)

    around(app, "admit", "s_admit", "s_admitted")
    around(sandbox.Sandbox, "execute", "s_sandbox", "s_sandbox_done")
    around(runtime.Runtime, "execute", "r_execute", "r_execute_done")
    parse = registry.ToolSpec.parse

    def stamped_parse(self: Any, arguments: Any) -> Any:
        holder[0]["s_call_tool"] = now()
        return parse(self, arguments)

    registry.ToolSpec.parse = stamped_parse  # type: ignore[method-assign]

    send, receive = _transport.Transport.send, _transport.Transport.receive

    async def stamped_send(self: Any, message: dict[str, Any]) -> None:
        if message.get("kind") == "execute":
            holder[0]["b_send"] = now()
        await send(self, message)
        if message.get("kind") == "execute":
            holder[0]["b_sent"] = now()

    async def stamped_receive(self: Any) -> Any:
        message = await receive(self)
        payload = (message or {}).get("payload")
        if isinstance(payload, dict) and isinstance(payload.get("__hops"), dict):
            holder[0]["b_recv"] = now()
            holder[0].update({k: int(v) for k, v in payload.pop("__hops").items() if v is not None})
        return message

    _transport.Transport.send = stamped_send  # type: ignore[method-assign]
    _transport.Transport.receive = stamped_receive  # type: ignore[method-assign]

    build = app.build_server

    def stamped_build(state: Any) -> Any:
        spec = state.tools["pyodide_execute"]
        inner = spec.handler

        async def timed(args: Any, ctx: Any) -> Any:
            holder[0]["s_handler"] = now()
            try:
                return await inner(args, ctx)
            finally:
                holder[0]["s_return"] = now()

        state.tools["pyodide_execute"] = dataclasses.replace(spec, handler=timed)
        return build(state)

    from mcp_pyodide.server import run as server_run

    server_run.build_server = stamped_build
    from mcp_pyodide.cli import main

    return main(argv)


# -- the client --------------------------------------------------------------------------------


LABELS = {
    "c_send": "client called call_tool",
    "s_recv": "server: the line was read (client encode, pipe, stdio reader)",
    "s_parsed": "server: JSON-RPC message validated",
    "s_call_tool": "server: call_tool started (SDK dispatch, middleware)",
    "s_admit": "server: arguments validated, policy view",
    "s_admitted": "server: policy decided (admit)",
    "s_handler": "server: execute handler entered (session, CallContext)",
    "s_sandbox": "server: Sandbox.execute entered (size check, streamer)",
    "r_execute": "sandbox: Runtime.execute entered (imports, tracker, run lock)",
    "b_send": "broker: about to write the frame (lock, ensure_process, wait_for)",
    "b_sent": "broker: frame written and drained",
    "n_recv": "Node main: frame read and parsed",
    "n_post": "Node main: posted the run to the worker",
    "w_recv": "worker: got the run message",
    "w_started": "worker: posted 'started'",
    "n_started": "Node main: got 'started' (timers)",
    "w_armed": "worker: armRun (output capture, setStdout/setStderr/setStdin)",
    "w_protected": "worker: scope.begin, protectExecutor",
    "w_executed": "worker: guestExecute (compile, run, repr, JSON) and JSON.parse",
    "w_scope_end": "worker: guestFlush, scope.end",
    "w_finished": "worker: finish captures, reset stdout/stderr, lists",
    "w_done": "worker: posted 'done'",
    "n_done": "Node main: got 'done'",
    "n_send": "Node main: result frame encoded, writing",
    "b_recv": "broker: the frame was read and JSON-decoded",
    "r_execute_done": "sandbox: Runtime.execute returned (decode, wake-ups)",
    "s_sandbox_done": "server: Sandbox.execute returned (tracker, history)",
    "s_return": "server: handler returned (result shaping, structured content)",
    "s_write": "server: response flushed (session fields, audit, serialise, stdio writer)",
    "c_recv": "client: call_tool returned (pipe, client parse, schema validation)",
}


def report(rows: list[dict[str, Any]]) -> None:
    """Every stamp in the order of its median offset from the client's send, with the step to it."""
    names = sorted(
        {k for r in rows for k in r if k in LABELS},
        key=lambda k: statistics.median((r[k] - r["c_send"]) for r in rows if k in r),
    )
    print(f"{len(rows)} warm calls; median step to each stamp (ms), then median offset from the send:")
    previous = None
    for name in names:
        if previous is not None:
            steps = [(r[name] - r[previous]) / 1e6 for r in rows if name in r and previous in r]
            offset = statistics.median((r[name] - r["c_send"]) / 1e6 for r in rows if name in r)
            print(f"  {statistics.median(steps):7.3f}  {offset:7.3f}  {LABELS[name]}")
        previous = name


async def hops(args: argparse.Namespace) -> None:
    checkout = args.checkout[0].resolve()
    with tempfile.TemporaryDirectory(prefix="hops-") as tmp:
        runtime = instrumented_runtime(checkout / "node_runtime", Path(tmp))
        trace = Path(tmp) / "trace.jsonl"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_serve",
            "trivial" if args.trivial else str(checkout),
            str(runtime),
            str(trace),
            "--policy",
            str(ALLOW_ALL),
        ]
        env = {**os.environ, "PYTHONPATH": str(checkout), CALLS_ENV: str(args.calls)}
        if args.cprofile:
            env[PROFILE_ENV] = str(args.cprofile.resolve())
        client: dict[int, tuple[int, int]] = {}
        name = "echo" if args.trivial else "pyodide_execute"
        async with AsyncExitStack() as stack:
            session = await open_session(stack, command, env, checkout)
            for i in range(WARMUP + args.calls):
                sent = time.monotonic_ns()
                await session.call_tool(name, {"code": "1+1"}, meta={"hop": i})
                if i >= WARMUP:
                    client[i] = (sent, time.monotonic_ns())
            await asyncio.sleep(0.2)
        records = {r["call"]: r for r in map(json.loads, trace.read_text().splitlines())}
    rows = [{**records[i], "c_send": sent, "c_recv": got} for i, (sent, got) in client.items() if i in records]
    print(f"{len(rows)} of {len(client)} calls traced", file=sys.stderr)
    report(rows)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        checkout, runtime, trace, *rest = sys.argv[2:]
        source = None if checkout == "trivial" else Path(checkout)
        raise SystemExit(serve_patched(source, Path(runtime), Path(trace), rest if source else []))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, action="append", help="source tree(s) to run (default: this one)")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--trivial", action="store_true", help="trace the trivial MCP server instead")
    parser.add_argument("--cprofile", type=Path, help="the server's cProfile stats over the timed calls")
    args = parser.parse_args()
    args.checkout = args.checkout or [REPO]
    asyncio.run(hops(args))


if __name__ == "__main__":
    main()
