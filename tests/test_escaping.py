"""The one helper that escapes sandbox-chosen names before they reach the model as text."""

from __future__ import annotations

import pytest

from mcp_pyodide.escaping import MAX_SHOWN_CHARS, json_safe, shown
from mcp_pyodide.server.files import DirectoryEntry, Listing, format_listing

HOSTILE = {
    "newline": ("a\nb", "a\\nb"),
    "carriage-return": ("a\rb", "a\\rb"),
    "crlf-forged-entry": ("x.txt\r\n  passwd  [1 B]", "x.txt\\r\\n  passwd  [1 B]"),
    "tab": ("a\tb", "a\\tb"),
    "ansi": ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
    "nul": ("a\x00b", "a\\x00b"),
    "del-and-c1-next-line": ("a\x7fb\x85c", "a\\x7fb\\x85c"),
    "line-separator": ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),
    "bidi-override": ("\u202egnp.exe", "\\u202egnp.exe"),
    "bidi-isolate": ("a\u2066b\u2069", "a\\u2066b\\u2069"),
    "zero-width": ("a\u200bb\ufeff", "a\\u200bb\\ufeff"),
    "undecodable-byte": ("a\udcff", "a\\udcff"),
    "backslash-cannot-fake-an-escape": ("a\\nb", "a\\\\nb"),
}


@pytest.mark.parametrize(("name", "expected"), list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_characters_are_escaped(name: str, expected: str) -> None:
    text = shown(name)
    assert text == expected
    assert text.isprintable()


@pytest.mark.parametrize("name", ["plot.png", "données é ü 中文.csv", "emoji 😀.txt", "a b"])
def test_ordinary_names_are_unchanged(name: str) -> None:
    assert shown(name) == name


def test_very_long_names_are_cut_and_counted() -> None:
    text = shown("x" * 10_000)
    assert text.startswith("x" * MAX_SHOWN_CHARS) and text.endswith(
        f"...[{10_000 - MAX_SHOWN_CHARS:,} more characters]"
    )
    assert len(text) < MAX_SHOWN_CHARS + 40


def test_json_safe_replaces_only_undecodable_bytes() -> None:
    assert json_safe("ok\n") == "ok\n"
    assert json_safe("a\udcffb") == "a\ufffdb"


def test_a_listing_has_one_line_per_entry_whatever_the_names() -> None:
    names = [name for name, _ in HOSTILE.values()]
    listing = Listing(
        mountName="output",
        path="",
        pythonPath="/mnt/output",
        entries=[DirectoryEntry(name=n, type="file", size=1, modified="2026-01-01T00:00:00Z") for n in names],
        total=len(names),
        omitted=0,
    )
    lines = format_listing(listing).split("\n")
    assert len(lines) == 1 + len(names)
    assert all(line.isprintable() for line in lines)
