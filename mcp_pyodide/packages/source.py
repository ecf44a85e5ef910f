"""Where package files come from: a local folder or an http(s) base URL.

Sources only copy bytes into a destination path; verification and placement
belong to the cache, so a source never has to be trusted.
"""

from __future__ import annotations

import importlib
import os
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread

from ..errors import MCPPyodideError

__all__ = [
    "DEFAULT_PACKAGE_SOURCE",
    "DEFAULT_TIMEOUT",
    "FolderSource",
    "HttpSource",
    "PackageSource",
    "PackageSourceError",
    "open_source",
]

DEFAULT_PACKAGE_SOURCE = "https://cdn.jsdelivr.net/pyodide/v0.27.7/full/"
DEFAULT_TIMEOUT = 60.0
"""Seconds allowed for connecting and for each read (not the whole transfer)."""

_CHUNK = 1 << 18

BytesCallback = Callable[[int, int | None], None]
"""Called as ``(bytes_written_so_far, total_bytes_or_None)`` while copying."""


class PackageSourceError(MCPPyodideError):
    """A file could not be obtained; the message names the file and the source."""

    def __init__(self, file_name: str, source: str, reason: str) -> None:
        self.file_name = file_name
        self.source = source
        self.reason = reason
        super().__init__(f"cannot fetch {file_name} from {source}: {reason}")


def _check_file_name(file_name: str, source: str) -> None:
    """Lock file names are plain names; refuse anything that could escape a folder."""
    if not file_name or file_name in {".", ".."} or "/" in file_name or "\\" in file_name or "\0" in file_name:
        raise PackageSourceError(file_name, source, "not a plain file name")


class PackageSource(ABC):
    """Abstract source of package files named by the lock file."""

    @property
    @abstractmethod
    def description(self) -> str:
        """Human-readable location, used in every error message."""

    @abstractmethod
    async def fetch(self, file_name: str, dest: Path, on_bytes: BytesCallback | None = None) -> None:
        """Write the file's bytes to ``dest`` (overwriting it) or raise PackageSourceError."""

    def __str__(self) -> str:
        return self.description


