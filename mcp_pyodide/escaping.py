"""One way to put a name the sandbox chose (a file name, a path) into text the model reads.

Code in the sandbox names files, and those names reach the model inside text the
server writes: directory listings, the files and figures a run saved, image
headers, resource names. A name holding a newline, a carriage return, an ANSI
escape, U+2028 or a bidi override could forge lines or hide text there, so every
such name goes through :func:`shown` first. It keeps printable characters,
writes everything else as a Python-style escape (``\\n``, ``\\x1b``, ``\\u202e``;
a backslash as ``\\\\``, so an escape cannot be faked) and cuts very long names.
Structured (JSON) output keeps the exact name; JSON already escapes it.
"""

from __future__ import annotations

MAX_SHOWN_CHARS = 300
"""Longest name shown in full; longer ones are cut and the rest counted."""

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def shown(name: str, max_chars: int = MAX_SHOWN_CHARS) -> str:
    """`name` safe to place in a line of text: one line, nothing invisible, bounded length.

    Non-printable means Python's definition: control and format characters
    (bidi overrides, zero-width characters), line and paragraph separators,
    surrogates (undecodable bytes of a file name), private-use and unassigned
    code points, and every space but the ASCII one.
    """
    cut = len(name) - max_chars
    head = name[:max_chars] if cut > 0 else name
    text = "".join(char if char.isprintable() and char != "\\" else _escape(char) for char in head)
    return f"{text}...[{cut:,} more characters]" if cut > 0 else text


def json_safe(name: str) -> str:
    """`name` with undecodable bytes (lone surrogates from the file system) as U+FFFD, so JSON can carry it."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return name
