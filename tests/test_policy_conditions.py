"""Every condition operator, path resolution and the missing / wrong-type semantics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mcp_pyodide.policy import PolicyEngine, parse_policy
from mcp_pyodide.policy.conditions import Outcome, evaluate, json_equal, resolve_path


def condition_engine(kind: str, path: str, op: str, value: Any) -> PolicyEngine:
    data = {
        "version": "1",
        "default": "deny",
        "tools": {"t": {kind: [{"path": path, "op": op, "value": value}]}},
    }
    return PolicyEngine(parse_policy(data, "cond.json"), clock=lambda: 0.0)


def outcome(op: str, value: Any, actual: Any, path: str = "x") -> Outcome:
    policy = parse_policy(
        {
            "version": "1",
            "tools": {"t": {"require": [{"path": path, "op": op, "value": value}]}},
        },
        "cond.json",
    )
    condition = policy.tools["t"].require[0]
    return evaluate(condition, {"x": actual})


T, F, W = Outcome.TRUE, Outcome.FALSE, Outcome.WRONG_TYPE


@pytest.mark.parametrize(
    ("op", "value", "actual", "expected"),
    [
        ("equals", "a", "a", T),
        ("equals", "a", "b", F),
        ("equals", 1, 1.0, T),
        ("equals", 1, True, F),
        ("equals", None, None, T),
        ("equals", {"k": [1, 2]}, {"k": [1, 2]}, T),
        ("equals", [1, 2], [2, 1], F),
        ("not_equals", "a", "b", T),
        ("not_equals", "a", "a", F),
        ("not_equals", 0, False, T),
        ("in", ["r", "w"], "r", T),
        ("in", ["r", "w"], "x", F),
        ("in", [1, 2], True, F),
        ("not_in", ["r", "w"], "x", T),
        ("not_in", ["r", "w"], "w", F),
        ("matches", "^ab+c$", "abbbc", T),
        ("matches", "b", "abc", T),  # re.search, not fullmatch
        ("matches", "^b", "abc", F),
        ("matches", "a", 5, W),
        ("not_matches", "^b", "abc", T),
        ("not_matches", "b", "abc", F),
        ("not_matches", "b", None, W),
        ("contains", "os", "import os", T),
        ("contains", "sys", "import os", F),
        ("contains", "numpy", ["pandas", "numpy"], T),
        ("contains", "np", ["pandas", "numpy"], F),
        ("contains", 2, [1, 2.0], T),
        ("contains", 1, "123", F),
        ("contains", "a", {"a": 1}, W),
        ("lt", 10, 9, T),
        ("lt", 10, 10, F),
        ("lte", 10, 10, T),
        ("lte", 10, 10.5, F),
        ("gt", 10, 11, T),
        ("gt", 10, 10, F),
        ("gte", 10, 10, T),
        ("gte", 10, 9.99, F),
        ("lt", 10, "5", W),
        ("gte", 0, True, W),
        ("max_length", 3, "abc", T),
        ("max_length", 3, "abcd", F),
        ("max_length", 2, [1, 2], T),
        ("max_length", 2, [1, 2, 3], F),
        ("max_length", 2, 12, W),
    ],
)
def test_operator(op: str, value: Any, actual: Any, expected: Outcome) -> None:
    assert outcome(op, value, actual) is expected


def test_resolve_path() -> None:
    args = {
        "options": {"mode": "r", "items": [{"name": "a"}, {"name": "b"}]},
        "0": "zero",
    }
    assert resolve_path(args, "options.mode") == (True, "r")
    assert resolve_path(args, "options.items.1.name") == (True, "b")
    assert resolve_path(args, "0") == (True, "zero")
    assert resolve_path(args, "options.items.2.name") == (False, None)
    assert resolve_path(args, "options.items.x") == (False, None)
    assert resolve_path(args, "options.items.-1") == (False, None)
    assert resolve_path(args, "options.mode.0") == (
        False,
        None,
    )  # strings are not descended
    assert resolve_path({"a": None}, "a") == (True, None)


def test_json_equal_rules() -> None:
    assert json_equal(1, 1.0)
    assert not json_equal(1, True)
    assert not json_equal("1", 1)
    assert not json_equal(None, False)
    assert json_equal([1, {"a": "b"}], (1.0, {"a": "b"}))


def _run(engine: PolicyEngine, args: dict[str, Any]) -> str:
    d = asyncio.run(engine.decide("t", args, "s"))
    return "allow" if d.allowed else d.message


def test_require_missing_fails_and_deny_if_missing_does_not_fire() -> None:
    require = condition_engine("require", "options.mode", "equals", "r")
    assert _run(require, {"options": {"mode": "r"}}) == "allow"
    assert _run(require, {"options": {}}) == (
        "[POLICY DENIED] t: required argument 'options.mode' is missing (require options.mode equals 'r')"
    )
    deny_if = condition_engine("deny_if", "options.mode", "equals", "w")
    assert _run(deny_if, {}) == "allow"
    assert _run(deny_if, {"options": {"mode": "w"}}) == (
        "[POLICY DENIED] t: argument refused by policy (deny_if options.mode equals 'w')"
    )


def test_wrong_type_fails_closed_in_both_lists() -> None:
    deny_if = condition_engine("deny_if", "timeout", "gt", 100)
    assert _run(deny_if, {"timeout": "999999"}) == (
        "[POLICY DENIED] t: argument 'timeout' has the wrong type for gt (deny_if timeout gt 100)"
    )
    require = condition_engine("require", "code", "max_length", 5)
    assert _run(require, {"code": 12}) == (
        "[POLICY DENIED] t: argument 'code' has the wrong type for max_length (require code max_length 5)"
    )


def test_list_index_path_in_policy() -> None:
    engine = condition_engine("deny_if", "packages.0", "in", ["requests", "urllib3"])
    assert _run(engine, {"packages": ["numpy", "requests"]}) == "allow"
    assert _run(engine, {"packages": []}) == "allow"
    assert _run(engine, {"packages": ["requests"]}) == (
        '[POLICY DENIED] t: argument refused by policy (deny_if packages.0 in ["requests", "urllib3"])'
    )


def test_conditions_checked_in_order_deny_if_before_require() -> None:
    data = {
        "version": "1",
        "tools": {
            "t": {
                "require": [{"path": "a", "op": "equals", "value": 1, "reason": "need a"}],
                "deny_if": [{"path": "b", "op": "equals", "value": 1, "reason": "no b"}],
            }
        },
    }
    engine = PolicyEngine(parse_policy(data, "x"), clock=lambda: 0.0)
    d = asyncio.run(engine.decide("t", {"b": 1}, "s"))
    assert d.message == "[POLICY DENIED] t: no b (deny_if b equals 1)"
    assert d.reason == "no b (deny_if b equals 1)"
    d = asyncio.run(engine.decide("t", {"a": 2}, "s"))
    assert d.message == "[POLICY DENIED] t: need a (require a equals 1)"
    assert d.rule == "tools.t.require[0]"
