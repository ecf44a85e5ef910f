"""What a run produced in the output folder, decided by the broker from the folder itself.

The sandbox's own lists (figures, written paths) are hints at most. Here: a bounded walk of the
folder (names and (inode, size, mtime_ns, ctime_ns), never following a symlink) after a run that
reported any change, compared with the folder as last seen (`Tracker`); only regular files that
differ from it and were modified at or after the run's start count, so changes made between calls
are never the run's. A run that reports no change is not walked: a guest that hides its writes
hides only its own files. A figure is one the guest named whose bytes start with the PNG
signature. Reads go through `read_inside`: every path component opened with O_NOFOLLOW relative
to its parent's descriptor, the size checked on the open file before reading, and never more
than cap + 1 bytes read.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("mcp_pyodide.sandbox")

MAX_WALK = 10_000  # entries looked at per walk
MAX_DEPTH = 16
MAX_RETURNED = 32  # figures and files listed in one result; the rest are counted
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO must never block the broker
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# File times come from the kernel's coarse clock (Linux), which can trail time.time_ns() by a
# tick: read that clock itself, so a file changed once the run started is never older than it.
# A change in the same tick just before the run (a few ms) may count as the run's own.
_COARSE = getattr(time, "CLOCK_REALTIME_COARSE", None)
CLOCK_SLACK_NS = 0 if _COARSE is not None else 20_000_000


def run_clock_ns() -> int:
    """A start time no file touched after it can predate."""
    if _COARSE is not None:
        return time.clock_gettime_ns(_COARSE)
    return time.time_ns() - CLOCK_SLACK_NS


Signature = tuple[int, int, int, int]  # (inode, size, mtime_ns, ctime_ns)


class Listing(dict[str, Signature]):
    """Relative path -> (inode, size, mtime_ns, ctime_ns); `complete` is False when the walk hit its bound."""

    complete = True


def scan(root: Path) -> Listing:
    """Regular files under `root` (symlinks and special files skipped), at most MAX_WALK entries."""
    found = Listing()
    seen = 0
    stack: list[tuple[str, int]] = [("", 0)]
    while stack:
        rel, depth = stack.pop()
        try:
            with os.scandir(root / rel if rel else root) as entries:
                for entry in entries:
                    seen += 1
                    if seen > MAX_WALK:
                        log.warning("the output folder has more than %d entries; the rest were not walked", MAX_WALK)
                        found.complete = False
                        return found
                    path = f"{rel}/{entry.name}" if rel else entry.name
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(info.st_mode) and depth < MAX_DEPTH:
                        stack.append((path, depth + 1))
                    elif stat.S_ISREG(info.st_mode):
                        found[path] = _signature(info)
        except OSError:
            continue  # vanished or unreadable: nothing to report from there
    return found


def _signature(info: os.stat_result) -> Signature:
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _fresh(sig: Signature, since_ns: int) -> bool:
    """Modified (or renamed: that moves ctime) no earlier than `since_ns`."""
    return max(sig[2], sig[3]) >= since_ns


def changed(before: Listing, after: Listing, since_ns: int = 0) -> list[str]:
    """Files created or changed (and touched at or after `since_ns`), oldest change first."""
    fresh = [path for path, sig in after.items() if before.get(path) != sig and _fresh(sig, since_ns)]
    return sorted(fresh, key=lambda path: (after[path][2], path))


def _open_inside(root: Path, rel: str) -> int:
    """An fd for root/rel opened without following any symlink on the way; raises OSError."""
    parts = [part for part in rel.split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        raise OSError(errno.EINVAL, "not a plain relative path", rel)
    fd = os.open(root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        return os.open(parts[-1], os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


def read_inside(root: Path, path: Path, cap: int) -> bytes | None:
    """The bytes of a regular file inside `root`, or None if it is not one or is larger than `cap`."""
    try:
        rel = path.relative_to(root).as_posix()
        fd = _open_inside(root, rel)
    except (OSError, ValueError):
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > cap:
            return None
        chunks: list[bytes] = []
        left = cap + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        return None if len(data) > cap else data
    except OSError:
        return None
    finally:
        os.close(fd)


def _is_png(root: Path, rel: str) -> bool:
    try:
        fd = _open_inside(root, rel)
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Produced:
    figures: list[Path]
    files: list[Path]
    not_returned: int


def _stat_inside(root: Path, rel: str) -> Signature | None:
    try:
        fd = _open_inside(root, rel)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        return _signature(info) if stat.S_ISREG(info.st_mode) else None
    finally:
        os.close(fd)


def produced(
    root: Path,
    before: Listing,
    after: Listing,
    figure_hints: Iterable[str],
    hints: Iterable[str] = (),
    since_ns: int = 0,
) -> Produced:
    """Sort what the run made into figures and files, at most MAX_RETURNED of them in all.

    Only files touched at or after `since_ns` count. When the folder is too big to walk whole,
    paths the guest named are checked one by one the same way.
    """
    hinted = set(figure_hints)
    figures: list[Path] = []
    files: list[Path] = []
    fresh = changed(before, after, since_ns)
    if not (before.complete and after.complete):
        known = set(fresh)
        for rel in list(dict.fromkeys([*hinted, *hints]))[: MAX_RETURNED * 4]:
            sig = _stat_inside(root, rel) if rel not in known else None
            if sig is not None and _fresh(sig, since_ns) and before.get(rel) != sig:
                fresh.append(rel)
                known.add(rel)
    for rel in fresh[:MAX_RETURNED]:
        path = root / rel
        if rel in hinted and rel.endswith(".png") and _is_png(root, rel):
            figures.append(path)
        else:
            files.append(path)
    return Produced(figures, sorted(files), max(0, len(fresh) - MAX_RETURNED))


NOTHING = Produced([], [], 0)


class Tracker:
    """The output folder as last seen by one sandbox, so a run that changed nothing costs no walk.

    `start()` before a run (walks only the first time), `finish()` after it. The folder is walked
    again only when the run reported a write, a removal or a figure; whatever it then finds is
    judged by the folder itself (`produced`), never by the report.
    """

    def __init__(self, root: Path, clock: Callable[[], int] = run_clock_ns) -> None:
        self.root = root
        self._clock = clock
        self._seen: Listing | None = None
        self._since_ns = 0

    async def start(self) -> None:
        if self._seen is None:
            self._seen = await asyncio.to_thread(scan, self.root)
        self._since_ns = self._clock()

    async def finish(self, figure_hints: list[str], hints: list[str], reported_change: bool) -> tuple[Produced, bool]:
        """What the run produced, and whether the folder's listing changed."""
        if not (reported_change or figure_hints or hints):
            return NOTHING, False
        before = self._seen if self._seen is not None else Listing()
        after = await asyncio.to_thread(scan, self.root)
        self._seen = after
        return produced(self.root, before, after, figure_hints, hints, self._since_ns), before != after
