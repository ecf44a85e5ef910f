"""The broker's decoder: every value from Node is type-checked and bounded on arrival (no Node here)."""

from __future__ import annotations

import base64
import dataclasses
import re
import tracemalloc

import pytest

from mcp_pyodide import _protocol as p

LIMITS = p.Limits(output=1_000)


def test_a_good_execute_reply_decodes_to_typed_values() -> None:
    reply = p.decode_reply(
        "execute",
        {
            "ok": False,
            "result": None,
            "error": {"type": "ValueError", "message": "bad", "traceback": "Traceback..."},
            "figures": ["/mnt/output/a.png"],
            "stdoutTruncatedChars": 5,
            "durationMs": 12.5,
            "generation": 2,
            "unknownField": {"ignored": True},
        },
        LIMITS,
    )
    assert isinstance(reply, p.ExecuteReply)
    assert reply.error == p.ErrorInfo("ValueError", "bad", "Traceback...")
    assert reply.figures == ["/mnt/output/a.png"]
    assert reply.stdout_truncated_chars == 5 and reply.duration_ms == 12.5
    assert not hasattr(reply, "unknown_field")


def test_the_broker_cuts_a_huge_result_whatever_the_guest_says() -> None:
    reply = p.decode_reply("execute", {"ok": True, "result": "x" * 6_000_000}, LIMITS)
    assert reply.result is not None and len(reply.result) < 1_100
    assert "5,999,000 more characters cut" in reply.result


def test_error_text_and_type_are_bounded() -> None:
    error = {"type": "T" * 10_000, "message": "m" * 50_000, "traceback": "t" * 50_000}
    reply = p.decode_reply("execute", {"ok": False, "error": error}, LIMITS)
    assert reply.error is not None
    assert len(reply.error.type) < p.MAX_NAME + 50
    assert len(reply.error.message) < 1_100 and len(reply.error.traceback) < 1_100


def test_lists_are_bounded_in_length_and_entries() -> None:
    reply = p.decode_reply("execute", {"figures": ["/mnt/output/" + "a" * 10_000] * 30_000}, LIMITS)
    assert len(reply.figures) == p.MAX_PATHS
    assert all(len(path) < p.MAX_PATH + 50 for path in reply.figures)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"ok": "yes"}, "ok"),
        ({"result": 7}, "result"),
        ({"stdoutTruncatedChars": -1}, "stdoutTruncatedChars"),
        ({"stdoutTruncatedChars": True}, "stdoutTruncatedChars"),
        ({"stdoutTruncatedChars": 2**60}, "stdoutTruncatedChars"),
        ({"durationMs": float("nan")}, "durationMs"),
        ({"figures": "/etc/passwd"}, "figures"),
        ({"figures": [1]}, "figures[0]"),
        ({"error": "boom"}, "error"),
        ({"error": {"type": None}}, "error.type"),
    ],
)
def test_wrong_types_are_refused_naming_the_field(payload: dict[str, object], field: str) -> None:
    with pytest.raises(p.ProtocolError, match=re.escape(f"execute reply.{field}:")):
        p.decode_reply("execute", payload, LIMITS)


def test_a_payload_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(p.ProtocolError, match="expected an object"):
        p.decode_reply("execute", ["ok"], LIMITS)  # type: ignore[arg-type]


def test_frames_are_checked() -> None:
    assert p.decode_frame({"id": 3, "kind": "result", "payload": None}) == p.Frame(3, "result", {})
    for bad in ([], {"id": True, "kind": "x"}, {"id": 1, "kind": 5}, {"id": 1, "kind": "x", "payload": []}):
        with pytest.raises(p.ProtocolError):
            p.decode_frame(bad)


def test_events_decode_and_unknown_events_are_ignored() -> None:
    data = base64.b64encode(b"image").decode()
    assert p.decode_event({"event": "snapshot", "data": data}, LIMITS) == p.SnapshotEvent(data=b"image")
    assert p.decode_event({"event": "restarting", "reason": "timeout", "generation": 3}, LIMITS) == p.RestartingEvent(
        "timeout", 3
    )
    assert p.decode_event({"event": "later-version"}, LIMITS) is None
    with pytest.raises(p.ProtocolError, match="base64"):
        p.decode_event({"event": "snapshot", "data": "not base64!"}, LIMITS)


def test_an_oversize_snapshot_is_refused_before_decoding() -> None:
    huge = "A" * ((p.MAX_SNAPSHOT_BYTES * 4) // 3 + 8)
    tracemalloc.start()
    try:
        with pytest.raises(p.ProtocolError, match="over the limit"):
            p.decode(p.SnapshotEvent, {"data": huge}, LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20  # nothing the size of the payload was made


def test_fetch_requests_are_refused_not_cut_when_oversize() -> None:
    ok = p.decode(p.FetchRequest, {"url": "https://x.test/", "headers": [["a", "b"]]}, LIMITS)
    assert ok.as_netbroker() == {"url": "https://x.test/", "method": "GET", "headers": [["a", "b"]], "body": None}
    with pytest.raises(p.ProtocolError, match="over the limit"):
        p.decode(p.FetchRequest, {"url": "https://x.test/" + "a" * p.MAX_URL}, LIMITS)
    with pytest.raises(p.ProtocolError, match="pair"):
        p.decode(p.FetchRequest, {"url": "https://x.test/", "headers": [["a"]]}, LIMITS)


def test_output_budget_bounds_a_call_in_total() -> None:
    budget = p.OutputBudget(10)
    assert budget.take("stdout", "12345678") == "12345678"
    assert budget.take("stdout", "abcdef") == "ab"
    assert budget.take("stderr", "x") == "x"
    assert budget.dropped == {"stdout": 4, "stderr": 0}


def test_requests_encode_with_camel_case_names() -> None:
    mount = p.MountSpec("/mnt/data", "/host/data", True)
    assert p.encode(p.ExecuteRequest(code="1", timeout_ms=5)) == {"code": "1", "timeoutMs": 5}
    assert p.encode(mount) == {"guestPath": "/mnt/data", "hostPath": "/host/data", "readOnly": True}


def test_every_incoming_field_has_a_bound_or_a_closed_type() -> None:
    """A new field must say how it is bounded: strings, lists and numbers carry a `bound`."""
    for cls in p.INCOMING:
        for spec in dataclasses.fields(cls):
            hint = p._hints(cls)[spec.name]
            closed = hint in (bool, "bool") or "Literal" in str(hint) or "ErrorInfo" in str(hint)
            assert closed or spec.metadata.get("limit") is not None, f"{cls.__name__}.{spec.name} has no bound"


@pytest.mark.parametrize("name", ["docs/protocol.md", "SECURITY.md"])
def test_the_docs_list_every_field_with_its_current_bound(name: str) -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parent.parent / name).read_text(encoding="utf-8")
    table = docs.split("<!-- bounds-table:start -->\n", 1)[1].split("\n<!-- bounds-table:end -->", 1)[0]
    assert table == p.bounds_table(), f"{name} is stale: paste bounds_table() between the markers"
    for cls in p.INCOMING:  # every message field of the catalogue is named
        for spec in dataclasses.fields(cls):
            assert f"| {cls.__name__} | `{p.wire_name(spec.name)}` |" in table
