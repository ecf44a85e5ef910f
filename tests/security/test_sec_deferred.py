"""Deferred callbacks: nothing scheduled by one call may print into, stall or crash a later call."""

from __future__ import annotations

import time

import pytest
from sec_support import JS_PRELUDE, Sandbox, sc, text_of

SPIN = (
    "def spin(*_):\n"
    "    while True:\n"
    "        try:\n"
    "            while True:\n"
    "                pass\n"
    "        except BaseException:\n"
    "            pass\n"
)
PRINTER = "import sys\ndef late(*_):\n    print('LATE-OUTPUT')\n    sys.stderr.write('LATE-ERR\\n')\n"

# Each snippet leaves something behind and returns; the test then waits, and checks the
# next calls (a sync one and an async one that yields to the event loop for a while).
LEFT_BEHIND = {
    "setTimeout-print": JS_PRELUDE + PRINTER + "import js\njs.setTimeout(create_proxy(late), 0)",
    "setTimeout-print-delayed": JS_PRELUDE + PRINTER + "import js\njs.setTimeout(create_proxy(late), 400)",
    "setInterval-print": JS_PRELUDE + PRINTER + "import js\njs.setInterval(create_proxy(late), 20)",
    "setTimeout-spin": JS_PRELUDE + SPIN + "import js\njs.setTimeout(create_proxy(spin), 0)",
    "asyncio-call_later-print": PRINTER + "import asyncio\nasyncio.get_event_loop().call_later(0.3, late)",
    "asyncio-call_soon-spin": SPIN + "import asyncio\nasyncio.get_event_loop().call_soon(spin)",
    "asyncio-task-left-running": PRINTER + "import asyncio\n"
    "async def forever():\n    while True:\n        late()\n        await asyncio.sleep(0.02)\n"
    "keep_task = asyncio.ensure_future(forever())",
    "scheduleCallback-print": JS_PRELUDE + PRINTER + "pyodide_js._api.scheduleCallback(create_proxy(late), 0)",
    "scheduleCallback-spin": JS_PRELUDE + SPIN + "pyodide_js._api.scheduleCallback(create_proxy(spin), 0)",
    "scheduleCallback-spin-delayed": JS_PRELUDE + SPIN + "pyodide_js._api.scheduleCallback(create_proxy(spin), 300)",
    "scheduleCallback-reschedules-printing": JS_PRELUDE
    + PRINTER
    + "def again(*_):\n    late()\n    pyodide_js._api.scheduleCallback(create_proxy(again), 10)\n"
    "pyodide_js._api.scheduleCallback(create_proxy(again), 10)",
}

# Promise reactions left behind: the next call answers promptly with a correct value, and if
# anything had to be stopped by replacing the interpreter, the result says so (SECURITY.md).
MICROTASK_HOGS = {
    "promise-then-spin": JS_PRELUDE + SPIN + "pyodide_js._api.bootstrapFinalizedPromise.then(create_proxy(spin))",
    "promise-then-print-chain": JS_PRELUDE
    + PRINTER
    + "def again(*_):\n    late()\n    return pyodide_js.loadPackage([]).then(create_proxy(again))\n"
    "pyodide_js.loadPackage([]).then(create_proxy(again))",
}


@pytest.mark.parametrize("snippet", list(MICROTASK_HOGS.values()), ids=list(MICROTASK_HOGS))
def test_microtask_hogs_cannot_silently_break_later_calls(sandbox: Sandbox, snippet: str) -> None:
    sb = sandbox
    sb.reset()
    sb.run("state_marker = 'kept'")
    sb.run(snippet, timeout_ms=5_000)
    time.sleep(0.6)
    started = time.monotonic()
    result = sb.run("'answered'", timeout_ms=3_000)
    assert time.monotonic() - started < 5, "the next call waited too long"
    assert not result.is_error, f"a left-behind callback broke the next call: {text_of(result)}"
    assert sc(result)["result"] == "'answered'"
    state = sb.run("globals().get('state_marker')")
    if sc(state)["result"] != "'kept'":
        assert sc(result)["state_reset"] is True and "state was reset" in text_of(result), text_of(result)
    assert "LATE" not in sc(result)["stdout"]
    sb.assert_healthy()


@pytest.mark.parametrize("snippet", list(LEFT_BEHIND.values()), ids=list(LEFT_BEHIND))
def test_left_behind_callbacks_do_not_reach_later_calls(sandbox: Sandbox, snippet: str) -> None:
    sb = sandbox
    sb.reset()  # a clean interpreter: nothing left behind by the previous vector
    sb.run("state_marker = 'kept'")
    first = sb.run(snippet, timeout_ms=5_000)
    assert "LATE-OUTPUT" not in text_of(first) or sc(first)["stdout"].count("LATE-OUTPUT") <= 1
    time.sleep(0.6)
    result = sb.run("state_marker", timeout_ms=3_000)
    assert not result.is_error, f"a left-behind callback broke the next call: {text_of(result)}"
    assert sc(result)["result"] == "'kept'"
    assert "LATE" not in text_of(result)
    later = sb.run("import asyncio\nawait asyncio.sleep(0.5)\n'async-ok'", timeout_ms=5_000)
    assert not later.is_error, text_of(later)
    assert "LATE" not in text_of(later), f"a left-behind callback printed into a later run: {text_of(later)}"
    sb.assert_healthy()


