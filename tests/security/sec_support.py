"""Red-team helpers: real servers over stdio, host markers, a loopback listener, a secret.

Every hostile snippet runs through the real MCP client (tests/support.py). After
each test an autouse fixture checks that the host was not reached:

- no file appeared in (or vanished from) the marker folder on the host;
- the loopback listener opened by the test session saw zero connections;
- the secret set in the server's environment never appeared in any output.

The server stays module-scoped where a snippet can only hurt its own interpreter;
snippets that may kill the interpreter still share a server (the server itself must
survive them) unless they need a pristine one, which the `fresh_sandbox` fixture gives.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import mcp_types as types

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import support  # noqa: E402
from support import ServerHandle, text_of  # noqa: E402

ALLOW_ALL = str(TESTS / "policies" / "allow-all.json")
SECRET_NAME = "MCP_SEC_REDTEAM_SECRET"
SECRET = "s3cr3t-" + uuid.uuid4().hex
# Optional: point the suite at another checkout (e.g. a snapshot) while the product is being edited.
if os.environ.get("MCP_SEC_REPO"):
    support.REPO = Path(os.environ["MCP_SEC_REPO"]).resolve()


class Listener:
    """A TCP server on 127.0.0.1 that only counts connections (and answers nothing useful)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.closed = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            try:
                conn.settimeout(0.5)
                try:
                    conn.recv(65536)
                except OSError:
                    pass
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\nREACHED")
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.closed = True
        self.sock.close()


class Host:
    """Things on the host the sandbox must never touch."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mcp-sec-host-"))
        self.marker_text = "HOST-MARKER-" + uuid.uuid4().hex
        self.marker = self.dir / "marker.txt"
        self.marker.write_text(self.marker_text)
        self.listener = Listener()
        self.baseline = self.snapshot()

    def snapshot(self) -> set[str]:
        return {p.name for p in self.dir.iterdir()}

    def pwn_path(self, name: str) -> Path:
        return self.dir / f"pwned-{name}"

    def touch_cmd(self, name: str) -> str:
        return f"touch {self.pwn_path(name)}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.port}"

    def assert_untouched(self) -> None:
        now = self.snapshot()
        assert now == self.baseline, f"the host marker folder changed: {sorted(now ^ self.baseline)}"
        assert self.marker.read_text() == self.marker_text
        assert self.listener.connections == 0, f"the loopback listener saw {self.listener.connections} connection(s)"


class Sandbox:
    """A server plus checks that apply to every call: no secret, no host marker text."""

    def __init__(self, handle: ServerHandle, host: Host) -> None:
        self.handle = handle
        self.host = host

    def run(self, code: str, timeout_ms: int | None = None, wait_s: float = 120.0) -> types.CallToolResult:
        args: dict[str, Any] = {"code": code}
        if timeout_ms is not None:
            args["timeout"] = timeout_ms
        result = self.handle.call("pyodide_execute", args, timeout=wait_s)
        blob = text_of(result) + json.dumps(result.structured_content or {})
        assert SECRET not in blob, "the host environment secret leaked into the output"
        assert self.host.marker_text not in blob, "the host marker file's content leaked into the output"
        return result

    def value(self, code: str, timeout_ms: int | None = None) -> Any:
        result = self.run(code, timeout_ms)
        assert not result.is_error, text_of(result)
        assert result.structured_content is not None
        return result.structured_content["result"]

    def assert_healthy(self) -> None:
        """The next call works, with correct output and value."""
        result = self.run("print('still-alive')\n1+1", timeout_ms=20_000)
        assert not result.is_error, f"the next call failed: {text_of(result)}"
        sc = result.structured_content
        assert sc is not None
        assert sc["result"] == "2", text_of(result)
        assert sc["stdout"] == "still-alive\n", f"stdout of the next call was {sc['stdout']!r}"
        assert sc["stderr"] == "", f"stderr of the next call was {sc['stderr']!r}"

    def reset(self) -> None:
        self.handle.call("pyodide_reset")


def server_alive(sb: Sandbox) -> bool:
    try:
        return sb.handle.server_process().is_running()
    except LookupError:
        return False


def sc(result: types.CallToolResult) -> dict[str, Any]:
    assert result.structured_content is not None, text_of(result)
    return result.structured_content


# Lets a snippet build plain JS objects although `js` only exposes the timer functions.
JS_PRELUDE = """\
import pyodide_js
from pyodide.ffi import to_js, create_proxy
_Object = pyodide_js.FS.filesystems.constructor
def jsobj(**kw):
    return to_js(kw, dict_converter=_Object.fromEntries)
"""


def assert_error_or_reset(result: types.CallToolResult) -> None:
    """The call failed visibly; if the interpreter died, the message says state was reset."""
    assert result.is_error, f"expected an error, got: {text_of(result)}"
    data = sc(result)
    if data["state_reset"]:
        assert "reset" in text_of(result).lower(), text_of(result)


def REPO_ROOT() -> Path:
    return support.REPO
