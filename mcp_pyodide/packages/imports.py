"""Which top-level modules a piece of code imports, read from its syntax tree on the host.

Knowing this before the code runs lets the broker fetch, verify and load the
packages it needs, so `import numpy` just works.
"""

from __future__ import annotations

import ast


def find_imports(source: str) -> list[str]:
    """Top-level module names imported anywhere in `source`, in first-seen order.

    Code that does not parse imports nothing here; running it will report the
    syntax error.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    seen: dict[str, None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                seen.setdefault(alias.name.split(".")[0], None)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            seen.setdefault(node.module.split(".")[0], None)
    return list(seen)
