"""The sandbox-side executor in plain CPython: fast checks of what Pyodide would run."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mcp_pyodide.guest import mcp_guest_executor as ex

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def guest(monkeypatch: pytest.MonkeyPatch) -> ex.Guest:
    # Restoring the interpreter's stdio would undo pytest's capture; nothing else is stubbed.
    monkeypatch.setattr(ex, "_restore_runtime_state", lambda: None)
    return ex.Guest()


def run(guest: ex.Guest, source: str) -> dict[str, Any]:
    reply = guest.execute(source)
    if not isinstance(reply, str):
        reply = asyncio.run(reply)  # type: ignore[arg-type]
    outcome: dict[str, Any] = json.loads(reply)
    return outcome


def test_importing_the_guest_modules_changes_nothing_outside_them() -> None:
    code = (
        "import os, sys, signal\n"
        "before = (os.system, os.popen, list(sys.meta_path), signal.getsignal(signal.SIGINT), sys.stdout, sys.gettrace())\n"
        "import mcp_pyodide.guest.mcp_guest_executor, mcp_pyodide.guest.mcp_guest_figures\n"
        "after = (os.system, os.popen, list(sys.meta_path), signal.getsignal(signal.SIGINT), sys.stdout, sys.gettrace())\n"
        "print(before == after)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True", out.stderr


def test_install_is_where_host_processes_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "system", os.system)
    monkeypatch.setattr(os, "popen", os.popen)
    assert ex.install() is ex.GUEST
    with pytest.raises(PermissionError, match="host processes"):
        os.system("true")


@pytest.mark.parametrize(
    ("source", "hidden"),
    [
        ("f(';#')", False),
        ("x = 1\nx;", True),
        ("x;  # a comment", True),
        ("x  # a comment ending in ;", False),
        ("'a;b'", False),
        ("f'{1};'", False),
        ('"""\n;\n"""', False),
        ("x\n# trailing comment;\n", False),
        ("(1,\n 2);", True),
        ("", False),
    ],
)
def test_a_trailing_semicolon_is_read_by_the_tokenizer(source: str, hidden: bool) -> None:
    assert ex.ends_with_semicolon(source) is hidden


@pytest.mark.parametrize(
    ("source", "hidden"),
    [
        ("1+1", False),
        ("'é';  # é", True),
        ("a = 1; a", False),
        ('x = """a\n"""; x;', True),
        ("x = 1\nx \\\n;", True),
        ("1 + \\\n 1 \\\n;", True),
        ("1;2", False),
        ("1;\r\n", True),
    ],
)
def test_only_the_text_after_the_last_statement_decides(source: str, hidden: bool) -> None:
    """compile_cell reads just the tail (a big cell is not tokenized whole), with the same answer."""
    _, last = ex.compile_cell(source, "<cell>")
    assert (last is None) is hidden
    assert ex.ends_with_semicolon(source) is hidden


def test_a_cell_ending_in_a_string_with_a_semicolon_shows_its_value(guest: ex.Guest) -> None:
    outcome = run(guest, "def f(s):\n    return s * 2\nf(';#')")
    assert outcome == {"ok": True, "result": "';#;#'", "extra": {}}


def test_a_trailing_semicolon_hides_the_value_and_keeps_the_state(guest: ex.Guest) -> None:
    assert run(guest, "x = 41\nx + 1;")["result"] is None
    assert run(guest, "x + 1")["result"] == "42"
    assert run(guest, "_")["result"] == "42"


def test_top_level_await_returns_a_coroutine(guest: ex.Guest) -> None:
    reply = guest.execute("import asyncio\nawait asyncio.sleep(0)\n'awaited'")
    assert not isinstance(reply, str)
    assert json.loads(asyncio.run(reply))["result"] == "'awaited'"  # type: ignore[arg-type]


def test_errors_are_reported_from_the_users_code(guest: ex.Guest) -> None:
    outcome = run(guest, "def g():\n    raise ValueError('bad value')\ng()")
    assert outcome["ok"] is False
    assert outcome["error"]["type"] == "ValueError" and outcome["error"]["message"] == "bad value"
    assert "<cell-1>" in outcome["error"]["traceback"] and "mcp_guest_executor" not in outcome["error"]["traceback"]
    assert run(guest, "def (")["error"]["type"] == "SyntaxError"


ONE_LINERS = [
    "1+1",
    "1+1  # a comment",
    "1+1 # ;",
    "1+1;",
    "1;2",
    "x = 3",
    "x = 3; x",
    "print('p')",
    "'a;b'",
    "  1+1",
    "\t1+1",
    "1 +",
    "yield 1",
    "await __import__('asyncio').sleep(0, 'slept')",
    "(lambda: 1/0)()",
    "1+1\r",
    "1+1\n\n  ",
    "undefined_name",
]


@pytest.mark.parametrize("source", ONE_LINERS)
def test_a_one_line_cell_has_the_outcome_of_the_general_path(source: str, guest: ex.Guest) -> None:
    """One-liners compile as a lone expression first; a leading newline sends the same cell the general way."""
    fast, general = run(guest, source), run(guest, "\n" + source)
    for outcome in (fast, general):
        if outcome.get("error"):
            outcome["error"] = outcome["error"]["type"]
    assert fast == general


def test_a_huge_repr_is_cut(guest: ex.Guest) -> None:
    result = run(guest, "'x' * 300_000")["result"]
    assert len(result) < ex.MAX_REPR_CHARS + 100 and result.endswith("characters cut]")


def test_restoring_integrity_undoes_monkeypatching() -> None:
    original = ex.Guest.report_value
    ex.Guest.report_value = lambda self, value: "forged"  # type: ignore[assignment, method-assign]
    ex.GUEST.execute = lambda source: "forged"  # type: ignore[method-assign]
    try:
        ex._restore_integrity(ex.INTEGRITY)
        assert ex.Guest.report_value is original
        assert "execute" not in vars(ex.GUEST)
    finally:
        ex.Guest.report_value = original  # type: ignore[method-assign]


def test_the_between_calls_tracer_refuses_every_frame() -> None:
    with pytest.raises(RuntimeError, match="between calls"):
        ex.refuse_between_calls(sys._getframe(), "call", None)
