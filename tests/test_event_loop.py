"""`--event-loop`: the server runs on uvloop where it is installed, on asyncio when asked."""

from __future__ import annotations

import importlib.util

import pytest
from support import ALLOW_ALL, ServerHandle

from mcp_pyodide.options import loop_options


@pytest.mark.parametrize(("choice", "named"), [("auto", "uvloop"), ("asyncio", "asyncio")])
def test_the_server_serves_on_the_loop_it_names(choice: str, named: str) -> None:
    handle = ServerHandle("--policy", str(ALLOW_ALL), "--event-loop", choice).start()
    try:
        assert handle.execute("x = 6\nx * 7").structured_content["result"] == "42"  # type: ignore[index]
        timed_out = handle.execute("while True: pass", timeout_ms=500)
        assert timed_out.is_error and "timed out" in str(timed_out.content)  # Node's timers and the pipe still work
        assert handle.execute("x").structured_content["result"] == "6"  # type: ignore[index]
        log = handle.stderr_text()
    finally:
        handle.close()
    assert f"serving on stdio; event loop {named};" in log, log[-2000:]


def test_a_missing_uvloop_falls_back_unless_it_was_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a))
    assert loop_options("auto") == {"use_uvloop": False}
    with pytest.raises(ValueError, match="uvloop is not installed"):
        loop_options("uvloop")


def test_an_unknown_loop_from_the_environment_is_named_in_the_error() -> None:
    # argparse checks a choice given on the command line, not a default taken from the environment.
    with pytest.raises(ValueError, match=r"'trio'.*use auto, uvloop or asyncio"):
        loop_options("trio")
    assert loop_options("asyncio") == {"use_uvloop": False}
