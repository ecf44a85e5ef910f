"""The `mcp-pyodide` command: the collector paused before the CLI imports (see _startup_gc)."""

from __future__ import annotations

from . import _startup_gc


def main() -> int:
    _startup_gc.pause()
    from .cli import main as cli_main

    return cli_main()
