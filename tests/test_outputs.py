"""The broker's view of the output folder: no symlinks followed, sizes checked first, bounded reads."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mcp_pyodide import _outputs

PNG = _outputs.PNG_SIGNATURE + b"rest"


def test_only_new_or_changed_regular_files_count(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("old")
    before = _outputs.scan(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "new.txt").write_text("new")
    (tmp_path / "old.txt").write_text("changed!")
    (tmp_path / "link").symlink_to("/etc/passwd")
    os.mkfifo(tmp_path / "fifo")
    after = _outputs.scan(tmp_path)
    assert sorted(_outputs.changed(before, after)) == ["old.txt", "sub/new.txt"]


def test_a_figure_needs_a_hint_a_png_name_and_png_bytes(tmp_path: Path) -> None:
    before = _outputs.scan(tmp_path)
    (tmp_path / "real.png").write_bytes(PNG)
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "unhinted.png").write_bytes(PNG)
    made = _outputs.produced(tmp_path, before, _outputs.scan(tmp_path), ["real.png", "text.png", "ghost.png"])
    assert made.figures == [tmp_path / "real.png"]
    assert sorted(p.name for p in made.files) == ["text.png", "unhinted.png"]


def test_the_number_returned_is_capped_and_the_rest_counted(tmp_path: Path) -> None:
    before = _outputs.scan(tmp_path)
    for i in range(_outputs.MAX_RETURNED + 10):
        (tmp_path / f"f{i}.txt").write_text("x")
    made = _outputs.produced(tmp_path, before, _outputs.scan(tmp_path), [])
    assert len(made.figures) + len(made.files) == _outputs.MAX_RETURNED and made.not_returned == 10


def test_the_walk_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_outputs, "MAX_WALK", 50)
    for i in range(200):
        (tmp_path / f"f{i}").write_text("x")
    assert len(_outputs.scan(tmp_path)) <= 50


def test_read_inside_checks_size_before_reading_and_never_reads_past_the_cap(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as f:
        f.write(PNG)
        f.truncate(700 * 2**20)  # sparse
    assert _outputs.read_inside(tmp_path, big, 1024) is None
    small = tmp_path / "small.png"
    small.write_bytes(PNG)
    assert _outputs.read_inside(tmp_path, small, 1024) == PNG


def test_read_inside_follows_no_symlink_anywhere_on_the_path(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(PNG)
    root = tmp_path / "root"
    root.mkdir()
    (root / "dir").symlink_to(outside)  # a directory swapped for a link after the walk
    (root / "file.png").symlink_to(outside / "secret.png")
    assert _outputs.read_inside(root, root / "dir" / "secret.png", 1024) is None
    assert _outputs.read_inside(root, root / "file.png", 1024) is None
    assert _outputs.read_inside(root, root / ".." / "outside" / "secret.png", 1024) is None
    assert _outputs.read_inside(root, outside / "secret.png", 1024) is None


def test_read_inside_does_not_block_on_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.png")
    assert _outputs.read_inside(tmp_path, tmp_path / "fifo.png", 1024) is None


def test_past_the_walk_bound_only_verified_hints_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(_outputs, "MAX_WALK", 5)
    for i in range(20):
        (tmp_path / f"old{i}.txt").write_text("x")
    before = _outputs.scan(tmp_path)
    assert not before.complete
    since = time.time_ns()
    (tmp_path / "zz-new.png").write_bytes(PNG)
    (tmp_path / "zz-link.png").symlink_to(tmp_path / "zz-new.png")
    after = _outputs.scan(tmp_path)
    hints = ["zz-new.png", "zz-link.png", "old3.txt", "../etc/passwd", "missing.png"]
    made = _outputs.produced(tmp_path, before, after, ["zz-new.png", "zz-link.png"], hints, since)
    assert tmp_path / "zz-new.png" in made.figures
    assert all(p.name not in ("zz-link.png", "old3.txt") for p in made.figures + made.files)


def test_the_tracker_walks_only_after_a_reported_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    walks: list[Path] = []
    real_scan = _outputs.scan
    monkeypatch.setattr(_outputs, "scan", lambda root: walks.append(root) or real_scan(root))
    starts = iter(range(1, 10))  # each run starts a second after the last (file times are now-ish)
    tracker = _outputs.Tracker(tmp_path, clock=lambda: _outputs.run_clock_ns() + next(starts) * 10**9)

    async def run(write: str | None, reported: bool) -> tuple[_outputs.Produced, bool]:
        await tracker.start()
        if write:
            (tmp_path / write).write_text("x")
            now = _outputs.run_clock_ns() + 10**9 * 3  # a file time inside this run
            os.utime(tmp_path / write, ns=(now, now))
        return await tracker.finish([], [], reported)

    assert asyncio.run(run(None, False)) == (_outputs.NOTHING, False)
    assert len(walks) == 1  # the first start only
    made, changed = asyncio.run(run("unreported.txt", False))
    assert made == _outputs.NOTHING and not changed and len(walks) == 1  # hidden: its own file only
    made, changed = asyncio.run(run("own.txt", True))
    assert [p.name for p in made.files] == ["own.txt"] and changed  # not the earlier unreported file


def test_files_older_than_the_run_are_not_its_own(tmp_path: Path) -> None:
    before = _outputs.scan(tmp_path)
    (tmp_path / "copied-in.txt").write_text("x")
    os.utime(tmp_path / "copied-in.txt", ns=(1, 1))
    since = _outputs.run_clock_ns() + 10**9  # as if the run started a second later
    made = _outputs.produced(tmp_path, before, _outputs.scan(tmp_path), [], since_ns=since)
    assert made == _outputs.NOTHING
