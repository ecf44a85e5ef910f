"""Network: no route out, not even to a loopback port we open ourselves (it must see zero connections)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sec_support import ALLOW_ALL, JS_PRELUDE, Host, Sandbox, ServerHandle, sc, text_of
from slow_http import SlowServer

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


# -- With --allow-network: a flood of requests to a slow allowed host stays bounded ----------------

SLOW_DELAY_S = 8.0


@pytest.fixture(scope="module")
def slow_host() -> Iterator[SlowServer]:
    server = SlowServer(delay_s=SLOW_DELAY_S)
    yield server
    server.close()


@pytest.fixture(scope="module")
def networked(slow_host: SlowServer) -> Iterator[ServerHandle]:
    handle = ServerHandle("--policy", ALLOW_ALL, "--allow-network", f"127.0.0.1:{slow_host.port}").start()
    yield handle
    handle.close()


def flood(url: str, count: int, then: str) -> str:
    return f"import js, asyncio\npending = [js.fetch('{url}/f' + str(i)) for i in range({count})]\n{then}"


def host_tool_latency(handle: ServerHandle) -> float:
    started = time.monotonic()
    result = handle.call("pyodide_list-mounted-directory", {"mountName": "output"}, timeout=30)
    assert not result.is_error, text_of(result)
    return time.monotonic() - started


def test_a_fetch_flood_is_bounded_and_the_server_stays_responsive(
    networked: ServerHandle, slow_host: SlowServer
) -> None:
    server = networked.server_process()
    networked.execute("1")
    rss_before = server.memory_info().rss
    baseline = max(host_tool_latency(networked) for _ in range(3))
    call = networked.run_async_call(
        "pyodide_execute", {"code": flood(slow_host.url, 200, "await asyncio.sleep(3)\n'flooded'"), "timeout": 20_000}
    )
    deadline = time.monotonic() + 10
    while slow_host.active < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    latencies = [host_tool_latency(networked) for _ in range(5)]
    rss_during = server.memory_info().rss
    result = call.result(60)
    assert not result.is_error, text_of(result)
    assert slow_host.peak <= 8, f"{slow_host.peak} upstream connections were open at once"
    assert max(latencies) < baseline + 0.5, f"a host-side tool waited {max(latencies):.2f} s during the flood"
    grown = (rss_during - rss_before) / 2**20
    assert grown < 40, f"the server grew by {grown:.0f} MiB during the flood"
    assert slow_host.wait_idle(3.0), f"{slow_host.active} upstream requests outlived the call that made them"


def test_requests_end_when_their_call_returns(networked: ServerHandle, slow_host: SlowServer) -> None:
    result = networked.execute(flood(slow_host.url, 20, "'returned at once'"))
    assert not result.is_error, text_of(result)
    assert slow_host.wait_idle(3.0), f"{slow_host.active} upstream requests outlived their call"


def test_requests_end_when_their_call_times_out(networked: ServerHandle, slow_host: SlowServer) -> None:
    code = flood(
        slow_host.url, 20, "import time\nt = time.time()\nwhile time.time() - t < 30:\n    await asyncio.sleep(0.05)"
    )
    result = networked.execute(code, timeout_ms=1_500)
    assert result.is_error and "timed out" in text_of(result), text_of(result)
    assert slow_host.wait_idle(3.0), f"{slow_host.active} upstream requests outlived a timed-out call"
    after = networked.execute("'next call fine'")
    assert not after.is_error and "next call fine" in text_of(after)


def test_requests_beyond_the_queue_fail_with_a_clear_error(networked: ServerHandle, slow_host: SlowServer) -> None:
    code = flood(
        slow_host.url,
        60,
        "done, _ = await asyncio.wait([asyncio.ensure_future(p) for p in pending], timeout=2)\n"
        "len(done), sorted({str(f.exception()).split(' failed: ')[-1] for f in done})",
    )
    result = networked.execute(code.replace(f"{slow_host.url}/f", f"{slow_host.url}/q"), timeout_ms=30_000)
    assert not result.is_error, text_of(result)
    assert "too many network requests at once" in text_of(result)
    assert sc(result)["result"].startswith("(20, "), "exactly the requests beyond 8 running and 32 waiting fail"
