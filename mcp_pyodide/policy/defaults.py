"""The built-in policy used when the server is started without ``--policy``."""

from __future__ import annotations

import json
from typing import Any

from ..tool_names import ToolName
from .loader import parse_policy
from .model import Policy

DEFAULT_POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "tools": {
        ToolName.EXECUTE.value: {
            "limits": [
                {
                    "counter": f"{ToolName.EXECUTE}_rate",
                    "window": "minute",
                    "max": 10,
                    "scope": "grant",
                }
            ]
        }
    },
}
"""Every tool allowed; code execution capped at 10 calls a minute for the whole server."""

DEFAULT_POLICY_JSON: str = json.dumps(DEFAULT_POLICY, indent=2) + "\n"
"""The default policy as a ready-to-edit policy file."""


def default_policy() -> Policy:
    """Build the default policy; parsed from JSON so it goes through the same validation."""
    return parse_policy(json.loads(DEFAULT_POLICY_JSON), "<default policy>")
