"""`--spare-interpreter`: a reset swaps in an interpreter restored ahead of time."""

from __future__ import annotations

from support import ALLOW_ALL, ServerHandle, text_of


def test_reset_swaps_in_the_spare_and_prepares_the_next() -> None:
    handle = ServerHandle("--policy", str(ALLOW_ALL), "--spare-interpreter").start()
    try:
        assert not handle.execute("x = 41").is_error
        handle.wait_for_log("spare interpreter 2 ready")
        reset = handle.call("pyodide_reset", {})
        assert not reset.is_error, text_of(reset)
        gone = handle.execute("x")
        assert gone.is_error and "NameError" in text_of(gone)  # a fresh interpreter, not the old one
        # A second reset is fast too: the next spare was prepared after the first swap.
        handle.wait_for_log("spare interpreter 3 ready")
        assert not handle.execute("y = 1").is_error
        assert not handle.call("pyodide_reset", {}).is_error
        assert handle.execute("'y' in globals()").structured_content["result"] == "False"  # type: ignore[index]
    finally:
        handle.close()
