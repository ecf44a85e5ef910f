"""`--spare-interpreter`: a reset swaps in an interpreter restored ahead of time."""

from __future__ import annotations

import time

from support import ALLOW_ALL, ServerHandle, text_of


def wait_for_log(handle: ServerHandle, needle: str, count: int = 1, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if handle.stderr_text().count(needle) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} did not appear {count} time(s):\n{handle.stderr_text()[-2000:]}")


def test_reset_swaps_in_the_spare_and_prepares_the_next() -> None:
    handle = ServerHandle("--policy", str(ALLOW_ALL), "--spare-interpreter").start()
    try:
        assert not handle.execute("x = 41").is_error
        wait_for_log(handle, "spare interpreter 2 ready")
        reset = handle.call("pyodide_reset", {})
        assert not reset.is_error, text_of(reset)
        gone = handle.execute("x")
        assert gone.is_error and "NameError" in text_of(gone)  # a fresh interpreter, not the old one
        # A second reset is fast too: the next spare was prepared after the first swap.
        wait_for_log(handle, "spare interpreter 3 ready")
        assert not handle.execute("y = 1").is_error
        assert not handle.call("pyodide_reset", {}).is_error
        assert handle.execute("'y' in globals()").structured_content["result"] == "False"  # type: ignore[index]
    finally:
        handle.close()
