"""Per-user folders the server owns, following each platform's conventions."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_root() -> Path:
    """Where downloaded runtime files and packages live (safe to delete).

    Order: `$MCP_PYODIDE_CACHE_ROOT`; on Windows `%LOCALAPPDATA%`; else `$XDG_CACHE_HOME` if
    it is an absolute path; on macOS `~/Library/Caches`; else `~/.cache`; then `mcp-pyodide`.
    """
    override = os.environ.get("MCP_PYODIDE_CACHE_ROOT")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif os.path.isabs(os.environ.get("XDG_CACHE_HOME", "")):
        base = Path(os.environ["XDG_CACHE_HOME"])
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path.home() / ".cache"
    return base / "mcp-pyodide"


def data_root() -> Path:
    """Where user-visible output (figures, files written by code) goes by default."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "mcp-pyodide"