def test_timer_callback_raising_during_run_keeps_state(sandbox: Sandbox) -> None:
    sandbox.run("state_marker2 = 'kept'")
    result = sandbox.run(
        JS_PRELUDE + "import js, asyncio\n"
        "js.setTimeout(create_proxy(lambda: 1 / 0), 0)\nawait asyncio.sleep(0.1)\n'survived'",
        timeout_ms=5_000,
    )
    after = sandbox.run("state_marker2")
    assert not after.is_error and sc(after)["result"] == "'kept'", (
        f"an exception in a timer callback reset the interpreter: {text_of(result)} / {text_of(after)}"
    )
    sandbox.assert_healthy()


def test_timer_with_string_callback_during_run(sandbox: Sandbox) -> None:
    sandbox.run("state_marker3 = 'kept'")
    sandbox.run("import js, asyncio\njs.setTimeout('globalThis.x = 1', 0)\nawait asyncio.sleep(0.1)", timeout_ms=5_000)
    after = sandbox.run("state_marker3")
    assert not after.is_error and sc(after)["result"] == "'kept'", (
        f"a string timer reset the interpreter: {text_of(after)}"
    )
    sandbox.assert_healthy()


# -- Nothing runs between calls: side effects counted on the host after the call returned ---------

SIDE = "/mnt/output/side-effect.txt"
APPEND = (
    JS_PRELUDE
    + "import js\n"
    + f"def effect(*_):\n    with open({SIDE!r}, 'a') as f:\n        f.write('x')\n"
    + "proxy = create_proxy(effect)\n"
)
NATIVE = JS_PRELUDE + "import js\n" + f"native = pyodide_js.FS.writeFile.bind(None, {SIDE!r}, 'native')\n"
# Each vector leaves callbacks due 50-400 ms after the call returns (some of them repeating).
BETWEEN_CALLS = {
    "setTimeout-python": APPEND + "js.setTimeout(proxy, 150)",
    "setInterval-python": APPEND + "js.setInterval(proxy, 30)",
    "setTimeout-native": NATIVE + "js.setTimeout(native, 150)",
    "setInterval-native": NATIVE + "js.setInterval(native, 30)",
    "AbortSignal.timeout-listener": APPEND + "js.AbortSignal.timeout(150).addEventListener('abort', proxy)",
    "AbortSignal.timeout-native": NATIVE + "js.AbortSignal.timeout(150).addEventListener('abort', native)",
    "AbortSignal.timeout-onabort": APPEND + "s = js.AbortSignal.timeout(150)\ns.onabort = proxy",
    "emscripten-safeSetTimeout": APPEND + "pyodide_js._module.safeSetTimeout(proxy, 150)",
    "emscripten-setImmediateWrapped-loop": APPEND
    + "def again(*_):\n    effect()\n    pyodide_js._module.setImmediateWrapped(create_proxy(again))\n"
    + "pyodide_js._module.setImmediateWrapped(create_proxy(again))",
    "scheduleCallback-immediate": APPEND + "pyodide_js._api.scheduleCallback(proxy, 0)",
    "scheduleCallback-delayed": APPEND + "pyodide_js._api.scheduleCallback(proxy, 150)",
    "promise-then-python": APPEND + "pyodide_js.loadPackage([]).then(proxy)",
    "promise-then-native": NATIVE + "pyodide_js.loadPackage([]).then(native)",
    "promise-finally-python": APPEND + "pyodide_js.loadPackage([]).finally_(proxy)",
    "promise-catch-python": APPEND + "pyodide_js.loadPackage(['no-such-package-zz']).catch(proxy)",
    "promise-then-chain": APPEND
    + "def again(*_):\n    effect()\n    return pyodide_js.loadPackage([]).then(create_proxy(again))\n"
    + "pyodide_js.loadPackage([]).then(create_proxy(again))",
    "delayed-promise-then": APPEND + "pyodide_js._api.loadBinaryFile('/no/such/file').then(proxy, proxy)",
    "pyodide-api-callback-after-return": APPEND
    + "pyodide_js.loadPackage(['no-such-package-zz'], jsobj(errorCallback=proxy, messageCallback=proxy))",
    "asyncio-call_later": APPEND + "import asyncio\nasyncio.get_event_loop().call_later(0.15, effect)",
    "asyncio-task-loop": APPEND
    + "import asyncio\nasync def forever():\n    while True:\n        effect()\n        await asyncio.sleep(0.03)\n"
    + "keep = asyncio.ensure_future(forever())",
    "asyncio-future-callback": APPEND
    + "import asyncio\nfut = asyncio.get_event_loop().create_future()\nfut.add_done_callback(effect)\n"
    + "js.setTimeout(create_proxy(lambda: fut.set_result(1)), 100)",
}


