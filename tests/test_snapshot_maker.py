"""One snapshot maker per snapshot file, and none when there is nothing to make."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mcp_pyodide import _snapshot_maker
from mcp_pyodide.config import RuntimeConfig


class FakeLaunch:
    def __init__(self, target: Path, *, use_snapshot: bool = True) -> None:
        self.snapshot_file = target
        self.config = RuntimeConfig(use_snapshot=use_snapshot)


def test_servers_in_one_process_share_one_maker_and_none_starts_once_the_file_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Path] = []

    async def make(launch: Any) -> None:
        made.append(launch.snapshot_file)
        await asyncio.sleep(0)
        launch.snapshot_file.write_bytes(b"image")

    monkeypatch.setattr(_snapshot_maker, "make", make)
    target = tmp_path / "snap.bin"

    async def scenario() -> None:
        first = _snapshot_maker.make_soon(FakeLaunch(target))  # type: ignore[arg-type]
        second = _snapshot_maker.make_soon(FakeLaunch(target))  # type: ignore[arg-type]
        assert first is not None and first is second
        await first
        assert _snapshot_maker.make_soon(FakeLaunch(target)) is None  # type: ignore[arg-type]
        assert _snapshot_maker.make_soon(FakeLaunch(tmp_path / "other.bin", use_snapshot=False)) is None  # type: ignore[arg-type]

    asyncio.run(scenario())
    assert made == [target]
