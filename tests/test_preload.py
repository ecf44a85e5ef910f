"""`--preload`: packages load in the background after start-up without delaying the first answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support import ALLOW_ALL, ServerHandle, offline_packages_dir, text_of

from mcp_pyodide import sandbox as sandbox_module
from mcp_pyodide.config import RuntimeConfig
from mcp_pyodide.sandbox import Sandbox


def test_preloaded_packages_are_ready_and_the_first_answer_is_not_held_back() -> None:
    handle = ServerHandle(
        "--policy",
        str(ALLOW_ALL),
        "--package-source",
        str(offline_packages_dir()),
        "--preload",
        "numpy,matplotlib,no-such-package",
    ).start()
    try:
        first = handle.execute("1+1")
        assert not first.is_error and first.structured_content["result"] == "2"  # type: ignore[index]
        log = handle.wait_for_log("preloaded numpy, matplotlib, no-such-package")
        assert "--preload no-such-package" in log  # named, not fatal
        # Already loaded: the call loads nothing more and pyplot was imported by the preload.
        result = handle.execute("import sys\nimport numpy\n'matplotlib.pyplot' in sys.modules")
        assert not result.is_error, text_of(result)
        assert result.structured_content["result"] == "True"  # type: ignore[index]
        assert "packages loaded" not in text_of(result)
        # Nothing of the preload's shows up among the user's names.
        names = handle.execute("sorted(n for n in globals() if not n.startswith('_'))")
        assert names.structured_content["result"] == "['numpy', 'sys']"  # type: ignore[index]
    finally:
        handle.close()


def test_preload_names_must_not_be_empty() -> None:
    with pytest.raises(ValueError, match="preload"):
        RuntimeConfig(preload=("numpy", " "))


SIX_LOADED = "import pyodide_js\n'six' in pyodide_js.loadedPackages.to_py()"


def _preloading_sandbox(tmp_path: Path) -> Sandbox:
    config = RuntimeConfig(package_source=str(offline_packages_dir()), preload=("six",))
    return Sandbox(config=config, output_dir=tmp_path / "out")


def test_preloading_waits_for_the_first_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_module, "PRELOAD_GRACE_S", 600.0)  # only the answer can start it

    async def scenario() -> tuple[str | None, str | None]:
        async with _preloading_sandbox(tmp_path) as sandbox:
            first = await sandbox.execute(SIX_LOADED)
            assert sandbox._preload_task is not None
            await asyncio.wait_for(sandbox._preload_task, 120)
            return first.value, (await sandbox.execute(SIX_LOADED)).value

    assert asyncio.run(scenario()) == ("False", "True")


def test_preloading_starts_without_a_call_once_the_grace_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_module, "PRELOAD_GRACE_S", 0.01)

    async def scenario() -> str | None:
        async with _preloading_sandbox(tmp_path) as sandbox:
            assert sandbox._preload_task is not None
            await asyncio.wait_for(sandbox._preload_task, 120)
            return (await sandbox.execute(SIX_LOADED)).value

    assert asyncio.run(scenario()) == "True"
