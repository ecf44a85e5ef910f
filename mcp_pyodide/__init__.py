"""mcp-pyodide: an MCP server that runs Python in a Pyodide sandbox hosted by Node.js.

The public Python API is re-exported here; the machinery lives in modules users
need not import. Imports are lazy so `mcp-pyodide --version` and the CLI's
helper commands stay fast and do not load the MCP or runtime stack.

    from mcp_pyodide import SyncSandbox

    with SyncSandbox() as sb:
        print(sb.execute("1 + 1").value)   # '2'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ._isolation import IsolationUnavailable
    from .config import RuntimeConfig
    from .errors import MCPPyodideError, RuntimeCrashed, RuntimeUnavailable, SetupError
    from .mounts import Mount, MountError
    from .packages import IntegrityError, PackageSourceError, UnknownPackageError
    from .policy import PolicyError
    from .result import ErrorInfo, InterpreterInfo, PackageOutcome, Result
    from .sandbox import Sandbox
    from .sync import SyncSandbox

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Sandbox": ".sandbox",
    "Result": ".result",
    "PackageOutcome": ".result",
    "ErrorInfo": ".result",
    "InterpreterInfo": ".result",
    "SyncSandbox": ".sync",
    "Mount": ".mounts",
    "RuntimeConfig": ".config",
    # errors
    "MCPPyodideError": ".errors",
    "SetupError": ".errors",
    "RuntimeCrashed": ".errors",
    "RuntimeUnavailable": ".errors",
    "MountError": ".mounts",
    "PolicyError": ".policy",
    "IsolationUnavailable": "._isolation",
    "IntegrityError": ".packages",
    "PackageSourceError": ".packages",
    "UnknownPackageError": ".packages",
}

__all__ = [
    "ErrorInfo",
    "IntegrityError",
    "InterpreterInfo",
    "IsolationUnavailable",
    "MCPPyodideError",
    "Mount",
    "MountError",
    "PackageOutcome",
    "PackageSourceError",
    "PolicyError",
    "Result",
    "RuntimeConfig",
    "RuntimeCrashed",
    "RuntimeUnavailable",
    "Sandbox",
    "SetupError",
    "SyncSandbox",
    "UnknownPackageError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mcp_pyodide' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
