"""Process control: user code may end its own interpreter at most, never Node, the server or its parent."""

from __future__ import annotations

import ast

import pytest
from sec_support import JS_PRELUDE, Sandbox, assert_error_or_reset, sc, server_alive, text_of

VECTORS = {
    "js-process-kill-ppid": "import js\njs.process.kill(js.process.ppid, 9)",
    "js-process-kill-pid": "import js\njs.process.kill(js.process.pid, 9)",
    "js-process-exit": "import js\njs.process.exit(1)",
    "js-process-abort": "import js\njs.process.abort()",
    "os-_exit": "import os\nos._exit(1)",
    "os-abort": "import os\nos.abort()",
    "os-kill-self-9": "import os\nos.kill(os.getpid(), 9)",
    "os-kill-parent-9": "import os\nos.kill(os.getppid(), 9)",
    "os-killpg": "import os\nos.killpg(os.getpgid(0), 9)",
    "signal-raise-sigterm": "import signal\nsignal.raise_signal(signal.SIGTERM)",
    "signal-raise-sigkill": "import signal\nsignal.raise_signal(signal.SIGKILL)",
    "sys-exit": "import sys\nsys.exit(3)",
    "raise-systemexit-0": "raise SystemExit(0)",
    "module-_exit": JS_PRELUDE + "pyodide_js._module._exit(1)",
    "module-quit": JS_PRELUDE + "pyodide_js._module.quit(1, pyodide_js._api.PythonError.new('bye'))",
    "module-_abort": JS_PRELUDE + "pyodide_js._module._abort()",
    "api-fatal_error": JS_PRELUDE + "pyodide_js._api.fatal_error(pyodide_js._api.PythonError.new('boom'))",
    "ctypes-libc-exit": "import ctypes\nctypes.CDLL(None).exit(7)",
    "ctypes-libc-raise": "import ctypes\nctypes.CDLL(None).raise_(9) if hasattr(ctypes.CDLL(None), 'raise_') else ctypes.CDLL(None)['raise'](9)",
    "ctypes-null-deref": "import ctypes\nctypes.string_at(0xFFFFFFF0, 64)",
    "faulthandler-sigsegv": "import faulthandler\nfaulthandler._sigsegv()",
}


@pytest.mark.parametrize("snippet", list(VECTORS.values()), ids=list(VECTORS))
def test_process_control_stays_inside(sandbox: Sandbox, snippet: str) -> None:
    server = sandbox.handle.server_process()
    result = sandbox.run(snippet, timeout_ms=10_000)
    assert server_alive(sandbox) and sandbox.handle.server_process().pid == server.pid, "the server process died"
    if "sys.exit" in snippet or "SystemExit" in snippet:
        # An ordinary Python exception: reported, state kept.
        assert result.is_error and not sc(result)["state_reset"], text_of(result)
    elif "ctypes.string_at" in snippet:
        # WebAssembly has no segfaults: an out-of-range read either fails visibly or returns 64
        # bytes of the interpreter's own linear memory (Sandbox.run checked them for host data).
        if result.is_error:
            assert_error_or_reset(result)
        else:
            value = ast.literal_eval(sc(result)["result"])
            assert isinstance(value, bytes) and len(value) == 64, text_of(result)
    else:
        assert_error_or_reset(result)
    sandbox.assert_healthy()


def test_node_process_is_not_replaced_by_a_crash(sandbox: Sandbox) -> None:
    """An interpreter death restarts the worker thread; the Node process itself stays."""
    before = [p.pid for p in sandbox.handle.node_processes()]
    sandbox.run("import os\nos.abort()")
    sandbox.assert_healthy()
    after = [p.pid for p in sandbox.handle.node_processes()]
    assert before == after, f"Node processes changed from {before} to {after}"
