"""The policy gate has no side doors: resources obey it, and a refusal does not reveal hidden tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from sec_support import ServerHandle, text_of

from mcp_pyodide.tool_names import RESOURCES, ToolName

SECRET_TEXT = "the contents of a mounted secret"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("gate") / "data"
    (data / "private").mkdir(parents=True)
    (data / "notes.txt").write_text("ordinary notes\n")
    (data / "private" / "secret.txt").write_text(SECRET_TEXT)
    return data


def start(tmp: Path, folder: Path, policy: dict[str, Any], *extra: str) -> ServerHandle:
    path = tmp / f"policy-{abs(hash(json.dumps(policy, sort_keys=True)))}.json"
    path.write_text(json.dumps(policy))
    return ServerHandle("--policy", str(path), "--mount", f"data={folder}", *extra).start()


def assert_no_resources(handle: ServerHandle) -> None:
    session = handle.session
    assert session is not None
    capabilities = session.server_capabilities
    assert capabilities is None or capabilities.resources is None
    with pytest.raises(MCPError):
        handle.run(session.list_resources())
    for uri in ("file:///mnt/data/private/secret.txt", "file:///mnt/data/notes.txt"):
        with pytest.raises(MCPError) as refused:
            handle.run(session.read_resource(uri))
        assert SECRET_TEXT not in str(refused.value)


@pytest.mark.parametrize(
    "policy",
    [
        {"version": "1", "default": "deny", "hide": ["*"]},
        {"version": "1", "default": "deny", "tools": {ToolName.EXECUTE.value: {}}},
        {"version": "1", "default": "allow", "hide": [RESOURCES]},
        {"version": "1", "default": "allow", "tools": {RESOURCES: {"action": "deny"}}},
    ],
    ids=["deny-hide-all", "deny-unlisted", "hide-resources", "action-deny"],
)
def test_a_policy_that_denies_resources_serves_no_files(tmp_path: Path, folder: Path, policy: dict[str, Any]) -> None:
    handle = start(tmp_path, folder, policy)
    try:
        assert_no_resources(handle)
        # An execute result links no resource the client could not read.
        if ToolName.EXECUTE.value in policy.get("tools", {}):
            result = handle.execute("1")
            assert not result.is_error, text_of(result)
    finally:
        handle.close()


def test_resources_listed_in_a_deny_policy_are_served(tmp_path: Path, folder: Path) -> None:
    handle = start(tmp_path, folder, {"version": "1", "default": "deny", "tools": {RESOURCES: {}}})
    try:
        assert handle.session is not None
        listed = {str(r.uri) for r in handle.run(handle.session.list_resources()).resources}
        assert "file:///mnt/data/notes.txt" in listed
        assert handle.call(ToolName.GET_MOUNT_POINTS.value).is_error  # the tools stay denied
    finally:
        handle.close()


def test_resource_conditions_filter_the_list_and_refuse_the_read(tmp_path: Path, folder: Path) -> None:
    policy = {
        "version": "1",
        "default": "allow",
        "tools": {
            RESOURCES: {"deny_if": [{"path": "uri", "op": "contains", "value": "/private/", "reason": "private"}]}
        },
    }
    handle = start(tmp_path, folder, policy)
    try:
        session = handle.session
        assert session is not None
        listed = {str(r.uri) for r in handle.run(session.list_resources()).resources}
        assert "file:///mnt/data/notes.txt" in listed
        assert not any("/private/" in uri for uri in listed), listed
        with pytest.raises(MCPError) as refused:
            handle.run(session.read_resource("file:///mnt/data/private/secret.txt"))
        assert str(refused.value).startswith(f"[POLICY DENIED] {RESOURCES}: private"), refused.value
        assert SECRET_TEXT not in str(refused.value)
        # Other spellings of the same file do not slip past the rule: the policy sees what is read.
        (folder / "public").mkdir(exist_ok=True)
        link = folder / "public" / "link.txt"
        if not link.is_symlink():
            link.symlink_to(folder / "private" / "secret.txt")
        for spelling in (
            "file:///mnt/data/%70rivate/secret.txt",
            "file://localhost/mnt/data/private/secret.txt",
            "file:///mnt/data/public/../private/secret.txt",
            "file:///mnt/data//private//secret.txt",
            "file:///mnt/data/./private/./secret.txt",
            "file:///mnt/data/public/link.txt",
        ):
            with pytest.raises(MCPError) as dodged:
                handle.run(session.read_resource(spelling))
            assert SECRET_TEXT not in str(dodged.value), spelling
        text = handle.run(session.read_resource("file:///mnt/data/notes.txt")).contents[0]
        assert getattr(text, "text", None) == "ordinary notes\n"
    finally:
        handle.close()


def test_resources_are_rate_limited(tmp_path: Path, folder: Path) -> None:
    policy = {
        "version": "1",
        "default": "allow",
        "tools": {RESOURCES: {"limits": [{"counter": "files", "window": "hour", "max": 2}]}},
    }
    handle = start(tmp_path, folder, policy)
    try:
        session = handle.session
        assert session is not None
        handle.run(session.list_resources())
        handle.run(session.read_resource("file:///mnt/data/notes.txt"))
        with pytest.raises(MCPError) as refused:
            handle.run(session.read_resource("file:///mnt/data/notes.txt"))
        assert "rate limit 2 per hour reached (counter files)" in str(refused.value)
        # The tools are not limited by the resources' counter.
        assert not handle.call(ToolName.GET_MOUNT_POINTS.value).is_error
    finally:
        handle.close()


def test_refusing_a_hidden_or_unknown_tool_lists_only_visible_tools(tmp_path: Path, folder: Path) -> None:
    hidden = [ToolName.READ_IMAGE.value, ToolName.RESET.value]
    handle = start(tmp_path, folder, {"version": "1", "default": "allow", "hide": hidden})
    try:
        visible = {tool.name for tool in handle.list_tools()}
        assert visible and not visible & set(hidden)
        for name in (*hidden, "no_such_tool"):
            result = handle.call(name, {})
            assert result.is_error
            available = text_of(result).split("Available:", 1)[1]
            assert {part.strip() for part in available.split(",")} == visible, text_of(result)
    finally:
        handle.close()


def test_with_everything_hidden_a_refusal_names_no_tool(tmp_path: Path, folder: Path) -> None:
    handle = start(tmp_path, folder, {"version": "1", "default": "deny", "hide": ["*"]})
    try:
        result = handle.call(ToolName.EXECUTE.value, {"code": "1"})
        assert result.is_error and text_of(result).endswith("Available: none"), text_of(result)
        assert not any(name.value in text_of(result).split("Available:")[1] for name in ToolName)
    finally:
        handle.close()
