"""Host command execution: every route must fail, and the `touch` marker must never appear."""

from __future__ import annotations

import pytest
from sec_support import JS_PRELUDE, Host, Sandbox, assert_error_or_reset, text_of


# Each snippet would run `{cmd}` (a `touch` in the host marker folder) if it reached the host.
# JS payloads are written as a *string* because that is what an attacker would have to smuggle.
def js_payload(cmd: str) -> str:
    return f"require('child_process').execSync({cmd!r})"


VECTORS = {
    "os-system": "import os\nos.system({cmd!r})",
    "os-popen": "import os\nos.popen({cmd!r}).read()",
    "subprocess-run": "import subprocess\nsubprocess.run({cmd!r}, shell=True)",
    "subprocess-popen-argv": "import subprocess, shlex\nsubprocess.Popen(shlex.split({cmd!r}))",
    "os-execv": "import os\nos.execv('/bin/sh', ['sh', '-c', {cmd!r}])",
    "os-posix-spawn": "import os\nos.posix_spawn('/bin/sh', ['sh', '-c', {cmd!r}], {{}})",
    "os-fork": "import os\npid = os.fork()\nif pid == 0:\n    os.system({cmd!r})",
    "ctypes-libc-system": "import ctypes\nctypes.CDLL(None).system({cmd!r}.encode())",
    "ctypes-emscripten_run_script": "import ctypes\nctypes.CDLL(None).emscripten_run_script({js!r}.encode())",
    "ctypes-emscripten_run_script_string": "import ctypes\n"
    "f = ctypes.CDLL(None).emscripten_run_script_string\nf.restype = ctypes.c_char_p\n"
    "f({js!r}.encode())",
    "function-constructor-via-jsproxy": "from pyodide.ffi import to_js\n"
    "p = to_js([]).constructor.constructor('return process')()\n"
    "p.mainModule.require('child_process').execSync({cmd!r})",
    "async-function-constructor": "import pyodide_js\n"
    "AsyncFunction = pyodide_js.loadPackage.constructor\n"
    'await AsyncFunction("const cp = await import(\'node:child_process\'); cp.execSync(" + repr({cmd!r}) + ")")()',
    "pyodide-code-run_js": "from pyodide.code import run_js\nrun_js({js!r})",
    "js-eval": "import js\njs.eval({js!r})",
    "js-Function": "import js\njs.Function('return process')()",
    "setTimeout-string": "import js, asyncio\njs.setTimeout({js!r}, 0)\nawait asyncio.sleep(0.05)",
    "module-ccall-run_script": JS_PRELUDE + "pyodide_js._module.ccall('emscripten_run_script', None, "
    "to_js(['string']), to_js([{js!r}]))",
    "module-emscripten_system": JS_PRELUDE + "m = pyodide_js._module\n"
    "ptr = m.stringToNewUTF8({cmd!r})\nm.__emscripten_system(ptr)",
    "module-asm-const": JS_PRELUDE + "m = pyodide_js._module\n"
    "ptr = m.stringToNewUTF8({js!r})\nm._emscripten_run_script(ptr)",
    "dynamic-import-via-loadScript": JS_PRELUDE + "api = pyodide_js._api\n"
    "await getattr(api, 'loadScript', pyodide_js._module.asyncLoad)('node:child_process')",
    "js-module-has-no-host-globals": "import pyodide_js\nimport js\n"
    "[getattr(js, n, None) for n in ('process', 'require', 'globalThis', 'module', 'Function', 'eval')]",
}


@pytest.mark.parametrize("snippet", list(VECTORS.values()), ids=list(VECTORS))
def test_command_execution_is_refused(sandbox: Sandbox, host: Host, snippet: str) -> None:
    name = "cmd"
    cmd = host.touch_cmd(name)
    code = snippet.format(cmd=cmd, js=js_payload(cmd))
    result = sandbox.run(code)
    assert not host.pwn_path(name).exists(), "a host command ran"
    if "getattr(js, n" in snippet:
        assert result.structured_content is not None
        assert result.structured_content["result"] == "[None, None, None, None, None, None]", text_of(result)
    else:
        assert_error_or_reset(result)
    sandbox.assert_healthy()


def test_os_system_keeps_interpreter_state(sandbox: Sandbox, host: Host) -> None:
    """`os.system` should fail like any OS error, not kill the interpreter and lose the user's variables."""
    sandbox.run("keep_me = 41")
    result = sandbox.run(f"import os\nos.system({host.touch_cmd('keep')!r})")
    assert not host.pwn_path("keep").exists()
    assert result.is_error or result.structured_content["result"] != "0"  # type: ignore[index]
    kept = sandbox.run("keep_me + 1")
    assert not kept.is_error and kept.structured_content["result"] == "42", (  # type: ignore[index]
        f"os.system reset the interpreter: {text_of(result)} / next: {text_of(kept)}"
    )
