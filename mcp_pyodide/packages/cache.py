"""On-disk package cache: nothing enters it without matching the lock's sha256.

Files are downloaded to a temp file in the cache directory, hashed, and only
then atomically renamed into place, so a reader (the Node sandbox) can never
observe a partial or unverified file, even across processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from .._paths import cache_root
from ..errors import MCPPyodideError
from .lock import LockEntry

__all__ = ["IntegrityError", "PackageCache", "default_cache_dir", "sha256_file"]


def default_cache_dir() -> Path:
    """Per-user package cache: ``$PYODIDE_CACHE_DIR``, else ``packages`` in the server's cache root."""
    override = os.environ.get("PYODIDE_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    return cache_root() / "packages"


class IntegrityError(MCPPyodideError):
    """A package file's sha256 does not match the lock; the file was deleted."""

    def __init__(self, file_name: str, expected: str, actual: str, source: str | None = None) -> None:
        self.file_name = file_name
        self.expected = expected
        self.actual = actual
        self.source = source
        origin = f" from {source}" if source else ""
        super().__init__(
            f"sha256 mismatch for {file_name}{origin}: expected {expected}, got {actual}; the file was discarded"
        )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed (package files reach tens of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Stamp:
    size: int
    mtime_ns: int
    sha256: str


Writer = Callable[[Path], Awaitable[None]]
"""Fills the given temp path with the file's bytes (a source's fetch)."""


class PackageCache:
    """A flat directory of verified package files, named as in the lock."""

    TEMP_PREFIX = ".partial-"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        # file name -> (size, mtime) of a copy we already hashed, so repeated
        # ensure() calls do not rehash megabytes every time.
        self._verified: dict[str, _Stamp] = {}
        self._locks: dict[str, anyio.Lock] = {}

    def path_for(self, entry: LockEntry) -> Path:
        """Where the verified file lives (whether or not it exists yet)."""
        return self.root / entry.file_name

    def lock_for(self, file_name: str) -> anyio.Lock:
        """One lock per file, so concurrent ensure() calls fetch it only once."""
        lock = self._locks.get(file_name)
        if lock is None:
            lock = self._locks[file_name] = anyio.Lock()
        return lock

    def _check_sync(self, entry: LockEntry) -> str:
        """'ok', 'missing' or 'corrupt' (a corrupt copy is deleted)."""
        path = self.path_for(entry)
        try:
            st = path.stat()
        except FileNotFoundError:
            self._verified.pop(entry.file_name, None)
            return "missing"
        stamp = self._verified.get(entry.file_name)
        if (
            stamp is not None
            and stamp.size == st.st_size
            and stamp.mtime_ns == st.st_mtime_ns
            and stamp.sha256 == entry.sha256.lower()
        ):
            return "ok"
        actual = sha256_file(path)
        if actual == entry.sha256.lower():
            self._verified[entry.file_name] = _Stamp(st.st_size, st.st_mtime_ns, actual)
            return "ok"
        self._verified.pop(entry.file_name, None)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return "corrupt"

    async def check(self, entry: LockEntry) -> str:
        """Verify a cached copy: ``"ok"``, ``"missing"``, or ``"corrupt"`` (now removed)."""
        return await anyio.to_thread.run_sync(self._check_sync, entry)

    async def store(self, entry: LockEntry, writer: Writer, source: str | None = None) -> Path:
        """Fill a temp file via ``writer``, verify it, then rename it into place.

        On a hash mismatch the temp file is deleted and :class:`IntegrityError`
        raised; on any other failure the temp file is deleted too.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=self.TEMP_PREFIX, suffix=".tmp", dir=self.root)
        os.close(fd)
        tmp = Path(tmp_name)
        final = self.path_for(entry)
        try:
            await writer(tmp)
            actual = await anyio.to_thread.run_sync(sha256_file, tmp)
            expected = entry.sha256.lower()
            if actual != expected:
                raise IntegrityError(entry.file_name, expected, actual, source)
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        st = final.stat()
        self._verified[entry.file_name] = _Stamp(st.st_size, st.st_mtime_ns, expected)
        return final
