"""Per-user folders the server owns, following each platform's conventions."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_root() -> Path:
    """Where downloaded runtime files and packages live (safe to delete)."""
    override = os.environ.get("MCP_PYODIDE_CACHE_ROOT")
    if override:
        return Path(override).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
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
