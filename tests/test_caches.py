"""The shared caches: keyed by everything they were made from, and only well-formed data is kept."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from mcp_pyodide import _caches
from mcp_pyodide._runtime_files import host_dir


def test_the_snapshot_key_changes_with_our_own_runtime_code(tmp_path: Path) -> None:
    copy = tmp_path / "node_runtime"
    shutil.copytree(host_dir(), copy, ignore=shutil.ignore_patterns("node_modules"))
    before = _caches.snapshot_file(copy, 24)
    (copy / "worker.mjs").write_text((copy / "worker.mjs").read_text() + "\n// changed\n")
    after = _caches.snapshot_file(copy, 24)
    assert before != after and before.parent == after.parent
    assert _caches.snapshot_file(copy, 20) != after


def test_the_snapshot_key_changes_with_the_guest_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _caches.code_digest(host_dir())
    real = _caches.guest_modules()
    monkeypatch.setattr(_caches, "guest_modules", lambda: {**real, "mcp_guest_executor": "changed = 1"})
    assert _caches.code_digest(host_dir()) != before


def test_saving_a_snapshot_prunes_all_but_the_newest_three(tmp_path: Path) -> None:
    folder = tmp_path / "snapshots"
    folder.mkdir()
    now = time.time()  # save_snapshot prunes against the real clock; every age here is far from it
    for age, name in enumerate(["a.bin", "b.bin", "c.bin", "d.bin"], start=1):
        (folder / name).write_bytes(b"old")
        os.utime(folder / name, (now - age * 86400, now - age * 86400))
    (folder / "dead.123.tmp").write_bytes(b"partial")
    os.utime(folder / "dead.123.tmp", (now - 7200, now - 7200))
    (folder / "live.456.tmp").write_bytes(b"partial")  # a save in progress elsewhere
    os.utime(folder / "live.456.tmp", (now - 60, now - 60))
    _caches.save_snapshot(folder / "new.bin", b"image")
    assert sorted(p.name for p in folder.iterdir()) == ["a.bin", "b.bin", "live.456.tmp", "new.bin"]


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[]", json.dumps({"ttflist": []}), json.dumps({"_version": 1, "ttflist": "x"}), "x" * 5_000_000],
)
def test_a_malformed_font_list_is_not_kept(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_PYODIDE_CACHE_ROOT", str(tmp_path))
    (tmp_path / "matplotlib").mkdir()
    assert not _caches.save_font_list(text)
    assert not (tmp_path / "matplotlib" / _caches.FONT_LIST).exists()


def test_a_well_formed_font_list_is_kept_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_PYODIDE_CACHE_ROOT", str(tmp_path))
    (tmp_path / "matplotlib").mkdir()
    good = json.dumps({"_version": 390, "ttflist": [], "afmlist": []})
    assert _caches.save_font_list(good)
    assert not _caches.save_font_list(json.dumps({"_version": 1, "ttflist": [{"forged": 1}]}))
    assert (tmp_path / "matplotlib" / _caches.FONT_LIST).read_text() == good
