"""Resource bombs: memory, recursion, time, interrupt swallowing, code size. Each ends visibly and the next call works."""

from __future__ import annotations

import time

import psutil
import pytest
from sec_support import JS_PRELUDE, Sandbox, sc, text_of

MEMORY_LIMIT_MB = 256
SERVER_ARGS = ("--memory-limit", str(MEMORY_LIMIT_MB))

MEMORY = {
    "list-of-bytearrays": "xs = []\nwhile True:\n    xs.append(bytearray(10**7))",
    "one-huge-bytearray": "b = bytearray(2**30)",
    "string-doubling": "s = 'x'\nwhile True:\n    s = s + s",
    "wasm-memory-grow": JS_PRELUDE + "pyodide_js._module.wasmMemory.grow(40000)",
}


@pytest.mark.parametrize("snippet", list(MEMORY.values()), ids=list(MEMORY))
def test_memory_bomb_ends_with_a_clear_error(sandbox: Sandbox, snippet: str) -> None:
    started = time.monotonic()
    result = sandbox.run(snippet, timeout_ms=30_000)
    assert result.is_error, text_of(result)
    assert "MemoryError" in text_of(result) or "memory" in text_of(result).lower(), text_of(result)
    assert time.monotonic() - started < 30
    sandbox.assert_healthy()


def test_in_memory_files_are_under_the_memory_cap(sandbox: Sandbox) -> None:
    """MEMFS file data lives in JavaScript ArrayBuffers, outside the capped wasm memory."""
    node = sandbox.handle.node_processes()[0]
    # 12 x 64 MiB = 768 MiB, three times the cap; each write passes through wasm memory briefly.
    result = sandbox.run(
        "import os\nchunk = b'x' * (64 * 2**20)\nfor i in range(12):\n"
        "    with open(f'/tmp/fill{i}', 'wb') as f:\n        f.write(chunk)\ndel chunk\n"
        "sum(os.path.getsize(f'/tmp/fill{i}') for i in range(12)) // 2**20",
        timeout_ms=60_000,
    )
    rss_mb = node.memory_info().rss // 2**20
    sandbox.run("import os\nfor i in range(12):\n    os.path.exists(f'/tmp/fill{i}') and os.remove(f'/tmp/fill{i}')")
    assert result.is_error or rss_mb < MEMORY_LIMIT_MB + 512, (
        f"{text_of(result)} MiB stored in /tmp with a {MEMORY_LIMIT_MB} MiB cap; Node RSS {rss_mb} MiB"
    )
    sandbox.assert_healthy()


RECURSION = {
    "python-recursion": "def f():\n    return f()\nf()",
    "recursion-limit-raised": "import sys\nsys.setrecursionlimit(10**6)\ndef f(n):\n    return f(n + 1)\nf(0)",
    "deep-nested-json": "import json\njson.loads('[' * 10**6 + ']' * 10**6)",
    "deep-nested-repr": "x = []\nfor _ in range(10**6):\n    x = [x]\nrepr(x)",
    "deep-nested-eval": "eval('(' * 10**5 + ')' * 10**5)",
}


@pytest.mark.parametrize("snippet", list(RECURSION.values()), ids=list(RECURSION))
def test_recursion_bomb_ends_with_a_clear_error(sandbox: Sandbox, snippet: str) -> None:
    result = sandbox.run(snippet, timeout_ms=20_000)
    assert result.is_error, text_of(result)[:500]
    assert not sc(result)["timed_out"], text_of(result)[:500]
    sandbox.assert_healthy()


TIME = {
    # id: (snippet, timeout_ms, state may be reset)
    "time-sleep-3600": ("import time\ntime.sleep(3600)", 2000),
    "long-c-call-sum-range": ("sum(range(3 * 10**8))", 1000),
    "busy-loop": ("while True:\n    pass", 1000),
    "swallow-keyboardinterrupt": (
        "while True:\n    try:\n        while True:\n            pass\n    except KeyboardInterrupt:\n        pass",
        1000,
    ),
    "swallow-in-finally": ("try:\n    while True:\n        pass\nfinally:\n    while True:\n        pass", 1000),
    "signal-sigint-ignored": (
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
        1000,
    ),
    "signal-sigint-noop-handler": (
        "import signal\nsignal.signal(signal.SIGINT, lambda *a: None)\nwhile True:\n    pass",
        1000,
    ),
    "interrupt-buffer-replaced": (
        JS_PRELUDE + "buf = pyodide_js._module.HEAP32.constructor.new(1)\n"
        "pyodide_js.setInterruptBuffer(buf)\nwhile True:\n    pass",
        1000,
    ),
    "regex-backtracking": ("import re\nre.match(r'(a+)+$', 'a' * 40 + 'b')", 1000),
    "async-busy-loop": ("import asyncio\nawait asyncio.sleep(0)\nwhile True:\n    pass", 1000),
    "async-sleep-forever": ("import asyncio\nawait asyncio.sleep(3600)", 1000),
}


@pytest.mark.parametrize(("snippet", "timeout_ms"), list(TIME.values()), ids=list(TIME))
def test_time_bomb_is_stopped(sandbox: Sandbox, snippet: str, timeout_ms: int) -> None:
    started = time.monotonic()
    result = sandbox.run(snippet, timeout_ms=timeout_ms)
    elapsed = time.monotonic() - started
    assert result.is_error and sc(result)["timed_out"], text_of(result)
    assert elapsed < timeout_ms / 1000 + 8, f"the call took {elapsed:.1f} s"
    assert "timed out" in text_of(result).lower()
    if sc(result)["state_reset"]:
        assert "reset" in text_of(result).lower()
    sandbox.assert_healthy()


def test_code_over_one_megabyte_is_refused(sandbox: Sandbox) -> None:
    code = "huge_code_ran = True\n" + "x = 1\n" * 200_000  # about 1.2 MB
    result = sandbox.run(code)
    assert result.is_error and "bytes" in text_of(result), text_of(result)
    assert sandbox.run("'huge_code_ran' in globals()").structured_content["result"] == "False"  # type: ignore[index]
    sandbox.assert_healthy()


def test_node_rss_stays_bounded(sandbox: Sandbox) -> None:
    """After all the bombs above, the Node process is not holding gigabytes."""
    rss = sum(p.memory_info().rss for p in sandbox.handle.node_processes()) // 2**20
    assert rss < MEMORY_LIMIT_MB + 768, f"Node RSS is {rss} MiB"
    assert psutil.virtual_memory().available > 2**30
