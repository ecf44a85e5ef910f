"""HTTP requests made on behalf of sandboxed code, only to hosts the user allowed.

The sandbox has no network. When the server is started with `--allow-network`,
the worker's `fetch` (and so `pyodide.http.pyfetch`, `micropip`, `loadPackage`)
asks this broker instead; the broker checks every URL, redirects included,
against the allow-list and makes the request itself.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from .errors import MCPPyodideError
from .packages.source import load_httpx

MAX_RESPONSE_BYTES = 50 * 1024 * 1024
MAX_REDIRECTS = 5
TIMEOUT_S = 30.0
# The body is handed over decoded and whole, so these no longer describe it.
_DECODED_HEADERS = ("content-encoding", "content-length", "transfer-encoding")


class NetworkDenied(MCPPyodideError):
    """The URL is not on the allow-list (or not http/https)."""


@dataclass(frozen=True)
class NetworkPolicy:
    """Hosts code may reach: `example.com`, `*.example.com` (subdomains), `host:port`."""

    hosts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> NetworkPolicy:
        items = [part.strip().lower() for part in (text or "").replace(";", ",").split(",") if part.strip()]
        for item in items:
            if "/" in item or item.startswith("http"):
                raise ValueError(f"--allow-network takes host names (like pypi.org or *.example.com), not {item!r}")
        return cls(tuple(items))

    @property
    def enabled(self) -> bool:
        return bool(self.hosts)

    def allows(self, url: str) -> bool:
        try:
            self.check(url)
        except NetworkDenied:
            return False
        return True

    def check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise NetworkDenied(f"only http and https URLs can be fetched, not {url!r}")
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if not host:
            raise NetworkDenied(f"no host in {url!r}")
        for allowed in self.hosts:
            name, _, allowed_port = allowed.partition(":")
            if allowed_port and str(port) != allowed_port:
                continue
            if name == host or (name.startswith("*.") and host.endswith(name[1:])):
                return
        hint = "start the server with --allow-network " + (host if not _is_ip(host) else f"{host}:{port}")
        raise NetworkDenied(f"network access to {host} is not allowed ({hint})")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _client_module() -> Any:
    httpx = load_httpx()
    if httpx is None:
        raise NetworkDenied("no HTTP client is installed (httpx)")
    return httpx


async def fetch(policy: NetworkPolicy, request: dict[str, Any]) -> dict[str, Any]:
    """Perform one request described by the worker; returns status, headers and a base64 body."""
    httpx = _client_module()
    url = str(request.get("url", ""))
    method = str(request.get("method") or "GET").upper()
    headers = [(str(k), str(v)) for k, v in request.get("headers") or [] if str(k).lower() != "host"]
    body = base64.b64decode(request["body"]) if request.get("body") else None
    async with httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False, trust_env=True) as client:
        for _ in range(MAX_REDIRECTS + 1):
            policy.check(url)  # every hop, so a redirect cannot leave the allow-list
            async with client.stream(method, url, headers=headers, content=body) as response:
                location = response.headers.get("location")
                if response.status_code in (301, 302, 303, 307, 308) and location:
                    url = urljoin(url, location)
                    if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                        method, body = "GET", None
                    continue
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise NetworkDenied(f"the response from {url} is larger than {MAX_RESPONSE_BYTES} bytes")
                    chunks.append(chunk)
                return {
                    "url": url,
                    "status": response.status_code,
                    "statusText": response.reason_phrase,
                    "headers": [
                        [k, v]
                        for k, v in response.headers.items()
                        if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
                    ],
                    "body": base64.b64encode(b"".join(chunks)).decode("ascii"),
                }
    raise NetworkDenied(f"too many redirects (more than {MAX_REDIRECTS}) starting at {request.get('url')}")
