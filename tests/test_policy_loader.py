"""Every kind of invalid policy file fails closed with file, place and problem named."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from mcp_pyodide.policy import PolicyError, load_policy, parse_policy

VALID: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "hide": ["pyodide_read-image"],
    "all_tools": {"limits": [{"counter": "all", "window": "hour", "max": 500, "scope": "grant"}]},
    "tools": {
        "pyodide_execute": {
            "limits": [{"counter": "r", "window": "minute", "max": 10, "scope": "grant"}],
            "deny_if": [{"path": "code", "op": "matches", "value": "os", "reason": "no"}],
            "require": [{"path": "timeout", "op": "lte", "value": 60000}],
        },
        "pyodide_get-mount-points": {},
    },
}


def mutate(path: str, value: Any) -> dict[str, Any]:
    """Copy VALID with the dotted ``path`` set (``~`` deletes the key)."""
    data = copy.deepcopy(VALID)
    parts = path.split("/")
    target: Any = data
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    last = parts[-1]
    if isinstance(target, list):
        target[int(last)] = value
    elif value == "~":
        del target[last]
    else:
        target[last] = value
    return data


def load_text(tmp_path: Path, text: str) -> PolicyError:
    file = tmp_path / "bad-policy.json"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(file)
    assert str(file) in str(info.value)
    return info.value


def load_data(tmp_path: Path, data: object) -> PolicyError:
    return load_text(tmp_path, json.dumps(data))


def test_valid_file_loads(tmp_path: Path) -> None:
    file = tmp_path / "p.json"
    file.write_text(json.dumps(VALID), encoding="utf-8")
    policy = load_policy(file)
    assert set(policy.tools) == {"pyodide_execute", "pyodide_get-mount-points"}
    assert policy.tools["pyodide_execute"].limits[0].window == 60.0


@pytest.mark.parametrize(
    ("path", "value", "place", "problem"),
    [
        ("version", "2", "version", 'unsupported version "2"'),
        ("version", 1, "version", "unsupported version 1"),
        ("version", "~", "version", "missing required field"),
        ("default", "maybe", "default", 'expected "allow" or "deny", got "maybe"'),
        (
            "extra",
            True,
            "extra",
            "unknown field (allowed: version, default, hide, all_tools, tools)",
        ),
        ("hide", "x", "hide", "expected an array, got string"),
        ("hide/0", 3, "hide[0]", "expected a string, got number"),
        ("hide/0", "", "hide[0]", "must not be empty"),
        ("all_tools/rate", 1, "all_tools.rate", "unknown field (allowed: limits)"),
        ("all_tools/limits", {}, "all_tools.limits", "expected an array, got object"),
        ("tools", [], "tools", "expected an object, got array"),
        (
            "tools/pyodide_execute",
            [],
            "tools.pyodide_execute",
            "expected an object, got array",
        ),
        (
            "tools/pyodide_execute/when",
            1,
            "tools.pyodide_execute.when",
            "unknown field",
        ),
        (
            "tools/pyodide_execute/action",
            "ask",
            "tools.pyodide_execute.action",
            'got "ask"',
        ),
        (
            "tools/pyodide_execute/reason",
            5,
            "tools.pyodide_execute.reason",
            "expected a string",
        ),
        ("tools/a.b", {"x": 1}, 'tools["a.b"].x', "unknown field"),
        (
            "tools/pyodide_execute/limits/0",
            {"counter": "c", "window": "minute", "max": 1, "maxx": 2},
            "tools.pyodide_execute.limits[0].maxx",
            "unknown field (allowed: counter, window, max, scope)",
        ),
        (
            "tools/pyodide_execute/limits/0",
            {"window": "minute", "max": 1},
            "tools.pyodide_execute.limits[0].counter",
            "missing required field",
        ),
        (
            "tools/pyodide_execute/limits/0",
            {"counter": "c", "window": "week", "max": 1},
            "tools.pyodide_execute.limits[0].window",
            "unknown window 'week'",
        ),
        (
            "tools/pyodide_execute/limits/0",
            {"counter": "c", "window": 0, "max": 1},
            "tools.pyodide_execute.limits[0].window",
            "positive number of seconds, got 0",
        ),
        (
            "tools/pyodide_execute/limits/0",
            {"counter": "c", "window": True, "max": 1},
            "tools.pyodide_execute.limits[0].window",
            "got true",
        ),
        (
            "tools/pyodide_execute/limits/0",
            {"counter": "c", "window": 5, "max": -1},
            "tools.pyodide_execute.limits[0].max",
            "expected an integer >= 0, got -1",
        ),
        (
            "tools/pyodide_execute/limits/0",
            {"counter": "c", "window": 5, "max": 1.5},
            "tools.pyodide_execute.limits[0].max",
            "expected an integer >= 0, got 1.5",
        ),
        (
            "tools/pyodide_execute/limits/0",
            {"counter": "c", "window": 5, "max": "10"},
            "tools.pyodide_execute.limits[0].max",
            'got "10"',
        ),
        (
            "tools/pyodide_execute/limits/0",
            {"counter": "c", "window": 5, "max": 1, "scope": "user"},
            "tools.pyodide_execute.limits[0].scope",
            'expected "grant" or "session", got "user"',
        ),
        (
            "tools/pyodide_execute/limits/0",
            {"counter": "", "window": 5, "max": 1},
            "tools.pyodide_execute.limits[0].counter",
            "must not be empty",
        ),
        (
            "tools/pyodide_execute/deny_if/0",
            {"path": "code", "op": "regex", "value": "x"},
            "tools.pyodide_execute.deny_if[0].op",
            "unknown operator 'regex'",
        ),
        (
            "tools/pyodide_execute/deny_if/0",
            {"path": "code", "op": "matches", "value": "(unclosed"},
            "tools.pyodide_execute.deny_if[0].value",
            "invalid regular expression '(unclosed'",
        ),
        (
            "tools/pyodide_execute/deny_if/0",
            {"path": "code", "op": "matches", "value": 3},
            "tools.pyodide_execute.deny_if[0].value",
            "expected a string, got number",
        ),
        (
            "tools/pyodide_execute/deny_if/0",
            {"path": "code", "op": "equals"},
            "tools.pyodide_execute.deny_if[0].value",
            "missing required field",
        ),
        (
            "tools/pyodide_execute/deny_if/0",
            {"path": "a..b", "op": "equals", "value": 1},
            "tools.pyodide_execute.deny_if[0].path",
            "empty segment",
        ),
        (
            "tools/pyodide_execute/deny_if/0",
            {"path": "a", "op": "equals", "value": 1, "why": "x"},
            "tools.pyodide_execute.deny_if[0].why",
            "unknown field (allowed: path, op, value, reason)",
        ),
        (
            "tools/pyodide_execute/deny_if",
            {},
            "tools.pyodide_execute.deny_if",
            "expected an array",
        ),
        (
            "tools/pyodide_execute/require/0",
            {"path": "t", "op": "lte", "value": "60000"},
            "tools.pyodide_execute.require[0].value",
            "operator lte needs a number, got string",
        ),
        (
            "tools/pyodide_execute/require/0",
            {"path": "t", "op": "in", "value": "abc"},
            "tools.pyodide_execute.require[0].value",
            "operator in needs an array, got string",
        ),
        (
            "tools/pyodide_execute/require/0",
            {"path": "t", "op": "max_length", "value": -2},
            "tools.pyodide_execute.require[0].value",
            "operator max_length needs an integer >= 0",
        ),
        (
            "tools/pyodide_execute/require/0",
            {"path": 5, "op": "lte", "value": 1},
            "tools.pyodide_execute.require[0].path",
            "expected a string, got number",
        ),
        (
            "tools/pyodide_execute/require/0",
            "timeout <= 5",
            "tools.pyodide_execute.require[0]",
            "expected an object, got string",
        ),
    ],
)
def test_invalid_policy(tmp_path: Path, path: str, value: Any, place: str, problem: str) -> None:
    error = load_data(tmp_path, mutate(path, value))
    assert error.place == place
    assert problem in error.problem
    assert f": {place}: " in str(error)


def test_bad_json_names_line_and_column(tmp_path: Path) -> None:
    error = load_text(tmp_path, '{\n  "version": "1",\n  "default": "deny",,\n}')
    assert error.place == "line 3, column 21"
    assert "invalid JSON" in error.problem


@pytest.mark.parametrize("text", ["", "[]", "null", '"x"'])
def test_not_an_object(tmp_path: Path, text: str) -> None:
    error = load_text(tmp_path, text)
    assert error.place.startswith(("line", "top level"))


def test_nan_rejected(tmp_path: Path) -> None:
    error = load_text(
        tmp_path,
        '{"version": "1", "all_tools": {"limits": [{"counter": "c", "window": NaN, "max": 1}]}}',
    )
    assert "NaN is not valid JSON" in error.problem


def test_duplicate_keys_rejected(tmp_path: Path) -> None:
    text = '{"version": "1", "tools": {"a": {}, "a": {"action": "deny"}}}'
    error = load_text(tmp_path, text)
    assert (error.place, error.problem) == ("tools", "duplicate key 'a'")
    text = '{"version": "1", "tools": {"a": {"limits": [{"counter": "c", "window": 1, "max": 1, "max": 9}]}}}'
    error = load_text(tmp_path, text)
    assert (error.place, error.problem) == ("tools.a.limits[0]", "duplicate key 'max'")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(PolicyError) as info:
        load_policy(missing)
    assert str(missing) in str(info.value)
    assert "cannot read" in info.value.problem


def test_not_utf8(tmp_path: Path) -> None:
    file = tmp_path / "latin1.json"
    file.write_bytes(b'{"version": "1", "hide": ["\xe9"]}')
    with pytest.raises(PolicyError) as info:
        load_policy(file)
    assert "not valid UTF-8" in str(info.value)


def test_parse_policy_uses_source_and_rejects_non_json() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(
            {
                "version": "1",
                "tools": {"t": {"require": [{"path": "a", "op": "equals", "value": {1, 2}}]}},
            },
            "inline",
        )
    assert str(info.value).startswith("inline: tools.t.require[0].value: not a JSON value")
    with pytest.raises(PolicyError) as info:
        parse_policy(
            {
                "version": "1",
                "default": "allow",
                "tools": {"t": {"require": [{"path": "a", "op": "equals", "value": float("inf")}]}},
            },
            "inline",
        )
    assert "numbers must be finite" in str(info.value)


def test_error_message_shape(tmp_path: Path) -> None:
    error = load_data(
        tmp_path,
        mutate(
            "tools/pyodide_execute/deny_if/0",
            {"path": "code", "op": "regex", "value": "x"},
        ),
    )
    assert str(error) == (
        f"{tmp_path / 'bad-policy.json'}: tools.pyodide_execute.deny_if[0].op: unknown operator 'regex' "
        "(expected one of: equals, not_equals, in, not_in, matches, not_matches, contains, "
        "lt, lte, gt, gte, max_length)"
    )


def test_minimal_policy_defaults_to_deny() -> None:
    policy = parse_policy({"version": "1"}, "min")
    assert policy.default == "deny"
    assert policy.tools == {}
    assert policy.hide == ()
