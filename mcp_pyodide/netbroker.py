"""HTTP requests made on behalf of sandboxed code, only to hosts the user allowed.

The sandbox has no network. When the server is started with `--allow-network`,
the worker's `fetch` (and so `pyodide.http.pyfetch`, `micropip`, `loadPackage`)
asks this broker instead; the broker checks every URL, redirects included,
against the allow-list and makes the request itself, with bounds (FetchBroker) on how
many requests and bytes one sandbox may have in flight. A call's requests end with it.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from .errors import MCPPyodideError
from .packages.source import load_httpx

# Bounds per sandbox. A guest can start any number of fetches; these keep what it costs the
# server (connections, memory, event-loop time) fixed however many it starts.
MAX_CONCURRENT = 8  # requests in progress at once
MAX_QUEUED = 32  # requests waiting for a slot; beyond this a request is refused at once
MAX_REQUEST_BYTES = 8 * 1024 * 1024  # one request body
MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # one response body, enforced while it streams in
MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024  # response bytes held for all of a sandbox's requests
MAX_REDIRECTS = 5
TIMEOUT_S = 30.0
OFFLOAD_BYTES = 256 * 1024  # base64 of bodies larger than this runs in a thread, off the event loop
# The body is handed over decoded and whole, so these no longer describe it.
_DECODED_HEADERS = ("content-encoding", "content-length", "transfer-encoding")
CANCELLED = "the request was cancelled: the call that made it ended, timed out or the interpreter was reset"


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


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[Any]] = weakref.WeakKeyDictionary()


async def shared_client() -> Any:
    """One HTTP client per event loop, shared by every request and sandbox on it.

    A client per request builds a TLS context (reading the CA bundle, ~100 ms of CPU) each
    time: hundreds of them blocked the event loop for seconds. The one client is built in a
    thread, so not even the first request stalls the loop.
    """
    loop = asyncio.get_running_loop()
    made = _clients.get(loop)
    if made is None or (made.done() and (made.exception() is not None or made.result().is_closed)):
        httpx = load_httpx()
        if httpx is None:
            raise NetworkDenied("no HTTP client is installed (httpx)")
        made = asyncio.ensure_future(
            asyncio.to_thread(
                httpx.AsyncClient,
                timeout=httpx.Timeout(TIMEOUT_S, connect=10.0),
                follow_redirects=False,
                trust_env=True,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            )
        )
        _clients[loop] = made
    return await asyncio.shield(made)


async def _b64decode(text: str) -> bytes:
    if len(text) > OFFLOAD_BYTES:
        return await asyncio.to_thread(base64.b64decode, text, validate=True)
    return base64.b64decode(text, validate=True)


async def _b64encode(data: bytes) -> str:
    if len(data) > OFFLOAD_BYTES:
        return (await asyncio.to_thread(base64.b64encode, data)).decode("ascii")
    return base64.b64encode(data).decode("ascii")


class FetchBroker:
    """The requests of one sandbox: bounded in number and bytes, cancellable as a group."""

    def __init__(self, policy: NetworkPolicy) -> None:
        self.policy = policy
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self._waiting = 0
        self._in_flight_bytes = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cancelled: set[asyncio.Task[Any]] = set()

    @property
    def active(self) -> int:
        """Requests running or waiting for a slot."""
        return len(self._tasks)

    def cancel_all(self) -> None:
        """End every request of this sandbox (its call ended, timed out, or it was reset)."""
        for task in self._tasks:
            if not task.done():
                self._cancelled.add(task)
                task.cancel()

    async def fetch(self, request: dict[str, Any]) -> dict[str, Any]:
        """Perform one request described by the worker; returns status, headers and a base64 body."""
        task = asyncio.current_task()
        assert task is not None
        if self._waiting >= MAX_QUEUED:
            raise NetworkDenied(
                f"too many network requests at once ({MAX_CONCURRENT} running, {MAX_QUEUED} waiting): "
                "await earlier requests before starting more"
            )
        self._tasks.add(task)
        try:
            self._waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
            try:
                return await self._perform(request)
            finally:
                self._slots.release()
        except asyncio.CancelledError:
            if task not in self._cancelled:
                raise
            self._cancelled.discard(task)
            task.uncancel()
            raise NetworkDenied(CANCELLED) from None
        finally:
            self._tasks.discard(task)

    async def _perform(self, request: dict[str, Any]) -> dict[str, Any]:
        client = await shared_client()
        url = str(request.get("url", ""))[:8192]
        method = str(request.get("method") or "GET").upper()[:16]
        raw_headers = request.get("headers") or []
        if not isinstance(raw_headers, list) or len(raw_headers) > 256:
            raise NetworkDenied("the request has too many headers")
        headers = [(str(k)[:1024], str(v)[:8192]) for k, v in raw_headers if str(k).lower() != "host"]
        encoded = request.get("body")
        body: bytes | None = None
        if encoded:
            if not isinstance(encoded, str) or len(encoded) > (MAX_REQUEST_BYTES + 2) // 3 * 4:
                raise NetworkDenied(f"the request body is larger than {MAX_REQUEST_BYTES} bytes")
            body = await _b64decode(encoded)
        for _ in range(MAX_REDIRECTS + 1):
            self.policy.check(url)  # every hop, so a redirect cannot leave the allow-list
            async with client.stream(method, url, headers=headers, content=body) as response:
                location = response.headers.get("location")
                if response.status_code in (301, 302, 303, 307, 308) and location:
                    url = urljoin(url, location)
                    if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                        method, body = "GET", None
                    continue
                data = await self._read_body(response, url)
                return {
                    "url": url,
                    "status": response.status_code,
                    "statusText": response.reason_phrase,
                    "headers": [[k, v] for k, v in response.headers.items() if k.lower() not in _DECODED_HEADERS],
                    "body": await _b64encode(data),
                }
        raise NetworkDenied(f"too many redirects (more than {MAX_REDIRECTS}) starting at {request.get('url')}")

    async def _read_body(self, response: Any, url: str) -> bytes:
        """The response body, refused as soon as it passes the per-response or per-sandbox limit."""
        chunks: list[bytes] = []
        held = 0
        try:
            async for chunk in response.aiter_bytes():
                held += len(chunk)
                self._in_flight_bytes += len(chunk)
                if held > MAX_RESPONSE_BYTES:
                    raise NetworkDenied(f"the response from {url} is larger than {MAX_RESPONSE_BYTES} bytes")
                if self._in_flight_bytes > MAX_IN_FLIGHT_BYTES:
                    raise NetworkDenied(
                        f"the sandbox's requests hold more than {MAX_IN_FLIGHT_BYTES} bytes of responses at once"
                    )
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            self._in_flight_bytes -= held
