"""Tampering with the executor from user code: the next call must still report honestly and correctly."""

from __future__ import annotations

import pytest
from sec_support import Sandbox, sc, text_of

# The executor object, however it is named or imported in the current product.
FIND_GUEST = (
    "import gc\n_guest = next(o for o in gc.get_objects() if type(o).__name__ == 'Guest' and hasattr(o, 'execute'))\n"
)

VECTORS = {
    "del-__builtins__": "del __builtins__",
    "globals-cleared": "globals().clear()",
    "builtins-print-replaced": "import builtins\nbuiltins.print = lambda *a, **k: None",
    "builtins-eval-deleted": "import builtins\ndel builtins.eval",
    "builtins-compile-replaced": "import builtins\nbuiltins.compile = None",
    "builtins-repr-replaced": "import builtins\nbuiltins.repr = lambda o: 'FORGED'",
    "json-dumps-patched": 'import json\njson.dumps = lambda *a, **k: \'{"ok": true, "result": "FORGED"}\'',
    "json-module-attrs-deleted": "import json\ndel json.dumps",
    "sys-modules-json-replaced": "import sys, types\nsys.modules['json'] = types.ModuleType('json')",
    "ast-parse-replaced": "import ast\nast.parse = None",
    "signal-signal-replaced": "import signal\nsignal.signal = None",
    "traceback-replaced": "import traceback\ntraceback.format_exception = None\ntraceback.format_exception_only = None",
    "linecache-cache-replaced": "import linecache\nlinecache.cache = None",
    "guest-execute-hijacked": FIND_GUEST
    + '_guest.execute = lambda src: \'{"ok": true, "result": "FORGED", "extra": {}}\'',
    "guest-class-patched": FIND_GUEST
    + 'type(_guest).report_value = lambda self, v: \'{"ok": true, "result": "FORGED"}\'',
    "guest-code-swapped": FIND_GUEST + "g = type(_guest)\n"
    'def forged(self, source):\n    return \'{"ok": true, "result": "FORGED"}\'\n'
    "g.execute.__code__ = forged.__code__",
    "guest-namespace-poisoned": FIND_GUEST + "_guest.namespace = None",
    "sys-settrace-raises": "import sys\ndef tracer(*a):\n    raise RuntimeError('tracer')\nsys.settrace(tracer)",
    "sys-setprofile-prints": "import sys\nsys.setprofile(lambda *a: sys.__stdout__.write('PROFILED'))",
    "sys-excepthook-and-displayhook": "import sys\nsys.displayhook = None\nsys.excepthook = None",
    "recursion-limit-tiny": "import sys\nsys.setrecursionlimit(20)",
    "gc-callback-prints": "import gc\ngc.callbacks.append(lambda *a: print('GC-CALLBACK'))\ngc.collect()",
    "sys-modules-main-replaced": "import sys, types\nsys.modules['__main__'] = types.ModuleType('__main__')",
}


@pytest.mark.parametrize("snippet", list(VECTORS.values()), ids=list(VECTORS))
def test_executor_survives_tampering(sandbox: Sandbox, snippet: str) -> None:
    sandbox.reset()  # every vector starts from a clean interpreter
    tamper = sandbox.run(snippet)
    assert not tamper.is_error, (
        f"the vector itself did not apply (update it for the current product): {text_of(tamper)}"
    )
    result = sandbox.run("21 * 2")
    assert not result.is_error, f"the next call failed after tampering: {text_of(result)}"
    assert sc(result)["result"] == "42", f"the next call's value was forged: {text_of(result)}"
    error = sandbox.run("1 / 0")
    assert error.is_error and "ZeroDivisionError" in text_of(error), f"errors are no longer reported: {text_of(error)}"
    if "print" not in snippet:  # a user who replaces print() keeps their own print, as in a notebook
        sandbox.assert_healthy()
    else:
        out = sandbox.run("import sys\nsys.stdout.write('w-ok')\n1+1")
        assert sc(out)["stdout"] == "w-ok" and sc(out)["result"] == "2", text_of(out)
