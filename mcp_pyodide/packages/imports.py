"""Which top-level modules a piece of code imports, read on the host before it runs.

Knowing this before the code runs lets the broker fetch, verify and load the
packages it needs, so `import numpy` just works.

This runs on the server's event loop for every call, so it must stay cheap for any
cell up to the code limit (parsing a 1 MB cell takes ~0.4 s and holds the GIL, so a
thread would not help): code without the word `import` is answered at once; a small
cell is parsed properly; in a large one each line holding `import` is checked by
parsing just its import statements (with thousands of such lines, only statements
that start a line). That can see an import inside a multi-line string, which at
worst loads a package the code did not need. Answers are remembered per code digest.
"""

from __future__ import annotations

import ast
import hashlib
import re

PARSE_LIMIT = 32 * 1024  # characters; parsing this much takes about 10 ms
_CACHE_SIZE = 256
_cache: dict[bytes, tuple[str, ...]] = {}

_MANY = 2000  # more `import` words than this: one regex pass instead of a look at each
_STATEMENT_START = re.compile(r"^[ \t]*(?:import|from)[ \t][^\n]*", re.MULTILINE)


def find_imports(source: str) -> list[str]:
    """Top-level module names imported anywhere in `source`, in first-seen order.

    Code that does not parse imports nothing here; running it will report the
    syntax error.
    """
    if "import" not in source:
        return []
    key = hashlib.blake2b(source.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    found = _cache.get(key)
    if found is None:
        found = tuple(_from_tree(source) if len(source) <= PARSE_LIMIT else _from_lines(source))
        if len(_cache) >= _CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
        _cache[key] = found
    return list(found)


def _from_tree(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    return _names(tree)


def _from_lines(source: str) -> list[str]:
    seen: dict[str, None] = {}
    for line in _candidate_lines(source):
        for part in line.split(";"):
            statement = part.strip()
            if not statement.startswith(("import", "from")):
                continue
            if "(" in statement:  # `from x import (a,` continues below; only x matters here
                statement = statement[: statement.index("(")] + "_"
            try:
                tree = ast.parse(statement.rstrip("\\ \t"))
            except (SyntaxError, ValueError):
                continue
            seen.update(dict.fromkeys(_names(tree)))
    return list(seen)


def _candidate_lines(source: str) -> list[str]:
    """Each line holding the word `import` (looked at one by one when there are few)."""
    if source.count("import") > _MANY:
        return [match.group(0) for match in _STATEMENT_START.finditer(source)]
    lines: list[str] = []
    last_start = -1
    position = source.find("import")
    while position >= 0:
        start = source.rfind("\n", 0, position) + 1
        end = source.find("\n", position)
        end = len(source) if end < 0 else end
        if start != last_start:
            lines.append(source[start:end])
            last_start = start
        position = source.find("import", end)
    return lines


def _names(tree: ast.AST) -> list[str]:
    seen: dict[str, None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                seen.setdefault(alias.name.split(".")[0], None)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            seen.setdefault(node.module.split(".")[0], None)
    return list(seen)
