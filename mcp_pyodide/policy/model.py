"""Immutable in-memory form of a validated policy.

Everything here is frozen so a running engine can never observe a policy that
changes under it; the only way to build these objects from user input is
:func:`mcp_pyodide.policy.loader.parse_policy`, which validates first.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Default = Literal["allow", "deny"]
Action = Literal["allow", "deny", "require_approval"]
Scope = Literal["grant", "session"]

OPERATORS: tuple[str, ...] = (
    "equals",
    "not_equals",
    "in",
    "not_in",
    "matches",
    "not_matches",
    "contains",
    "lt",
    "lte",
    "gt",
    "gte",
    "max_length",
)
"""Condition operators accepted in ``require`` and ``deny_if``."""

WINDOWS: Mapping[str, float] = {
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": 86400.0,
}
"""Named rate-limit windows and their length in seconds."""


def format_number(value: float) -> str:
    """Render a number without a useless ``.0`` so messages read naturally."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render_value(value: object) -> str:
    """Render a condition value for messages: strings quoted verbatim, the rest as JSON.

    Strings are not ``repr``-escaped so a regex shows exactly as written in the file.
    """
    if isinstance(value, str):
        return f"'{value}'"
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class Limit:
    """One sliding-window rate limit; ``place`` is its JSON path, reported as the rule."""

    counter: str
    window: float
    window_name: str | None
    max: int
    scope: Scope
    place: str

    @property
    def per_text(self) -> str:
        """``per minute`` for named windows, ``per 30 s`` for numeric ones."""
        if self.window_name is not None:
            return f"per {self.window_name}"
        return f"per {format_number(self.window)} s"

    def describe(self) -> str:
        """Short human description used by messages and ``explain``."""
        return f"{self.max} {self.per_text} (counter {self.counter}, scope {self.scope})"


@dataclass(frozen=True)
class Condition:
    """A test on one call argument; ``pattern`` is precompiled for the regex operators."""

    kind: Literal["require", "deny_if"]
    path: str
    op: str
    value: object
    reason: str | None
    place: str
    pattern: re.Pattern[str] | None = None

    def describe(self) -> str:
        """``code matches '...'`` - the condition as the policy author wrote it."""
        return f"{self.path} {self.op} {render_value(self.value)}"


@dataclass(frozen=True)
class ToolRule:
    """Everything the policy says about one listed tool."""

    name: str
    action: Action
    reason: str | None
    limits: tuple[Limit, ...]
    deny_if: tuple[Condition, ...]
    require: tuple[Condition, ...]
    place: str


@dataclass(frozen=True)
class Policy:
    """A complete, validated policy. ``source`` names where it came from for messages."""

    source: str
    default: Default
    hide: tuple[str, ...]
    all_tools_limits: tuple[Limit, ...]
    tools: Mapping[str, ToolRule]
    version: str = "1"

    def is_hidden(self, tool: str) -> bool:
        """Hidden tools are left out of tools/list and denied if called anyway."""
        return "*" in self.hide or tool in self.hide

    def rule_for(self, tool: str) -> ToolRule | None:
        """The tool's own entry, or ``None`` when the default applies."""
        return self.tools.get(tool)

    def all_limits(self) -> tuple[Limit, ...]:
        """Every limit in the policy (used to size how long timestamps are kept)."""
        limits = list(self.all_tools_limits)
        for rule in self.tools.values():
            limits.extend(rule.limits)
        return tuple(limits)


def is_number(value: object) -> bool:
    """JSON number test: ``bool`` is excluded because ``True < 5`` must not pass as a number."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)
