"""--allow-network: code reaches only the hosts the user allowed, through the broker."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from support import ALLOW_ALL, ServerHandle, offline_packages_dir, text_of


class Recorder(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        if self.path.startswith("/redirect-to/"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect-to/"))
            self.end_headers()
            return
        body = b'{"hello": "world"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve() -> tuple[http.server.HTTPServer, type[Recorder]]:
    handler = type("Handler", (Recorder,), {"hits": []})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


@pytest.fixture(scope="module")
def hosts() -> Iterator[dict[str, tuple[int, type[Recorder]]]]:
    allowed, allowed_hits = serve()
    other, other_hits = serve()
    yield {"allowed": (allowed.server_address[1], allowed_hits), "other": (other.server_address[1], other_hits)}
    allowed.shutdown()
    other.shutdown()


@pytest.fixture(scope="module")
def server(hosts: dict[str, tuple[int, type[Recorder]]]) -> Iterator[ServerHandle]:
    port = hosts["allowed"][0]
    handle = ServerHandle("--policy", ALLOW_ALL, "--allow-network", f"127.0.0.1:{port}").start()
    yield handle
    handle.close()


def fetch(server: ServerHandle, url: str) -> tuple[bool, str]:
    result = server.execute(f"from pyodide.http import pyfetch\nr = await pyfetch({url!r})\n(r.status, await r.json())")
    return (not result.is_error), text_of(result)


def test_an_allowed_host_is_reached_through_the_broker(server: ServerHandle, hosts: dict) -> None:
    port, hits = hosts["allowed"]
    ok, text = fetch(server, f"http://127.0.0.1:{port}/data")
    assert ok, text
    assert "(200, {'hello': 'world'})" in text
    assert "/data" in hits.hits


def test_other_hosts_and_ports_are_refused_and_never_contacted(server: ServerHandle, hosts: dict) -> None:
    other_port, other_hits = hosts["other"]
    allowed_port, _ = hosts["allowed"]
    for url in (
        f"http://127.0.0.1:{other_port}/x",
        f"http://localhost:{allowed_port}/x",
        f"http://127.0.0.1:{allowed_port}@127.0.0.1:{other_port}/x",
        f"http://[::1]:{other_port}/x",
        f"http://0.0.0.0:{other_port}/x",
        "http://example.com/",
    ):
        ok, text = fetch(server, url)
        assert not ok, f"{url} was fetched: {text}"
        assert "not allowed" in text
    assert other_hits.hits == []


def test_a_redirect_cannot_leave_the_allow_list(server: ServerHandle, hosts: dict) -> None:
    allowed_port, _ = hosts["allowed"]
    other_port, other_hits = hosts["other"]
    ok, text = fetch(server, f"http://127.0.0.1:{allowed_port}/redirect-to/http://127.0.0.1:{other_port}/secret")
    assert not ok and "not allowed" in text
    assert other_hits.hits == []


def test_without_allow_network_nothing_is_fetched(hosts: dict) -> None:
    port, hits = hosts["allowed"]
    before = len(hits.hits)
    handle = ServerHandle("--policy", ALLOW_ALL).start()
    try:
        ok, text = fetch(handle, f"http://127.0.0.1:{port}/x")
        assert not ok and "network access is disabled" in text and "--allow-network" in text
    finally:
        handle.close()
    assert len(hits.hits) == before


def test_pure_python_wheels_install_from_pypi_when_allowed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    handle = ServerHandle(
        "--policy",
        ALLOW_ALL,
        "--package-source",
        str(offline_packages_dir()),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--allow-network",
        "pypi.org,files.pythonhosted.org",
    ).start()
    try:
        result = handle.call("pyodide_install-packages", {"package": "tabulate"})
        assert not result.is_error, text_of(result)
        [package] = result.structured_content["packages"]  # type: ignore[index]
        assert package["installed"] is True and package["version"]
        used = handle.execute("from tabulate import tabulate\nprint(tabulate([[1, 2]]))")
        assert not used.is_error and "1" in used.structured_content["stdout"]  # type: ignore[index]
    finally:
        handle.close()


def test_pypi_packages_are_refused_naming_the_option_when_pypi_is_not_allowed(server: ServerHandle) -> None:
    result = server.call("pyodide_install-packages", {"package": "tabulate"})
    assert result.is_error
    assert "--allow-network pypi.org,files.pythonhosted.org" in text_of(result)
