"""The name of every tool the server offers, in one place.

Everything that names a tool (the CLI, the default policy, `mcp-pyodide run`,
the pytest plugin, the docs check) refers to this enum, so a rename is one
edit. Importing it is cheap: no MCP, no pydantic.
"""

from __future__ import annotations

from enum import StrEnum


class ToolName(StrEnum):
    """Tool names as the MCP client sees them."""

    EXECUTE = "pyodide_execute"
    RESET = "pyodide_reset"
    INSTALL_PACKAGES = "pyodide_install-packages"
    GET_MOUNT_POINTS = "pyodide_get-mount-points"
    LIST_MOUNTED_DIRECTORY = "pyodide_list-mounted-directory"
    READ_IMAGE = "pyodide_read-image"
    EXPORT_NOTEBOOK = "pyodide_export-notebook"


RESOURCES = "resources"
"""The name a policy uses for MCP resources (`resources/list` and `resources/read`), as if a tool."""

POLICY_NAMES: tuple[str, ...] = (*(name.value for name in ToolName), RESOURCES)
"""Every name a policy can allow, deny, hide or rate-limit on this server."""
