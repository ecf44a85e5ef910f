"""Environment: the server's environment (with a secret in it) must never reach the sandbox.

Sandbox.run fails on the secret anywhere in the output; these snippets print every
environment the sandbox can name.
"""

from __future__ import annotations

import os

import pytest
from sec_support import JS_PRELUDE, Sandbox, text_of

VECTORS = {
    "os-environ": "import os\ndict(os.environ)",
    "os-getenv-secret": "import os\nos.getenv('MCP_SEC_REDTEAM_SECRET')",
    "proc-self-environ": "open('/proc/self/environ', 'rb').read()",
    "js-process-env": "import js\njs.process.env",
    "module-ENV": JS_PRELUDE + "_Object.entries(pyodide_js._module.ENV)",
    "api-config-env": JS_PRELUDE + "_Object.entries(pyodide_js._api.config.env)",
    "function-ctor-process-env": "from pyodide.ffi import to_js\nto_js([]).constructor.constructor('return process.env')()",
    "ctypes-getenv": "import ctypes\nf = ctypes.CDLL(None).getenv\nf.restype = ctypes.c_char_p\nf(b'MCP_SEC_REDTEAM_SECRET')",
}


@pytest.mark.parametrize("snippet", list(VECTORS.values()), ids=list(VECTORS))
def test_environment_does_not_leak(sandbox: Sandbox, snippet: str) -> None:
    result = sandbox.run(snippet)
    text = text_of(result)
    # The server's PATH and HOME are host facts as well; the sandbox has its own fake ones.
    assert os.environ.get("PATH", "\0") not in text
    assert f"'{os.environ.get('HOME', chr(0))}'" not in text
    sandbox.assert_healthy()


def test_node_gets_nothing_of_the_servers_environment_but_the_malloc_setting(sandbox: Sandbox) -> None:
    """Checked from outside, in /proc: the server has the secret, its Node process must not."""
    sandbox.run("1")
    (node,) = sandbox.handle.node_processes()
    assert node.environ() == {"MALLOC_TRIM_THRESHOLD_": "1048576"}
