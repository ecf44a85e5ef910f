"""``mcp-pyodide fetch-packages``: fill the package cache ahead of time.

Useful for offline machines, CI and container images: after this runs, the
server can load these packages without any network access.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

import anyio

from .broker import EnsureResult, PackageBroker
from .cache import IntegrityError, default_cache_dir
from .lock import LockError, PyodideLock, UnknownPackageError, find_lock_file
from .source import DEFAULT_PACKAGE_SOURCE, PackageSourceError
from .trees import ensure_tree, trees_dir

__all__ = ["default_lock_path", "fetch_packages_main"]


def default_lock_path() -> Path:
    """Lock file used when ``--lock`` is not given (hook for the main CLI)."""
    return find_lock_file(None)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-pyodide fetch-packages",
        description="Download and verify Pyodide package files into the local cache.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="package names (dependencies are added)",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="every package in the lock file (except unvendored '-tests' bundles)",
    )
    parser.add_argument(
        "--package-source",
        default=DEFAULT_PACKAGE_SOURCE,
        metavar="X",
        help=f"folder or http(s) URL holding the package files (default: {DEFAULT_PACKAGE_SOURCE})",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        metavar="D",
        help="cache directory (default: $PYODIDE_CACHE_DIR or the per-user cache)",
    )
    parser.add_argument(
        "--lock",
        type=Path,
        default=None,
        metavar="PATH",
        help="pyodide-lock.json to use",
    )
    return parser


def _all_names(lock: PyodideLock) -> list[str]:
    """Everything except test bundles split off a package (rarely wanted, large)."""
    names: list[str] = []
    for key in lock.packages:
        parent = lock.packages.get(key.removesuffix("-tests")) if key.endswith("-tests") else None
        if parent is not None and parent.unvendored_tests:
            continue
        names.append(key)
    return names


class _ProgressBar:
    """Single-line bar on a terminal, one line per settled file otherwise."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last_draw = 0.0
        self._drawn = False
        self._started = False

    def __call__(self, done: int, total: int, message: str) -> None:
        if self.tty:
            now = time.monotonic()
            if done < total and now - self._last_draw < 0.05:
                return
            self._last_draw = now
            filled = self.WIDTH * done // total if total else self.WIDTH
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            columns = shutil.get_terminal_size((80, 20)).columns
            line = f"[{bar}] {done}/{total} {message}"[: max(columns - 1, 10)]
            self.stream.write("\r\x1b[K" + line)
            self._drawn = True
        elif not self._started or message.startswith(("fetched ", "verified ", "failed ")):
            self.stream.write(f"[{done}/{total}] {message}\n")
        self._started = True
        self.stream.flush()

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def fetch_packages_main(argv: list[str]) -> int:
    """Run ``fetch-packages``; returns 0 on success, 1 on fetch/verification failure, 2 on bad usage."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not args.names and not args.all:
        parser.print_usage(sys.stderr)
        print("error: give package names or --all", file=sys.stderr)
        return 2
    try:
        lock_path: Path = args.lock if args.lock is not None else default_lock_path()
        lock = PyodideLock.from_path(lock_path)
        broker = PackageBroker(lock, args.package_source, args.cache_dir or default_cache_dir())
    except (LockError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    names = _all_names(lock) if args.all else list(args.names)
    bar = _ProgressBar(sys.stderr)

    async def run() -> EnsureResult:
        return await broker.ensure(names, progress=bar)

    try:
        result = anyio.run(run)
    except UnknownPackageError as exc:
        bar.finish()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (IntegrityError, PackageSourceError, OSError) as exc:
        bar.finish()
        print(f"error: {exc}", file=sys.stderr)
        for note in getattr(exc, "__notes__", []):
            print(f"  {note}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bar.finish()
        print("interrupted", file=sys.stderr)
        return 130
    bar.finish()

    for pkg in result.packages:
        verb = "fetched " if pkg.status == "fetched" else "verified"
        print(f"{verb} {pkg.name} {pkg.version} ({pkg.file_name})")
    print(
        f"{len(result.packages)} package(s) ready in {broker.cache_dir}: "
        f"{len(result.fetched)} fetched, {len(result.cached)} already cached"
    )
    # Unpacked now too, so the first interpreter that loads them only links them (trees.py).
    entries = [(entry, pkg.path) for pkg in result.packages if (entry := lock.get(pkg.name)) is not None]
    unpacked = sum(ensure_tree(entry, path) is not None for entry, path in entries)
    print(f"{unpacked} of them unpacked for interpreters to link, in {trees_dir()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(fetch_packages_main(sys.argv[1:]))
