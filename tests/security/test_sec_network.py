"""Network: no route out, not even to a loopback port we open ourselves (it must see zero connections)."""

from __future__ import annotations

import pytest
from sec_support import JS_PRELUDE, Host, Sandbox, text_of

VECTORS = {
    "socket-connect": "import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\n"
    "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\ns.recv(100)",
    "socket-create_connection": "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).recv(100)",
    "socket-udp-sendto": "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.sendto(b'x', ('127.0.0.1', {port}))\nraise RuntimeError('sendto returned')",
    "urllib-request": "import urllib.request\nurllib.request.urlopen('{url}/u', timeout=2).read()",
    "http-client": "import http.client\nc = http.client.HTTPConnection('127.0.0.1', {port}, timeout=2)\n"
    "c.request('GET', '/h')\nc.getresponse().read()",
    "pyodide-http-pyfetch": "from pyodide.http import pyfetch\nawait (await pyfetch('{url}/p')).string()",
    "pyodide-http-open_url": "from pyodide.http import open_url\nopen_url('{url}/o').read()",
    "js-fetch": "import js\nawait (await js.fetch('{url}/j')).text()",
    "pyodide_js-loadPackage-url": "import pyodide_js\nawait pyodide_js.loadPackage('{url}/x-1.0-py3-none-any.whl')\n"
    "raise RuntimeError('loadPackage returned without an error')",
    "loadPackage-url-errorCallback": JS_PRELUDE + "errs = []\n"
    "await pyodide_js.loadPackage('{url}/y-1.0-py3-none-any.whl', "
    "jsobj(errorCallback=create_proxy(errs.append), messageCallback=create_proxy(lambda m: None)))\n"
    "assert not errs, errs",
    "_api-loadBinaryFile-url": "import pyodide_js\nbytes((await pyodide_js._api.loadBinaryFile('{url}/b')).to_py())",
    "setCdnUrl-then-loadPackage": "import pyodide_js\npyodide_js._api.setCdnUrl('{url}/cdn/')\n"
    "await pyodide_js.loadPackage('regex')\nimport regex",
    "module-asyncLoad-url": "import pyodide_js\nawait pyodide_js._module.asyncLoad('{url}/a')",
    "websocket-ctor": "import js\njs.WebSocket.new('ws://127.0.0.1:{port}/')",
}


@pytest.mark.parametrize("snippet", list(VECTORS.values()), ids=list(VECTORS))
def test_network_is_unreachable(sandbox: Sandbox, host: Host, snippet: str) -> None:
    result = sandbox.run(snippet.format(port=host.listener.port, url=host.url), timeout_ms=10_000)
    text = text_of(result)
    assert "REACHED" not in text, "the sandbox got a reply from the host listener"
    assert result.is_error, f"expected the network call to fail: {text}"
    assert host.listener.connections == 0
    sandbox.assert_healthy()
