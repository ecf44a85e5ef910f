"""Evaluation of ``require`` / ``deny_if`` conditions against call arguments.

Results are three-way plus "missing" so the engine can apply the documented
semantics: a missing path fails ``require`` but never fires ``deny_if``, and an
argument of the wrong type for the operator fails closed in both lists.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .model import Condition, is_number

_INDEX = re.compile(r"[0-9]+")


class Outcome(enum.Enum):
    """What a condition evaluated to for one set of arguments."""

    TRUE = "true"
    FALSE = "false"
    MISSING = "missing"
    WRONG_TYPE = "wrong_type"


def resolve_path(arguments: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """Follow a dot-path (``options.mode``, ``items.0``) into the arguments.

    Returns ``(found, value)``. Mappings are indexed by key, lists by a decimal
    index; anything else (including strings) cannot be descended into.
    JSON ``null`` counts as present.
    """
    current: Any = arguments
    for segment in path.split("."):
        if isinstance(current, Mapping):
            if segment not in current:
                return False, None
            current = current[segment]
        elif isinstance(current, (list, tuple)):
            if not _INDEX.fullmatch(segment):
                return False, None
            index = int(segment)
            if index >= len(current):
                return False, None
            current = current[index]
        else:
            return False, None
    return True, current


def json_equal(left: object, right: object) -> bool:
    """Equality with JSON semantics: ``true`` is not ``1``, ``1`` equals ``1.0``."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if is_number(left) and is_number(right):
        return left == right
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return len(left) == len(right) and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
    if type(left) is not type(right):
        return False
    return left == right


def _truth(value: bool) -> Outcome:
    return Outcome.TRUE if value else Outcome.FALSE


def _members(value: object) -> Sequence[object]:
    assert isinstance(value, (list, tuple))
    return value


def apply_operator(condition: Condition, actual: object) -> Outcome:
    """Apply the condition's operator to a present argument value."""
    op, expected = condition.op, condition.value
    if op == "equals":
        return _truth(json_equal(actual, expected))
    if op == "not_equals":
        return _truth(not json_equal(actual, expected))
    if op in ("in", "not_in"):
        found = any(json_equal(actual, item) for item in _members(expected))
        return _truth(found if op == "in" else not found)
    if op in ("matches", "not_matches"):
        if not isinstance(actual, str) or condition.pattern is None:
            return Outcome.WRONG_TYPE
        hit = condition.pattern.search(actual) is not None
        return _truth(hit if op == "matches" else not hit)
    if op == "contains":
        if isinstance(actual, str):
            return _truth(isinstance(expected, str) and expected in actual)
        if isinstance(actual, (list, tuple)):
            return _truth(any(json_equal(item, expected) for item in actual))
        return Outcome.WRONG_TYPE
    if op in ("lt", "lte", "gt", "gte"):
        if not is_number(actual) or not is_number(expected):
            return Outcome.WRONG_TYPE
        a: float = actual  # type: ignore[assignment]
        b: float = expected  # type: ignore[assignment]
        result = {"lt": a < b, "lte": a <= b, "gt": a > b, "gte": a >= b}[op]
        return _truth(result)
    if op == "max_length":
        if not isinstance(actual, (str, list, tuple)) or not is_number(expected):
            return Outcome.WRONG_TYPE
        return _truth(len(actual) <= expected)  # type: ignore[operator]
    raise ValueError(f"unknown operator {op!r}")  # unreachable: the loader rejects it


_WHOLE_LIST_OPS = ("contains", "max_length")


def per_element(condition: Condition, actual: object) -> bool:
    """True when the condition applies to each member of a list argument rather than to the list.

    A list of package names is checked name by name: ``deny_if package equals numpy``
    fires when any name is numpy, ``require package in [...]`` needs every name listed.
    ``contains`` and ``max_length`` ask about the list itself, and ``equals`` with a list
    value compares whole lists.
    """
    if not isinstance(actual, (list, tuple)) or condition.op in _WHOLE_LIST_OPS:
        return False
    return not (condition.op in ("equals", "not_equals") and isinstance(condition.value, (list, tuple)))


def evaluate(condition: Condition, arguments: Mapping[str, Any]) -> Outcome:
    """Evaluate one condition; ``MISSING`` when its path is absent from the arguments.

    For a list checked per element the outcome is the one that decides: a wrong type
    anywhere fails closed; ``deny_if`` is true when any member makes it true, ``require``
    only when every member does (an empty list passes both).
    """
    found, actual = resolve_path(arguments, condition.path)
    if not found:
        return Outcome.MISSING
    if not per_element(condition, actual):
        return apply_operator(condition, actual)
    outcomes = {apply_operator(condition, member) for member in actual}
    if Outcome.WRONG_TYPE in outcomes:
        return Outcome.WRONG_TYPE
    deciding = Outcome.TRUE if condition.kind == "deny_if" else Outcome.FALSE
    if deciding in outcomes:
        return deciding
    return Outcome.FALSE if condition.kind == "deny_if" else Outcome.TRUE


def violation(condition: Condition, arguments: Mapping[str, Any]) -> str | None:
    """Return why the call is refused by this condition, or ``None`` if it passes.

    The text is ``<reason> (<kind> <path> <op> <value>)``; when the author gave no
    ``reason`` a generic one describing the failure is used.
    """
    outcome = evaluate(condition, arguments)
    if condition.kind == "deny_if":
        if outcome in (Outcome.FALSE, Outcome.MISSING):
            return None
        default = (
            f"argument '{condition.path}' has the wrong type for {condition.op}"
            if outcome is Outcome.WRONG_TYPE
            else "argument refused by policy"
        )
    else:
        if outcome is Outcome.TRUE:
            return None
        if outcome is Outcome.MISSING:
            default = f"required argument '{condition.path}' is missing"
        elif outcome is Outcome.WRONG_TYPE:
            default = f"argument '{condition.path}' has the wrong type for {condition.op}"
        else:
            default = "argument does not satisfy policy"
    reason = condition.reason or default
    return f"{reason} ({condition.kind} {condition.describe()})"
