"""Append-only JSON-lines audit log of policy decisions.

The code a model submits can contain secrets or be huge, so it is never
written: ``code`` values become a SHA-256 digest and a length, and other long
strings are summarised the same way.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .engine import Decision

LONG_STRING = 200
"""Argument strings longer than this are logged as digest + length only."""


def _digest(value: object) -> dict[str, Any]:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return {
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "length": len(text),
    }


def redact(value: Any) -> Any:
    """Copy ``value`` with every ``code`` entry and long string replaced by a digest."""
    if isinstance(value, Mapping):
        return {str(key): _digest(item) if key == "code" else redact(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    if isinstance(value, str) and len(value) > LONG_STRING:
        return _digest(value)
    return value


def utc_now_iso() -> str:
    """Current time as ISO-8601 UTC with millisecond precision and a ``Z`` suffix."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def audit_record(
    decision: Decision,
    arguments: Mapping[str, Any],
    *,
    duration_ms: float | None = None,
    outcome: str | None = None,
) -> dict[str, Any]:
    """Build the log record for one decision.

    The server fills ``duration_ms`` and ``outcome`` (e.g. ``ok``, ``error``,
    ``timeout``, ``denied``) after the call, either here or on the returned dict.
    """
    record: dict[str, Any] = {
        "time": utc_now_iso(),
        "session": decision.session_id,
        **({"principal": decision.principal} if decision.principal else {}),
        "tool": decision.tool,
        "decision": decision.kind,
        "rule": decision.rule,
        "reason": decision.reason,
    }
    if "code" in arguments:
        digest = _digest(arguments["code"])
        record["code_sha256"] = digest["sha256"]
        record["code_length"] = digest["length"]
    others = {key: value for key, value in arguments.items() if key != "code"}
    if others:
        record["arguments"] = redact(others)
    record["duration_ms"] = duration_ms
    record["outcome"] = outcome
    return record


class AuditLog:
    """Appends one JSON object per line to ``path`` and flushes after each write.

    The file is opened per write so external log rotation just works, and a
    lock keeps lines whole when written from several threads.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` (redacted again defensively, so code can never leak)."""
        line = json.dumps(redact(record), ensure_ascii=False, separators=(",", ":"), default=str)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
                handle.flush()
