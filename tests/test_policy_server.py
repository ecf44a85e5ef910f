"""The policy gate as a user meets it: through the real MCP client, against the real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from support import POLICIES, REPO, ServerHandle, text_of


@pytest.fixture(scope="module")
def example() -> Any:
    handle = ServerHandle("--policy", str(POLICIES / "example.json")).start()
    yield handle
    handle.close()


def test_example_hides_read_image_and_denies_it_when_called(example: ServerHandle) -> None:
    names = {tool.name for tool in example.list_tools()}
    assert "pyodide_read-image" not in names and "pyodide_execute" in names
    result = example.call("pyodide_read-image", {"mountName": "output", "imagePath": "x.png"})
    assert result.is_error
    assert "read-image" in text_of(result)


def test_example_denies_unlisted_tools_under_default_deny(example: ServerHandle) -> None:
    result = example.call("pyodide_reset", {})
    assert result.is_error and text_of(result).startswith("[POLICY DENIED] pyodide_reset")


def test_example_allows_a_tool_listed_with_empty_rules(example: ServerHandle) -> None:
    result = example.call("pyodide_get-mount-points", {})
    assert not result.is_error, text_of(result)


def test_example_deny_if_names_its_reason_and_never_runs(example: ServerHandle) -> None:
    result = example.execute("import os\nos.system('true')\nran = True")
    assert result.is_error
    assert text_of(result).startswith("[POLICY DENIED] pyodide_execute: no shell")
    check = example.execute("'ran' in globals()")
    assert check.structured_content["result"] == "False"  # type: ignore[index]


def test_example_require_applies_to_the_timeout(example: ServerHandle) -> None:
    result = example.execute("1", timeout_ms=120_000)
    assert result.is_error and "[POLICY DENIED] pyodide_execute" in text_of(result)
    assert "timeout" in text_of(result)


def test_example_rate_limit_then_message_with_retry(example: ServerHandle) -> None:
    # Earlier tests in this module used some of the 10 allowed calls (refused ones do not count).
    outcomes = [example.execute("1") for _ in range(12)]
    admitted = [r for r in outcomes if not r.is_error]
    refused = [r for r in outcomes if r.is_error]
    assert refused, "the limit never fired"
    message = text_of(refused[0])
    assert message.startswith("[POLICY DENIED] pyodide_execute: rate limit 10 per minute reached")
    assert "(counter pyodide_execute_rate); retry in" in message
    used_before = 10 - len(admitted)
    assert 0 <= used_before <= 4


def test_default_policy_limits_execute_to_ten_a_minute_and_leaves_others_free() -> None:
    handle = ServerHandle().start()
    try:
        results = handle.call_many([("pyodide_execute", {"code": f"{i}"}) for i in range(12)])
        assert sum(not r.is_error for r in results) == 10
        assert sum("rate limit 10 per minute" in text_of(r) for r in results) == 2
        others = [handle.call("pyodide_get-mount-points", {}) for _ in range(15)]
        assert not any(r.is_error for r in others)
    finally:
        handle.close()


def test_deny_everything_policy_refuses_every_tool() -> None:
    handle = ServerHandle("--policy", str(POLICIES / "deny-all.json")).start()
    try:
        for name, args in [
            ("pyodide_execute", {"code": "1"}),
            ("pyodide_reset", {}),
            ("pyodide_get-mount-points", {}),
        ]:
            result = handle.call(name, args)
            assert result.is_error and text_of(result).startswith(f"[POLICY DENIED] {name}")
    finally:
        handle.close()


def test_burst_of_fifty_concurrent_calls_against_ten_admits_exactly_ten(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    handle = ServerHandle("--audit-log", str(audit)).start()
    try:
        results = handle.call_many([("pyodide_execute", {"code": "1 + 1"}) for _ in range(50)])
        assert sum(not r.is_error for r in results) == 10
        assert all("[POLICY DENIED]" in text_of(r) for r in results if r.is_error)
    finally:
        handle.close()
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(lines) == 50
    assert sum(line["decision"] == "allow" for line in lines) == 10
    assert all("code" not in line.get("arguments", {}) for line in lines)
    assert all("1 + 1" not in json.dumps(line) for line in lines)


def _approval_server(answer: str | None) -> ServerHandle:
    kwargs: dict[str, Any] = {}
    if answer is not None:

        async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
            assert "pyodide_execute" in params.message and "21 * 2" in params.message
            return types.ElicitResult(action=answer)  # type: ignore[arg-type]

        kwargs["elicitation_callback"] = elicit
    return ServerHandle("--policy", str(POLICIES / "approval.json"), client_kwargs=kwargs).start()


@pytest.mark.parametrize(("answer", "allowed"), [("accept", True), ("decline", False)])
def test_require_approval_asks_the_user(answer: str, allowed: bool) -> None:
    handle = _approval_server(answer)
    try:
        result = handle.execute("21 * 2")
        assert result.is_error is (not allowed), text_of(result)
        if allowed:
            assert result.structured_content["result"] == "42"  # type: ignore[index]
        else:
            assert "[POLICY DENIED]" in text_of(result) and "decline" in text_of(result)
    finally:
        handle.close()


def test_require_approval_without_elicitation_support_is_denied_with_the_reason() -> None:
    handle = _approval_server(None)
    try:
        result = handle.execute("21 * 2")
        assert result.is_error and "elicitation" in text_of(result)
    finally:
        handle.close()


def test_invalid_policy_file_stops_start_up_naming_file_place_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "version": "1",
                "tools": {"pyodide_execute": {"deny_if": [{"path": "code", "op": "resembles", "value": "x"}]}},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mcp_pyodide", "--policy", str(bad)],
        input=b"",
        capture_output=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode != 0
    err = proc.stderr.decode()
    assert str(bad) in err and "tools.pyodide_execute.deny_if[0].op" in err and "resembles" in err


def test_policy_cli_show_default_and_check() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "mcp_pyodide", "policy", "show-default"], capture_output=True, text=True, check=True
    )
    assert json.loads(shown.stdout)["tools"]["pyodide_execute"]["limits"][0]["max"] == 10
    checked = subprocess.run(
        [sys.executable, "-m", "mcp_pyodide", "policy", "check", str(POLICIES / "example.json")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
    assert "pyodide_execute" in checked.stdout and "hidden" in checked.stdout.lower()
