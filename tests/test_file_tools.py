"""The host-side file tools and MCP resources, through the real MCP client over stdio."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError
from support import ALLOW_ALL, ServerHandle, text_of

MAX_IMAGE = 4096


def tiny_png() -> bytes:
    """A valid 1x1 red PNG, built with the standard library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte, then one red pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("files")
    data, output, outside = base / "data", base / "output", base / "outside"
    for folder in (data, output, outside, data / "sub"):
        folder.mkdir()
    (data / "plot.png").write_bytes(tiny_png())
    (data / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20)
    (data / "anim.gif").write_bytes(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
    (data / "icon.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>')
    (data / "notes.txt").write_text("just text\n")
    (data / "fake.png").write_text("not really a png\n")
    (data / "big.png").write_bytes(tiny_png() + b"\x00" * MAX_IMAGE)
    (data / "sub" / "deep.csv").write_text("a,b\n1,2\n")
    (outside / "secret.png").write_bytes(tiny_png())
    (data / "escape.png").symlink_to(outside / "secret.png")
    (data / "passwd").symlink_to("/etc/passwd")
    return {"data": data, "output": output, "outside": outside}


@pytest.fixture(scope="module")
def server(folders: dict[str, Path]) -> Iterator[ServerHandle]:
    notifications: list[Any] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceListChangedNotification):
            notifications.append(message)

    handle = ServerHandle(
        "--policy",
        ALLOW_ALL,
        "--mount",
        f"data={folders['data']}",
        "--mount",
        f"ro={folders['outside']}:ro",
        "--output-dir",
        str(folders["output"]),
        "--max-image-bytes",
        str(MAX_IMAGE),
        env={"MCP_PYODIDE_MOUNTS": "", "PYODIDE_DATA_DIR": ""},
        client_kwargs={"message_handler": on_message},
    )
    handle.notifications = notifications  # type: ignore[attr-defined]
    handle.start()
    try:
        yield handle
    finally:
        handle.close()


def image_of(result: types.CallToolResult) -> types.ImageContent:
    images = [block for block in result.content if isinstance(block, types.ImageContent)]
    assert len(images) == 1, result
    return images[0]


def assert_refused(server: ServerHandle, tool: str, arguments: dict[str, Any], *phrases: str) -> None:
    result = server.call(tool, arguments)
    assert result.is_error, result
    text = text_of(result)
    for phrase in phrases:
        assert phrase in text, text
    # The server is still serving after the refusal.
    assert not server.call("pyodide_get-mount-points").is_error


def test_tools_are_listed_read_only(server: ServerHandle) -> None:
    tools = {tool.name: tool for tool in server.list_tools()}
    for name in ("pyodide_get-mount-points", "pyodide_list-mounted-directory", "pyodide_read-image"):
        annotations = tools[name].annotations
        assert annotations is not None
        assert annotations.read_only_hint is True and annotations.idempotent_hint is True
        assert annotations.open_world_hint is False and annotations.destructive_hint is False
    assert tools["pyodide_read-image"].input_schema["required"] == ["mountName", "imagePath"]
    assert tools["pyodide_list-mounted-directory"].input_schema["required"] == ["mountName"]
    assert tools["pyodide_get-mount-points"].output_schema is not None


def test_mount_points_list_data_and_output(server: ServerHandle, folders: dict[str, Path]) -> None:
    result = server.call("pyodide_get-mount-points")
    assert not result.is_error
    assert result.structured_content is not None
    mounts = {m["name"]: m for m in result.structured_content["mounts"]}
    assert set(mounts) == {"output", "data", "ro"}
    assert mounts["data"] == {
        "name": "data",
        "hostPath": str(folders["data"].resolve()),
        "pythonPath": "/mnt/data",
        "readOnly": False,
    }
    assert mounts["output"]["pythonPath"] == "/mnt/output" and not mounts["output"]["readOnly"]
    assert mounts["ro"]["readOnly"] is True
    assert "/mnt/data" in text_of(result) and "read-only" in text_of(result)


def test_list_directory_shows_files_with_sizes(server: ServerHandle) -> None:
    result = server.call("pyodide_list-mounted-directory", {"mountName": "data"})
    assert not result.is_error, text_of(result)
    sc = result.structured_content
    assert sc is not None
    entries = {e["name"]: e for e in sc["entries"]}
    assert entries["sub"]["type"] == "directory"
    assert entries["plot.png"] == {**entries["plot.png"], "type": "file", "size": len(tiny_png())}
    assert entries["passwd"]["type"] == "symlink" and entries["passwd"]["size"] is None
    assert sc["entries"][0]["name"] == "sub"  # folders first
    assert sc["omitted"] == 0 and sc["total"] == len(sc["entries"])
    assert f"plot.png  [{len(tiny_png())} B" in text_of(result)


def test_list_sub_directory_by_either_path_form(server: ServerHandle) -> None:
    for path in ("sub", "/mnt/data/sub"):
        result = server.call("pyodide_list-mounted-directory", {"mountName": "data", "path": path})
        assert not result.is_error, text_of(result)
        assert result.structured_content is not None
        assert [e["name"] for e in result.structured_content["entries"]] == ["deep.csv"]
        assert result.structured_content["pythonPath"] == "/mnt/data/sub"


def test_read_png_returns_the_exact_bytes(server: ServerHandle) -> None:
    result = server.call("pyodide_read-image", {"mountName": "data", "imagePath": "plot.png"})
    assert not result.is_error, text_of(result)
    image = image_of(result)
    assert image.mime_type == "image/png"
    assert base64.b64decode(image.data) == tiny_png()
    same = server.call("pyodide_read-image", {"mountName": "data", "imagePath": "/mnt/data/plot.png"})
    assert image_of(same).data == image.data


@pytest.mark.parametrize(
    ("name", "mime"), [("photo.jpg", "image/jpeg"), ("anim.gif", "image/gif"), ("icon.svg", "image/svg+xml")]
)
def test_other_image_types_are_detected(server: ServerHandle, name: str, mime: str) -> None:
    result = server.call("pyodide_read-image", {"mountName": "data", "imagePath": name})
    assert not result.is_error, text_of(result)
    assert image_of(result).mime_type == mime


def test_refuses_text_even_when_named_png(server: ServerHandle) -> None:
    assert_refused(server, "pyodide_read-image", {"mountName": "data", "imagePath": "notes.txt"}, "looks like text")
    fake = {"mountName": "data", "imagePath": "fake.png"}
    assert_refused(server, "pyodide_read-image", fake, "not a supported image")


def test_refuses_a_too_large_image(server: ServerHandle) -> None:
    assert_refused(server, "pyodide_read-image", {"mountName": "data", "imagePath": "big.png"}, "over the image limit")


@pytest.mark.parametrize(
    "path", ["../outside/secret.png", "escape.png", "passwd", "/etc/passwd", "/mnt/ro/secret.png", "sub/../../x"]
)
def test_refuses_paths_outside_the_mount(server: ServerHandle, path: str) -> None:
    assert_refused(server, "pyodide_read-image", {"mountName": "data", "imagePath": path}, "outside the mount")


def test_list_refuses_escapes_and_files(server: ServerHandle) -> None:
    assert_refused(server, "pyodide_list-mounted-directory", {"mountName": "data", "path": ".."}, "outside the mount")
    assert_refused(server, "pyodide_list-mounted-directory", {"mountName": "data", "path": "notes.txt"}, "not a folder")


def test_unknown_mount_and_bad_arguments(server: ServerHandle) -> None:
    assert_refused(server, "pyodide_read-image", {"mountName": "nope", "imagePath": "x.png"}, "no mount named 'nope'")
    assert_refused(server, "pyodide_list-mounted-directory", {"mountName": "nope"}, "'data'")
    assert_refused(server, "pyodide_read-image", {"mountName": "data"}, "imagePath")
    assert_refused(server, "pyodide_list-mounted-directory", {"mountName": "data", "extra": 1}, "extra")
    assert_refused(server, "pyodide_read-image", {"mountName": "data", "imagePath": "missing.png"}, "does not exist")


def test_resources_are_listed_and_read(server: ServerHandle) -> None:
    session = server.session
    assert session is not None
    listed = server.run(session.list_resources()).resources
    by_uri = {str(r.uri): r for r in listed}
    assert by_uri["file:///mnt/data/plot.png"].mime_type == "image/png"
    assert "file:///mnt/data/sub/deep.csv" in by_uri
    assert "file:///mnt/data/passwd" not in by_uri and "file:///mnt/data/escape.png" not in by_uri
    assert "file:///mnt/ro/secret.png" in by_uri

    templates = server.run(session.list_resource_templates()).resource_templates
    assert {t.uri_template for t in templates} >= {"file:///mnt/data/{+path}", "file:///mnt/output/{+path}"}

    blob = server.run(session.read_resource("file:///mnt/data/plot.png")).contents[0]
    assert isinstance(blob, types.BlobResourceContents) and blob.mime_type == "image/png"
    assert base64.b64decode(blob.blob) == tiny_png()
    text = server.run(session.read_resource("file:///mnt/data/sub/deep.csv")).contents[0]
    assert isinstance(text, types.TextResourceContents) and text.text == "a,b\n1,2\n"


@pytest.mark.parametrize(
    ("uri", "phrase"),
    [
        ("file:///mnt/data/passwd", "outside the mount"),
        ("file:///mnt/data/../outside/secret.png", "outside the mount"),
        ("file:///etc/passwd", "outside the mounts"),
        ("file:///mnt/nope/x", "no mount named"),
        ("file:///mnt/data/missing.txt", "does not exist"),
        ("https://example.com/x", "not a mount file URI"),
    ],
)
def test_resource_reads_outside_the_mounts_fail(server: ServerHandle, uri: str, phrase: str) -> None:
    session = server.session
    assert session is not None
    with pytest.raises(MCPError, match=phrase):
        server.run(session.read_resource(uri))
    assert not server.call("pyodide_get-mount-points").is_error


def test_new_files_send_list_changed_after_a_writing_tool(server: ServerHandle, folders: dict[str, Path]) -> None:
    session = server.session
    assert session is not None
    before = len(server.notifications)  # type: ignore[attr-defined]
    (folders["output"] / "result.txt").write_text("done")
    # Read-only tools never trigger a check; a tool that may write (reset) does.
    server.call("pyodide_get-mount-points")
    assert len(server.notifications) == before  # type: ignore[attr-defined]
    assert not server.call("pyodide_reset").is_error
    server.run(session.send_ping())  # the notification precedes the reply; a ping flushes the reader
    assert len(server.notifications) == before + 1  # type: ignore[attr-defined]
    uris = {str(r.uri) for r in server.run(session.list_resources()).resources}
    assert "file:///mnt/output/result.txt" in uris
    assert not server.call("pyodide_reset").is_error  # nothing new: no second notification
    server.run(session.send_ping())
    assert len(server.notifications) == before + 1  # type: ignore[attr-defined]


def test_code_writing_a_file_sends_list_changed_and_code_that_does_not_stays_quiet(
    server: ServerHandle, folders: dict[str, Path]
) -> None:
    session = server.session
    assert session is not None
    server.call("pyodide_reset")
    server.run(session.send_ping())
    before = len(server.notifications)  # type: ignore[attr-defined]
    quiet = server.call("pyodide_execute", {"code": "1 + 1"})
    assert not quiet.is_error, text_of(quiet)
    server.run(session.send_ping())
    assert len(server.notifications) == before  # type: ignore[attr-defined]
    wrote = server.call("pyodide_execute", {"code": "open('/mnt/output/from-code.txt', 'w').write('hi')"})
    assert not wrote.is_error, text_of(wrote)
    server.run(session.send_ping())
    assert len(server.notifications) == before + 1  # type: ignore[attr-defined]
    assert (folders["output"] / "from-code.txt").read_text() == "hi"
