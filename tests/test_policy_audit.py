"""Audit log lines and the ``explain`` summary."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path

from mcp_pyodide.policy import (
    AuditLog,
    PolicyEngine,
    audit_record,
    default_policy,
    explain,
    parse_policy,
)

SECRET_CODE = "import os\nAPI_KEY = 'sk-very-secret'\nprint(API_KEY)\n"


def test_audit_lines_hash_code_and_never_store_it(tmp_path: Path) -> None:
    engine = PolicyEngine(default_policy(), clock=lambda: 0.0)
    log = AuditLog(tmp_path / "logs" / "audit.jsonl")
    args = {"code": SECRET_CODE, "timeout": 30000, "note": "x" * 500}
    decision = asyncio.run(engine.decide("pyodide_execute", args, "sess-1"))
    record = audit_record(decision, args)
    record["duration_ms"] = 12.5
    record["outcome"] = "ok"
    log.write(record)
    refused = asyncio.run(engine.decide("pyodide_execute", {"code": "1"}, "sess-2"))
    log.write(audit_record(refused, {"code": "1"}, duration_ms=0, outcome="denied"))

    text = (tmp_path / "logs" / "audit.jsonl").read_text(encoding="utf-8")
    assert "sk-very-secret" not in text
    lines = text.splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["code_sha256"] == hashlib.sha256(SECRET_CODE.encode()).hexdigest()
    assert first["code_length"] == len(SECRET_CODE)
    assert "code" not in first and "code" not in first["arguments"]
    assert first["arguments"]["timeout"] == 30000
    assert first["arguments"]["note"] == {
        "sha256": hashlib.sha256(b"x" * 500).hexdigest(),
        "length": 500,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first["session"] == "sess-1"
    assert first["tool"] == "pyodide_execute"
    assert first["decision"] == "allow"
    assert first["rule"] == "tools.pyodide_execute"
    assert first["duration_ms"] == 12.5 and first["outcome"] == "ok"
    second = json.loads(lines[1])
    assert second["decision"] == "allow" and second["outcome"] == "denied"


def test_audit_write_redacts_code_passed_directly(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    log.write({"tool": "t", "arguments": {"code": SECRET_CODE}})
    log.write({"tool": "t", "arguments": {"code": SECRET_CODE}})
    text = (tmp_path / "a.jsonl").read_text(encoding="utf-8")
    assert "secret" not in text
    assert [json.loads(line)["arguments"]["code"]["length"] for line in text.splitlines()] == [len(SECRET_CODE)] * 2


def test_audit_record_for_denial_and_approval(tmp_path: Path) -> None:
    data = {"version": "1", "tools": {"t": {"action": "require_approval"}}}
    engine = PolicyEngine(parse_policy(data, "p"), clock=lambda: 0.0)
    pending = asyncio.run(engine.decide("t", {}, "s"))
    assert audit_record(pending, {})["decision"] == "needs_approval"
    assert audit_record(engine.commit(pending), {})["decision"] == "allow"
    denied = asyncio.run(engine.decide("other", {}, "s"))
    record = audit_record(denied, {})
    assert record["decision"] == "deny"
    assert record["rule"] == "default"
    assert record["reason"] == "not allowed by policy (default deny)"
    assert "code_sha256" not in record and "arguments" not in record


def test_explain_example() -> None:
    data = {
        "version": "1",
        "default": "deny",
        "hide": ["pyodide_read-image"],
        "all_tools": {"limits": [{"counter": "all", "window": "hour", "max": 500, "scope": "grant"}]},
        "tools": {
            "pyodide_execute": {
                "limits": [{"counter": "pyodide_execute_rate", "window": "minute", "max": 10}],
                "deny_if": [
                    {
                        "path": "code",
                        "op": "matches",
                        "value": "(?i)\\bos\\.system\\b",
                        "reason": "no shell",
                    }
                ],
                "require": [{"path": "timeout", "op": "lte", "value": 60000}],
            },
            "pyodide_get-mount-points": {},
            "pyodide_install-package": {"action": "require_approval"},
            "pyodide_typo": {},
        },
    }
    text = explain(
        parse_policy(data, "policy.json"),
        [
            "pyodide_execute",
            "pyodide_read-image",
            "pyodide_get-mount-points",
            "pyodide_list-files",
        ],
    )
    assert text == (
        "Policy policy.json (version 1): unlisted tools are denied.\n"
        "Hidden: pyodide_read-image\n"
        "Limit on all tools together: 500 per hour (counter all, scope grant)\n"
        "Tools:\n"
        "  pyodide_execute: allowed\n"
        "    limit: 10 per minute (counter pyodide_execute_rate, scope grant)\n"
        "    denied if: code matches '(?i)\\bos\\.system\\b'  [no shell]\n"
        "    requires: timeout lte 60000\n"
        "  pyodide_read-image: hidden (left out of the tool list; denied if called)\n"
        "  pyodide_get-mount-points: allowed\n"
        "  pyodide_list-files: denied (not listed, default deny)\n"
        "Warning: the policy names tools this server does not offer: "
        "pyodide_install-package, pyodide_typo\n"
    )


def test_explain_default_policy() -> None:
    text = explain(default_policy(), ["pyodide_execute", "pyodide_list-files"])
    assert "unlisted tools are allowed" in text
    assert "limit: 10 per minute (counter pyodide_execute_rate, scope grant)" in text
    assert "pyodide_list-files: allowed (not listed, default allow), no limits" in text
    assert "Warning" not in text
