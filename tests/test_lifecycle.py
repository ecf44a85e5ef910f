"""Timeouts, crashes, resets, concurrency and shutdown, against real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from support import ALLOW_ALL, ServerHandle, spawn_stdio_server, text_of, wait_for_nodes

from mcp_pyodide import Sandbox
from mcp_pyodide._protocol import Event
from mcp_pyodide.runtime import Runtime


def test_runaway_loop_is_stopped_and_state_is_kept(server: ServerHandle) -> None:
    server.execute("kept = 'yes'")
    started = time.monotonic()
    result = server.execute("while True: pass", timeout_ms=1000)
    elapsed = time.monotonic() - started
    assert result.is_error
    sc = result.structured_content
    assert sc is not None and sc["timed_out"] is True and sc["state_reset"] is False
    assert "timed out after 1000 ms" in text_of(result)
    assert elapsed < 5
    assert server.execute("kept").structured_content["result"] == "'yes'"  # type: ignore[index]


def test_code_that_swallows_the_interrupt_gets_a_fresh_interpreter(server: ServerHandle) -> None:
    server.execute("doomed = 1")
    code = "import signal\nsignal.signal(signal.SIGINT, lambda *args: None)\nwhile True: pass"
    result = server.execute(code, timeout_ms=500)
    sc = result.structured_content
    assert result.is_error and sc is not None and sc["timed_out"] and sc["state_reset"]
    assert "state was reset" in text_of(result)
    after = server.execute("'doomed' in globals()")
    assert after.structured_content["result"] == "False"  # type: ignore[index]


def test_an_interrupt_handler_left_behind_does_not_outlive_its_call(server: ServerHandle) -> None:
    server.execute("import signal\nsignal.signal(signal.SIGINT, lambda *args: None)")
    server.execute("survivor = 1")
    result = server.execute("while True: pass", timeout_ms=300)
    assert result.structured_content["state_reset"] is False  # type: ignore[index]
    assert server.execute("survivor").structured_content["result"] == "1"  # type: ignore[index]


def test_output_before_a_timeout_is_returned(server: ServerHandle) -> None:
    result = server.execute("print('before', flush=True)\nwhile True: pass", timeout_ms=500)
    assert result.structured_content["stdout"] == "before\n"  # type: ignore[index]


def test_concurrent_calls_are_queued_and_each_answered(server: ServerHandle) -> None:
    server.execute("order = []")
    calls = [("pyodide_execute", {"code": f"order.append({i})\n{i} * 10"}) for i in range(8)]
    results = server.call_many(calls)
    assert [r.structured_content["result"] for r in results] == [str(i * 10) for i in range(8)]  # type: ignore[index]
    assert server.execute("sorted(order) == list(range(8))").structured_content["result"] == "True"  # type: ignore[index]


def test_timeout_counts_from_when_the_call_starts_running(server: ServerHandle) -> None:
    slow = ("pyodide_execute", {"code": "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass\n'slow'"})
    quick = ("pyodide_execute", {"code": "'quick'", "timeout": 1000})
    results = server.call_many([slow, quick])
    assert results[0].structured_content["result"] == "'slow'"  # type: ignore[index]
    assert not results[1].is_error, text_of(results[1])


def test_reset_discards_state(fresh_server: ServerHandle) -> None:
    fresh_server.execute("gone = 1")
    result = fresh_server.call("pyodide_reset", {})
    assert not result.is_error and "fresh interpreter" in text_of(result)
    assert fresh_server.execute("'gone' in globals()").structured_content["result"] == "False"  # type: ignore[index]


def test_reset_answers_before_the_fresh_interpreter_has_booted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reply comes once the old state is gone; the next call is the one that waits for the boot."""
    seen: list[str] = []
    original = Runtime._on_event

    def record(self: Runtime, event: Event) -> None:
        seen.append(type(event).__name__)
        original(self, event)

    monkeypatch.setattr(Runtime, "_on_event", record)

    async def scenario() -> tuple[list[str], list[str], str | None]:
        async with Sandbox(output_dir=tmp_path / "out") as sandbox:
            await sandbox.execute("gone = 1")
            seen.clear()
            await sandbox.reset()
            at_reply = list(seen)
            after = await sandbox.execute("'gone' in globals()")
            return at_reply, list(seen), after.value

    at_reply, after_next_call, value = asyncio.run(scenario())
    assert "ReadyEvent" not in at_reply, "the reset waited for the new interpreter to boot"
    assert after_next_call == ["RestartingEvent", "ReadyEvent"]
    assert value == "False"


def test_a_node_process_killed_while_idle_is_replaced_at_once(fresh_server: ServerHandle) -> None:
    fresh_server.execute("lost = 1")
    server_proc = fresh_server.server_process()
    [node] = fresh_server.node_processes(server_proc)
    node.send_signal(signal.SIGKILL)
    node.wait(10)
    # The broker notices the exit itself and starts the replacement before any call comes.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not [
        p for p in fresh_server.node_processes(server_proc) if p.pid != node.pid
    ]:
        time.sleep(0.1)
    [new_node] = fresh_server.node_processes(server_proc)
    assert new_node.pid != node.pid
    result = fresh_server.execute("'lost' in globals()")
    assert not result.is_error, text_of(result)
    data = result.structured_content
    assert data is not None and data["result"] == "False" and data["state_reset"] is True
    assert "killed by signal 9 between calls" in data["stderr"]
    # The note belongs to that one call.
    assert fresh_server.execute("1").structured_content["state_reset"] is False  # type: ignore[index]
    assert server_proc.is_running()


def test_call_in_flight_when_node_dies_returns_an_error_quickly(fresh_server: ServerHandle) -> None:
    assert not fresh_server.execute("1").is_error  # the runtime is up
    server_proc = fresh_server.server_process()
    [node] = fresh_server.node_processes(server_proc)
    pending = fresh_server.run_async_call("pyodide_execute", {"code": "while True: pass", "timeout": 60_000})
    time.sleep(1.0)
    node.send_signal(signal.SIGKILL)
    started = time.monotonic()
    result = pending.result(30)
    assert time.monotonic() - started < 10
    assert result.is_error and "reset" in text_of(result)
    assert fresh_server.execute("1 + 1").structured_content["result"] == "2"  # type: ignore[index]


def _spawn_server() -> tuple[subprocess.Popen[bytes], psutil.Process]:
    proc = spawn_stdio_server("--policy", ALLOW_ALL, stderr=subprocess.DEVNULL)
    nodes = wait_for_nodes(proc)
    assert nodes, "the server did not start Node"
    return proc, nodes[0]


def _assert_gone(node: psutil.Process, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not node.is_running() or node.status() == psutil.STATUS_ZOMBIE:
            return
        time.sleep(0.05)
    node.kill()
    pytest.fail(f"Node process {node.pid} outlived the server")


def test_closing_stdin_ends_server_and_node() -> None:
    proc, node = _spawn_server()
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(20) == 0
    _assert_gone(node)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_end_server_and_node(signum: int) -> None:
    proc, node = _spawn_server()
    time.sleep(0.5)
    os.kill(proc.pid, signum)
    proc.wait(20)
    _assert_gone(node)


def test_sigkill_of_the_server_still_ends_node() -> None:
    proc, node = _spawn_server()
    proc.kill()
    proc.wait(10)
    _assert_gone(node)
