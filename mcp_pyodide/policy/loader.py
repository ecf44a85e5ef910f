"""Parsing and strict validation of policy files (format version "1").

Validation is strict on purpose: an unknown field is more likely a typo that
would silently weaken the policy than an intentional extension, so it is an
error. Nothing is returned until the whole document has been checked.
Over 300 lines on purpose: one validator walks one document top to bottom, so every field's rule
is read beside the fields around it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn, cast

from .errors import PolicyError
from .model import (
    OPERATORS,
    WINDOWS,
    Action,
    Condition,
    Default,
    Limit,
    Policy,
    Scope,
    ToolRule,
    is_number,
)

SUPPORTED_VERSIONS = ("1",)
_TOP_FIELDS = ("version", "default", "hide", "all_tools", "tools")
_ALL_TOOLS_FIELDS = ("limits",)
_TOOL_FIELDS = ("action", "reason", "limits", "deny_if", "require")
_LIMIT_FIELDS = ("counter", "window", "max", "scope")
_CONDITION_FIELDS = ("path", "op", "value", "reason")
_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_\-]+")


class _DuplicateKeys(dict[str, Any]):
    """A JSON object that had repeated keys; kept so the error can name its place."""

    duplicates: list[str]


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    duplicates: list[str] = []
    for key, value in pairs:
        if key in result:
            duplicates.append(key)
        result[key] = value
    if duplicates:
        marked = _DuplicateKeys(result)
        marked.duplicates = duplicates
        return marked
    return result


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _key(place: str, key: str) -> str:
    part = f".{key}" if _SIMPLE_KEY.fullmatch(key) else f"[{json.dumps(key)}]"
    if not place:
        return part.lstrip(".")
    return place + part


def _index(place: str, index: int) -> str:
    return f"{place}[{index}]"


class _Validator:
    """Walks the document, raising a :class:`PolicyError` at the first problem."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, place: str, problem: str) -> NoReturn:
        raise PolicyError(self.source, place or "top level", problem)

    def obj(self, value: object, place: str, fields: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(place, f"expected an object, got {_type_name(value)}")
        self._no_duplicates(value, place)
        for key in value:
            if not isinstance(key, str):
                self.fail(place, f"object keys must be strings, got {_type_name(key)}")
            if key not in fields:
                self.fail(_key(place, key), f"unknown field (allowed: {', '.join(fields)})")
        return cast(Mapping[str, Any], value)

    def _no_duplicates(self, value: object, place: str) -> None:
        duplicates = getattr(value, "duplicates", None)
        if duplicates:
            self.fail(place, f"duplicate key '{duplicates[0]}'")

    def string(self, value: object, place: str, *, allow_empty: bool = False) -> str:
        if not isinstance(value, str):
            self.fail(place, f"expected a string, got {_type_name(value)}")
        if not allow_empty and not value:
            self.fail(place, "must not be empty")
        return value

    def array(self, value: object, place: str) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            self.fail(place, f"expected an array, got {_type_name(value)}")
        return list(value)

    def json_value(self, value: object, place: str) -> None:
        """Condition values must be plain JSON so matching semantics are well defined."""
        if value is None or isinstance(value, (bool, str)):
            return
        if isinstance(value, (int, float)):
            if not is_number(value):
                self.fail(place, "numbers must be finite")
            return
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                self.json_value(item, _index(place, i))
            return
        if isinstance(value, Mapping):
            self._no_duplicates(value, place)
            for key, item in value.items():
                if not isinstance(key, str):
                    self.fail(place, f"object keys must be strings, got {_type_name(key)}")
                self.json_value(item, _key(place, key))
            return
        self.fail(place, f"not a JSON value ({_type_name(value)})")

    def policy(self, data: object) -> Policy:
        top = self.obj(data, "", _TOP_FIELDS)
        if "version" not in top:
            self.fail("version", 'missing required field (expected "1")')
        version = top["version"]
        if not isinstance(version, str) or version not in SUPPORTED_VERSIONS:
            self.fail("version", f'unsupported version {json.dumps(version)} (expected "1")')

        default_value = top.get("default", "deny")
        if default_value not in ("allow", "deny"):
            self.fail(
                "default",
                f'expected "allow" or "deny", got {json.dumps(default_value)}',
            )
        default = cast(Default, default_value)

        hide: list[str] = []
        if "hide" in top:
            for i, name in enumerate(self.array(top["hide"], "hide")):
                hide.append(self.string(name, _index("hide", i)))

        all_tools_limits: tuple[Limit, ...] = ()
        if "all_tools" in top:
            section = self.obj(top["all_tools"], "all_tools", _ALL_TOOLS_FIELDS)
            if "limits" in section:
                all_tools_limits = self.limits(section["limits"], "all_tools.limits")

        tools: dict[str, ToolRule] = {}
        if "tools" in top:
            entries = top["tools"]
            if not isinstance(entries, Mapping):
                self.fail("tools", f"expected an object, got {_type_name(entries)}")
            self._no_duplicates(entries, "tools")
            for name, entry in entries.items():
                if not isinstance(name, str) or not name:
                    self.fail("tools", "tool names must be non-empty strings")
                tools[name] = self.tool(name, entry, _key("tools", name))

        return Policy(
            source=self.source,
            default=default,
            hide=tuple(hide),
            all_tools_limits=all_tools_limits,
            tools=MappingProxyType(tools),
            version=version,
        )

    def tool(self, name: str, entry: object, place: str) -> ToolRule:
        fields = self.obj(entry, place, _TOOL_FIELDS)
        action_value = fields.get("action", "allow")
        if action_value not in ("allow", "deny", "require_approval"):
            self.fail(
                _key(place, "action"),
                f'expected "allow", "deny" or "require_approval", got {json.dumps(action_value)}',
            )
        reason = None
        if "reason" in fields:
            reason = self.string(fields["reason"], _key(place, "reason"))
        limits: tuple[Limit, ...] = ()
        if "limits" in fields:
            limits = self.limits(fields["limits"], _key(place, "limits"))
        deny_if = self.conditions(fields.get("deny_if", []), _key(place, "deny_if"), "deny_if")
        require = self.conditions(fields.get("require", []), _key(place, "require"), "require")
        return ToolRule(
            name=name,
            action=cast(Action, action_value),
            reason=reason,
            limits=limits,
            deny_if=deny_if,
            require=require,
            place=place,
        )

    def limits(self, value: object, place: str) -> tuple[Limit, ...]:
        return tuple(self.limit(item, _index(place, i)) for i, item in enumerate(self.array(value, place)))

    def limit(self, value: object, place: str) -> Limit:
        fields = self.obj(value, place, _LIMIT_FIELDS)
        for required in ("counter", "window", "max"):
            if required not in fields:
                self.fail(_key(place, required), "missing required field")
        counter = self.string(fields["counter"], _key(place, "counter"))

        window_raw = fields["window"]
        window_name: str | None = None
        if isinstance(window_raw, str):
            if window_raw not in WINDOWS:
                self.fail(
                    _key(place, "window"),
                    f"unknown window '{window_raw}' (expected second, minute, hour, day "
                    "or a positive number of seconds)",
                )
            window_name = window_raw
            window = WINDOWS[window_raw]
        elif is_number(window_raw) and window_raw > 0:
            window = float(window_raw)
        else:
            self.fail(
                _key(place, "window"),
                f"expected second, minute, hour, day or a positive number of seconds, "
                f"got {json.dumps(window_raw) if _is_plain(window_raw) else _type_name(window_raw)}",
            )

        max_raw = fields["max"]
        if isinstance(max_raw, bool) or not isinstance(max_raw, int) or max_raw < 0:
            shown = json.dumps(max_raw) if _is_plain(max_raw) else _type_name(max_raw)
            self.fail(_key(place, "max"), f"expected an integer >= 0, got {shown}")

        scope_raw = fields.get("scope", "grant")
        if scope_raw not in ("grant", "session"):
            shown = json.dumps(scope_raw) if _is_plain(scope_raw) else _type_name(scope_raw)
            self.fail(_key(place, "scope"), f'expected "grant" or "session", got {shown}')
        return Limit(
            counter=counter,
            window=window,
            window_name=window_name,
            max=max_raw,
            scope=cast(Scope, scope_raw),
            place=place,
        )

    def conditions(self, value: object, place: str, kind: str) -> tuple[Condition, ...]:
        items = self.array(value, place)
        return tuple(self.condition(item, _index(place, i), kind) for i, item in enumerate(items))

    def condition(self, value: object, place: str, kind: str) -> Condition:
        fields = self.obj(value, place, _CONDITION_FIELDS)
        for required in ("path", "op", "value"):
            if required not in fields:
                self.fail(_key(place, required), "missing required field")
        path = self.string(fields["path"], _key(place, "path"))
        if any(not segment for segment in path.split(".")):
            self.fail(_key(place, "path"), f"empty segment in path '{path}'")
        op = self.string(fields["op"], _key(place, "op"))
        if op not in OPERATORS:
            self.fail(
                _key(place, "op"),
                f"unknown operator '{op}' (expected one of: {', '.join(OPERATORS)})",
            )
        expected = fields["value"]
        value_place = _key(place, "value")
        self.json_value(expected, value_place)
        pattern: re.Pattern[str] | None = None
        if op in ("in", "not_in") and not isinstance(expected, (list, tuple)):
            self.fail(value_place, f"operator {op} needs an array, got {_type_name(expected)}")
        if op in ("matches", "not_matches"):
            regex = self.string(expected, value_place, allow_empty=True)
            try:
                pattern = re.compile(regex)
            except re.error as exc:
                self.fail(value_place, f"invalid regular expression '{regex}': {exc}")
        if op in ("lt", "lte", "gt", "gte") and not is_number(expected):
            self.fail(value_place, f"operator {op} needs a number, got {_type_name(expected)}")
        if op == "max_length" and (isinstance(expected, bool) or not isinstance(expected, int) or expected < 0):
            self.fail(
                value_place,
                f"operator max_length needs an integer >= 0, got {_type_name(expected)}",
            )
        reason = None
        if "reason" in fields:
            reason = self.string(fields["reason"], _key(place, "reason"))
        if isinstance(expected, tuple):
            expected = list(expected)
        return Condition(
            kind="require" if kind == "require" else "deny_if",
            path=path,
            op=op,
            value=expected,
            reason=reason,
            place=place,
            pattern=pattern,
        )


def _is_plain(value: object) -> bool:
    """True for scalars that read well as JSON in an error message."""
    return (
        value is None
        or isinstance(value, (bool, str))
        or (isinstance(value, (int, float)) and not (isinstance(value, float) and not math.isfinite(value)))
    )


def parse_policy(data: object, source: str = "<policy>") -> Policy:
    """Validate already-decoded JSON data and build a :class:`Policy`.

    ``source`` is only used in error messages (a file name, ``<default>``, ...).
    Raises :class:`PolicyError` for any problem; never returns a partial policy.
    """
    return _Validator(source).policy(data)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def load_policy(path: str | Path) -> Policy:
    """Read, decode and validate a policy file; every failure is a :class:`PolicyError`."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(source, "file", f"cannot read: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PolicyError(source, f"byte {exc.start}", "file is not valid UTF-8") from exc
    try:
        data = json.loads(text, object_pairs_hook=_object_pairs, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise PolicyError(source, f"line {exc.lineno}, column {exc.colno}", f"invalid JSON: {exc.msg}") from exc
    except ValueError as exc:
        raise PolicyError(source, "JSON", f"invalid JSON: {exc}") from exc
    return parse_policy(data, source)