class FolderSource(PackageSource):
    """A directory holding package files side by side (e.g. an offline mirror)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    @property
    def description(self) -> str:
        return f"folder {self.root}"

    async def fetch(self, file_name: str, dest: Path, on_bytes: BytesCallback | None = None) -> None:
        _check_file_name(file_name, self.description)
        src = self.root / file_name
        if not self.root.is_dir():
            raise PackageSourceError(file_name, self.description, "folder does not exist")
        report = _thread_reporter(on_bytes)

        def copy() -> None:
            try:
                with open(src, "rb") as fin, open(dest, "wb") as fout:
                    total = os.fstat(fin.fileno()).st_size
                    done = 0
                    while chunk := fin.read(_CHUNK * 4):
                        fout.write(chunk)
                        done += len(chunk)
                        report(done, total)
            except FileNotFoundError as exc:
                raise PackageSourceError(file_name, self.description, "file not found") from exc
            except OSError as exc:
                raise PackageSourceError(file_name, self.description, str(exc)) from exc

        await anyio.to_thread.run_sync(copy)


def _thread_reporter(on_bytes: BytesCallback | None) -> BytesCallback:
    """Run the progress callback on the event loop thread, not in the worker."""

    def report(done: int, total: int | None) -> None:
        if on_bytes is not None:
            anyio.from_thread.run_sync(on_bytes, done, total)

    return report


def load_httpx() -> Any | None:
    """The httpx module (or its ``httpx2`` successor that mcp installs), if importable."""
    for name in ("httpx", "httpx2"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


class HttpSource(PackageSource):
    """A base URL such as the jsDelivr Pyodide CDN.

    Uses httpx's async client when httpx (or httpx2) is importable, else
    urllib in a worker thread, so no extra dependency is ever required.
    ``backend`` forces one ("httpx" or "urllib"), mainly for tests.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = DEFAULT_TIMEOUT,
        backend: str | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout = timeout
        if backend not in {None, "httpx", "urllib"}:
            raise ValueError(f"unknown HTTP backend {backend!r}")
        self._httpx = load_httpx() if backend != "urllib" else None
        if backend == "httpx" and self._httpx is None:
            raise ValueError("HTTP backend 'httpx' requested but neither httpx nor httpx2 is installed")

    @property
    def backend(self) -> str:
        """Which HTTP implementation is in use."""
        return "httpx" if self._httpx is not None else "urllib"

    @property
    def description(self) -> str:
        return f"URL {self.base_url}"

    def url_for(self, file_name: str) -> str:
        """Absolute URL of one package file."""
        return self.base_url + urllib.parse.quote(file_name)

    async def fetch(self, file_name: str, dest: Path, on_bytes: BytesCallback | None = None) -> None:
        _check_file_name(file_name, self.description)
        if self._httpx is not None:
            await self._fetch_httpx(file_name, dest, on_bytes)
        else:
            await self._fetch_urllib(file_name, dest, on_bytes)

    async def _fetch_httpx(self, file_name: str, dest: Path, on_bytes: BytesCallback | None) -> None:
        httpx = self._httpx
        assert httpx is not None
        url = self.url_for(file_name)
        try:
            async with (
                httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), follow_redirects=True) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise PackageSourceError(
                        file_name,
                        self.description,
                        f"HTTP {response.status_code} for {url}",
                    )
                length = response.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
                done = 0
                async with await anyio.open_file(dest, "wb") as fout:
                    async for chunk in response.aiter_bytes(_CHUNK):
                        await fout.write(chunk)
                        done += len(chunk)
                        if on_bytes is not None:
                            on_bytes(done, total)
        except PackageSourceError:
            raise
        except httpx.TimeoutException as exc:
            raise PackageSourceError(
                file_name,
                self.description,
                f"timed out after {self.timeout:g}s ({url})",
            ) from exc
        except (httpx.HTTPError, OSError) as exc:
            raise PackageSourceError(file_name, self.description, f"{type(exc).__name__}: {exc} ({url})") from exc

    async def _fetch_urllib(self, file_name: str, dest: Path, on_bytes: BytesCallback | None) -> None:
        url = self.url_for(file_name)
        report = _thread_reporter(on_bytes)

        def download() -> None:
            request = urllib.request.Request(url, headers={"User-Agent": "mcp-pyodide"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    done = 0
                    with open(dest, "wb") as fout:
                        while chunk := response.read(_CHUNK):
                            fout.write(chunk)
                            done += len(chunk)
                            report(done, total)
            except urllib.error.HTTPError as exc:
                raise PackageSourceError(file_name, self.description, f"HTTP {exc.code} for {url}") from exc
            except TimeoutError as exc:
                raise PackageSourceError(
                    file_name,
                    self.description,
                    f"timed out after {self.timeout:g}s ({url})",
                ) from exc
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise PackageSourceError(file_name, self.description, f"{reason} ({url})") from exc

        await anyio.to_thread.run_sync(download)


def open_source(spec: str | Path | PackageSource | None = None) -> PackageSource:
    """Turn a ``--package-source`` value into a source.

    ``None`` means the official CDN; ``http(s)://`` is a URL; ``file://`` and
    anything else is a folder path (checked when a file is fetched, so a
    missing folder only matters if something is actually missing from cache).
    """
    if isinstance(spec, PackageSource):
        return spec
    if spec is None:
        return HttpSource(DEFAULT_PACKAGE_SOURCE)
    if isinstance(spec, Path):
        return FolderSource(spec)
    lowered = spec.lower()
    if lowered.startswith(("http://", "https://")):
        return HttpSource(spec)
    if lowered.startswith("file://"):
        return FolderSource(urllib.request.url2pathname(urllib.parse.urlsplit(spec).path))
    return FolderSource(spec)
