"""The exceptions a user of mcp-pyodide can catch, in one small hierarchy."""

from __future__ import annotations


class MCPPyodideError(Exception):
    """Base class for every error this package raises on purpose."""


class SetupError(MCPPyodideError):
    """The machine lacks something the server needs (Node.js, the runtime files)."""


class RuntimeCrashed(MCPPyodideError):
    """The Node process or its interpreter died while a call was in flight."""


class RuntimeUnavailable(MCPPyodideError):
    """The runtime could not be started, or the server is shutting down."""
