"""`--preload`: packages load in the background after start-up without delaying the first answer."""

from __future__ import annotations

import pytest
from support import ALLOW_ALL, ServerHandle, offline_packages_dir, text_of

from mcp_pyodide.config import RuntimeConfig


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
