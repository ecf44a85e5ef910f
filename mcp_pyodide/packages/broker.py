"""Make Pyodide packages available in the cache, fetching only what is missing.

The Node sandbox never touches the network; it loads package files from the
cache directory that this broker fills and verifies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio

from .cache import PackageCache, default_cache_dir
from .lock import LockEntry, PyodideLock
from .source import DEFAULT_PACKAGE_SOURCE, PackageSource, open_source

__all__ = ["AvailablePackage", "EnsureResult", "PackageBroker", "ProgressCallback"]

ProgressCallback = Callable[[int, int, str], None]
"""``(done_files, total_files, message)``.

Called once per file when it is settled (``done`` increases) and repeatedly
while a file downloads (``done`` unchanged, message shows bytes), so a UI can
stay lively without knowing sizes in advance (the lock has no sizes).
"""

Status = Literal["cached", "fetched"]


@dataclass(frozen=True)
class AvailablePackage:
    """A package whose verified file is now in the cache."""

    name: str
    version: str
    file_name: str
    path: Path
    status: Status
    """``"cached"``: was already present and verified; ``"fetched"``: just downloaded."""


@dataclass(frozen=True)
class EnsureResult:
    """Outcome of :meth:`PackageBroker.ensure`, in dependency order."""

    packages: tuple[AvailablePackage, ...]

    @property
    def names(self) -> list[str]:
        """Package names, dependencies first (the order to load them in)."""
        return [p.name for p in self.packages]

    @property
    def fetched(self) -> list[AvailablePackage]:
        """Packages downloaded by this call."""
        return [p for p in self.packages if p.status == "fetched"]

    @property
    def cached(self) -> list[AvailablePackage]:
        """Packages that were already in the cache."""
        return [p for p in self.packages if p.status == "cached"]


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


class PackageBroker:
    """Resolve package names against the lock and fill the cache from a source.

    ``lock`` is a path to ``pyodide-lock.json`` (or an already loaded lock);
    ``source`` a folder, an http(s) URL or a :class:`PackageSource`;
    ``cache_dir`` defaults to :func:`default_cache_dir`. Use one broker per
    event loop: its per-file locks are what makes concurrent ``ensure`` calls
    fetch a file only once.
    """

    def __init__(
        self,
        lock_path: str | Path | PyodideLock,
        source: str | Path | PackageSource | None = DEFAULT_PACKAGE_SOURCE,
        cache_dir: str | Path | None = None,
        *,
        max_concurrent_fetches: int = 4,
    ) -> None:
        self.lock = lock_path if isinstance(lock_path, PyodideLock) else PyodideLock.from_path(lock_path)
        self.source = open_source(source)
        self.cache = PackageCache(cache_dir if cache_dir is not None else default_cache_dir())
        self._limiter = anyio.CapacityLimiter(max_concurrent_fetches)

    @property
    def cache_dir(self) -> Path:
        """Directory holding verified package files (what the sandbox reads)."""
        return self.cache.root

    def resolve(self, names: Iterable[str]) -> list[LockEntry]:
        """Lock entries for ``names`` and their dependencies (see PyodideLock.resolve)."""
        return self.lock.resolve(names)

    async def ensure_imports(
        self, import_names: Iterable[str], progress: ProgressCallback | None = None
    ) -> EnsureResult:
        """Like :meth:`ensure` for the packages providing these imports (unknown imports ignored)."""
        return await self.ensure(self.lock.packages_for_imports(import_names), progress)

    async def ensure(self, names: Iterable[str], progress: ProgressCallback | None = None) -> EnsureResult:
        """Make ``names`` and all their dependencies available in the cache.

        Raises :class:`~.lock.UnknownPackageError` before touching anything if
        a name is unknown. Files are fetched concurrently; if some fail, the
        others still complete and the first failure (in dependency order) is
        raised — :class:`~.cache.IntegrityError` or
        :class:`~.source.PackageSourceError` — with the rest in its notes.
        """
        entries = self.lock.resolve(names)
        total = len(entries)
        done = 0
        statuses: dict[str, Status] = {}
        errors: dict[str, BaseException] = {}

        def report(message: str, advance: bool = False) -> None:
            nonlocal done
            if advance:
                done += 1
            if progress is not None:
                progress(done, total, message)

        async def settle(entry: LockEntry) -> None:
            try:
                statuses[entry.key] = await self._ensure_one(entry, report)
            except Exception as exc:  # noqa: BLE001 - collected, re-raised below in a stable order
                errors[entry.key] = exc
                report(f"failed {entry.file_name}: {exc}", advance=True)

        report(f"{total} package file(s) to check in {self.cache_dir}")
        async with anyio.create_task_group() as tg:
            for entry in entries:
                tg.start_soon(settle, entry)

        if errors:
            ordered = [errors[e.key] for e in entries if e.key in errors]
            first = ordered[0]
            for other in ordered[1:]:
                first.add_note(f"also failed: {other}")
            raise first

        return EnsureResult(
            tuple(
                AvailablePackage(
                    name=e.key,
                    version=e.version,
                    file_name=e.file_name,
                    path=self.cache.path_for(e),
                    status=statuses[e.key],
                )
                for e in entries
            )
        )

    async def _ensure_one(self, entry: LockEntry, report: Callable[[str, bool], None]) -> Status:
        async with self.cache.lock_for(entry.file_name):
            state = await self.cache.check(entry)
            if state == "ok":
                report(f"verified {entry.file_name} (cached)", True)
                return "cached"
            if state == "corrupt":
                report(
                    f"cached {entry.file_name} failed verification; removed, refetching",
                    False,
                )

            def on_bytes(got: int, size: int | None) -> None:
                of = f" / {_mb(size)}" if size else ""
                report(f"fetching {entry.file_name}: {_mb(got)}{of}", False)

            async def write(dest: Path) -> None:
                await self.source.fetch(entry.file_name, dest, on_bytes)

            async with self._limiter:
                report(f"fetching {entry.file_name} from {self.source.description}", False)
                await self.cache.store(entry, write, self.source.description)
            report(f"fetched {entry.file_name}", True)
            return "fetched"