@pytest.mark.parametrize("snippet", list(BETWEEN_CALLS.values()), ids=list(BETWEEN_CALLS))
def test_no_guest_code_runs_between_calls(sandbox: Sandbox, snippet: str) -> None:
    sb = sandbox
    side = sb.handle.output_dir / "side-effect.txt"
    sb.reset()
    side.unlink(missing_ok=True)
    first = sb.run(snippet, timeout_ms=5_000)
    assert not first.is_error, text_of(first)
    before = side.read_bytes() if side.exists() else b""  # what ran inside the call (if anything)
    time.sleep(0.8)
    after = side.read_bytes() if side.exists() else b""
    assert after == before, f"guest code wrote to the output folder with no call in progress: {after!r}"
    # Nor inside a later call that gives the event loop plenty of time.
    later = sb.run("import asyncio\nawait asyncio.sleep(0.5)\n'async-ok'", timeout_ms=5_000)
    assert not later.is_error and sc(later)["result"] == "'async-ok'", text_of(later)
    final = side.read_bytes() if side.exists() else b""
    assert final == before, f"a callback left by an earlier call ran inside a later call: {final!r}"
    sb.assert_healthy()


FORGERS = {
    "setTimeout": "js.setTimeout(create_proxy(forge), 200)",
    "scheduleCallback": "pyodide_js._api.scheduleCallback(create_proxy(forge), 200)",
    "AbortSignal.timeout": "js.AbortSignal.timeout(200).addEventListener('abort', create_proxy(forge))",
    "asyncio-call_later": "import asyncio\nasyncio.get_event_loop().call_later(0.2, forge)",
}
FORGE = (
    JS_PRELUDE
    + "import js, builtins, sys\n"
    + "def forge(*_):\n"
    + "    builtins.FORGED = True\n"
    + "    print('FORGED-OUTPUT')\n"
    + "    ex = sys.modules.get('mcp_guest_executor')\n"
    + "    import gc\n"
    + "    for obj in gc.get_objects():\n"
    + "        if type(obj).__name__ == 'Guest':\n"
    + "            obj.namespace['_forged_result'] = 'FORGED'\n"
)


@pytest.mark.parametrize("schedule", list(FORGERS.values()), ids=list(FORGERS))
def test_a_left_behind_callback_cannot_forge_a_later_result(sandbox: Sandbox, schedule: str) -> None:
    """The callback is due while the next call is running: it must not run there either."""
    sandbox.reset()
    first = sandbox.run(FORGE + schedule, timeout_ms=5_000)
    assert not first.is_error, text_of(first)
    later = sandbox.run(
        "import asyncio, builtins\nawait asyncio.sleep(0.8)\n(getattr(builtins, 'FORGED', None), globals().get('_forged_result'))",
        timeout_ms=5_000,
    )
    assert not later.is_error, text_of(later)
    assert sc(later)["result"] == "(None, None)", f"a callback from an earlier call ran in this one: {text_of(later)}"
    assert "FORGED" not in sc(later)["stdout"]


HOGS = {
    "setImmediateWrapped-loop": JS_PRELUDE
    + "def again(*_):\n    pyodide_js._module.setImmediateWrapped(create_proxy(again))\n"
    + "pyodide_js._module.setImmediateWrapped(create_proxy(again))",
    "setInterval-native-0ms": JS_PRELUDE
    + "import js\nfor _ in range(50):\n    js.setInterval(pyodide_js.FS.stat.bind(None, '/'), 0)",
    "promise-then-chain": JS_PRELUDE
    + "def again(*_):\n    return pyodide_js.loadPackage([]).then(create_proxy(again))\n"
    + "pyodide_js.loadPackage([]).then(create_proxy(again))",
    "asyncio-busy-task": "import asyncio\nasync def busy():\n    while True:\n        await asyncio.sleep(0)\n"
    "keep = asyncio.ensure_future(busy())",
}


@pytest.mark.parametrize("snippet", list(HOGS.values()), ids=list(HOGS))
def test_node_is_idle_between_calls(sandbox: Sandbox, snippet: str) -> None:
    """A background loop left by a call would burn CPU the stall detector never sees."""
    sandbox.reset()
    node = sandbox.handle.node_processes()[0]
    result = sandbox.run(snippet, timeout_ms=5_000)
    assert not result.is_error, text_of(result)
    time.sleep(0.3)  # let the call's own tail (output flushing) settle
    start = node.cpu_times()
    time.sleep(1.0)
    end = node.cpu_times()
    used = (end.user - start.user) + (end.system - start.system)
    assert used < 0.15, f"the Node process used {used:.2f} s of CPU in 1 s with no call in progress"
    sandbox.assert_healthy()
