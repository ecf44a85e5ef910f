"""The served output schemas are compacted (fewer keywords for clients to walk) without changing what they accept."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

from mcp_pyodide.server.execute import ExecuteOutput
from mcp_pyodide.server.registry import compact_schema

GOOD: dict[str, Any] = {
    "stdout": "",
    "stderr": "",
    "result": "2",
    "error": None,
    "timed_out": False,
    "state_reset": False,
    "duration_ms": 0.3,
    "stdout_truncated_chars": 0,
    "stderr_truncated_chars": 0,
    "figures": [],
    "files": [],
    "files_not_returned": 0,
    "loaded_packages": [],
}
FAILED = {**GOOD, "result": None, "error": {"type": "ValueError", "message": "m", "traceback": "t"}}
BAD = [
    {**GOOD, "result": 2},
    {**GOOD, "error": {"type": "ValueError", "message": "m"}},
    {**GOOD, "error": "boom"},
    {**GOOD, "duration_ms": "fast"},
    {k: v for k, v in GOOD.items() if k != "stdout"},
    {**GOOD, "figures": [1]},
]


def schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    original = ExecuteOutput.model_json_schema(mode="serialization")
    return original, compact_schema(original)


def test_the_execute_schema_loses_its_references_and_alternatives() -> None:
    _, compact = schemas()
    text = repr(compact)
    assert "$ref" not in text and "$defs" not in text and "anyOf" not in text and "'title'" not in text
    assert compact["properties"]["result"]["type"] == ["string", "null"]
    assert compact["properties"]["error"]["type"] == ["object", "null"]
    assert set(compact["properties"]["error"]["required"]) == {"type", "message", "traceback"}


@pytest.mark.parametrize("instance", [GOOD, FAILED, *BAD])
def test_compact_and_original_accept_the_same_results(instance: dict[str, Any]) -> None:
    original, compact = schemas()
    verdicts = [jsonschema.Draft202012Validator(s).is_valid(instance) for s in (original, compact)]
    assert verdicts[0] == verdicts[1], f"the schemas disagree on {instance}"
    assert verdicts[0] == (instance in (GOOD, FAILED))


class Node(BaseModel):
    name: str
    children: list[Node]


def test_a_recursive_model_keeps_its_reference() -> None:
    compact = compact_schema(Node.model_json_schema(mode="serialization"))
    assert "$defs" in compact
    validator = jsonschema.Draft202012Validator(compact)
    assert validator.is_valid({"name": "a", "children": [{"name": "b", "children": []}]})
    assert not validator.is_valid({"name": "a", "children": [{"name": 1, "children": []}]})
