"""Mount options and the path checks every file access goes through (no server needed)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest

from mcp_pyodide.cli import build_parser, mount_config
from mcp_pyodide.config import RuntimeConfig
from mcp_pyodide.mounts import (
    Mount,
    MountError,
    build_mounts,
    open_inside,
    parse_mount_spec,
    resolve_inside,
    split_env_mounts,
    with_output,
)
from mcp_pyodide.server.files import list_directory, sniff
from mcp_pyodide.server.resources import MountResources, walk_files


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


# -- parsing --------------------------------------------------------------------------------------


def test_spec_read_write_by_default_and_created(tmp_path: Path) -> None:
    mount = parse_mount_spec(f"data={tmp_path / 'new'}")
    assert mount.name == "data" and not mount.read_only
    assert mount.host_path == (tmp_path / "new").resolve() and mount.host_path.is_dir()
    assert mount.guest_path == "/mnt/data"


def test_spec_flags_and_colons_in_paths(tmp_path: Path) -> None:
    odd = tmp_path / "a:b"
    odd.mkdir()
    assert parse_mount_spec(f"x={odd}:ro") == Mount("x", odd.resolve(), True)
    assert parse_mount_spec(f"x={odd}:rw") == Mount("x", odd.resolve(), False)
    assert parse_mount_spec(f"x={odd}") == Mount("x", odd.resolve(), False)  # ':b' is not a flag
    flagged = tmp_path / "dir:ro"
    flagged.mkdir()
    assert parse_mount_spec(f"x={flagged}:rw").host_path == flagged.resolve()  # a folder whose name ends in ':ro'
    assert parse_mount_spec(f"x={tmp_path}:RO").read_only


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nopath", "expected NAME=PATH"),
        ("=/tmp", "expected NAME=PATH"),
        ("bad name=/tmp", "is not valid"),
        ("../x=/tmp", "is not valid"),
        ("output=/tmp", "reserved"),
        ("x=", "empty"),
        ("x=:ro", "empty"),
    ],
)
def test_bad_specs_name_the_option(spec: str, message: str) -> None:
    with pytest.raises(MountError, match=message) as info:
        parse_mount_spec(spec, source="--mount")
    assert str(info.value).startswith("--mount ")


def test_read_only_mount_must_exist_and_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(MountError, match="does not exist"):
        parse_mount_spec(f"x={tmp_path / 'missing'}:ro")
    assert not (tmp_path / "missing").exists()
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(MountError, match="is a file, not a folder"):
        parse_mount_spec(f"x={tmp_path / 'f.txt'}")


def test_duplicates_and_legacy_data_dir(tmp_path: Path) -> None:
    with pytest.raises(MountError, match="already used by --mount"):
        build_mounts([("--mount", f"a={tmp_path}"), ("MCP_PYODIDE_MOUNTS", f"a={tmp_path}:ro")])
    mounts = build_mounts([("--mount", f"a={tmp_path}")], legacy_data_dir=str(tmp_path / "d"))
    assert [(m.name, m.read_only) for m in mounts] == [("a", False), ("data", False)]
    with pytest.raises(MountError, match="PYODIDE_DATA_DIR"):
        build_mounts([("--mount", f"data={tmp_path}")], legacy_data_dir=str(tmp_path))


def test_env_list_is_split_on_semicolons() -> None:
    assert split_env_mounts(" a=/x:ro ; b=C:\\data;;") == ["a=/x:ro", "b=C:\\data"]


def test_cli_collects_mounts_and_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_PYODIDE_MOUNTS", f"env1={tmp_path / 'e'};env2={tmp_path}:ro")
    monkeypatch.delenv("PYODIDE_DATA_DIR", raising=False)
    args = build_parser().parse_args(["serve", "--mount", f"cli={tmp_path / 'c'}", "--output-dir", str(tmp_path / "o")])
    mounts, output = mount_config(args)
    assert [m.name for m in mounts] == ["cli", "env1", "env2"]
    assert output == (tmp_path / "o").resolve() and output.is_dir()
    config = RuntimeConfig(mounts=mounts, output_dir=output)
    assert [m.name for m in with_output(config.mounts, config.output_dir)] == ["output", "cli", "env1", "env2"]


def test_cli_output_dir_that_is_a_file_names_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MCP_PYODIDE_MOUNTS", raising=False)
    monkeypatch.delenv("PYODIDE_DATA_DIR", raising=False)
    (tmp_path / "file").write_text("x")
    args = build_parser().parse_args(["serve", "--output-dir", str(tmp_path / "file")])
    with pytest.raises(MountError, match=r"^--output-dir"):
        mount_config(args)


def test_config_refuses_a_user_mount_called_output(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="output"):
        RuntimeConfig(mounts=(Mount("output", tmp_path),))


# -- resolve_inside -------------------------------------------------------------------------------


@pytest.fixture
def mount(tmp_path: Path) -> Mount:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "file.txt").write_text("hello")
    (tmp_path / "secret.txt").write_text("secret")
    return Mount.create("data", root)


def test_relative_and_guest_forms_resolve_to_the_same_file(mount: Mount) -> None:
    expected = mount.host_path / "sub" / "file.txt"
    assert resolve_inside(mount, "sub/file.txt") == expected
    assert resolve_inside(mount, "/mnt/data/sub/file.txt") == expected
    assert resolve_inside(mount, "sub/../sub/file.txt") == expected
    assert resolve_inside(mount, "") == mount.host_path
    assert resolve_inside(mount, "/mnt/data") == mount.host_path


@pytest.mark.parametrize(
    "path",
    ["../secret.txt", "sub/../../secret.txt", "/etc/passwd", "/mnt/other/x", "/mnt/database/x", "..", "sub/\x00x"],
)
def test_escapes_are_refused(mount: Mount, path: str) -> None:
    with pytest.raises(MountError, match="outside the mount"):
        resolve_inside(mount, path)


def test_symlinks_out_of_the_mount_are_refused(mount: Mount, tmp_path: Path) -> None:
    (mount.host_path / "link").symlink_to(tmp_path / "secret.txt")
    (mount.host_path / "dirlink").symlink_to(tmp_path)
    (mount.host_path / "dangling").symlink_to(tmp_path / "nothing-here")
    for path in ("link", "dirlink/secret.txt", "dangling"):
        with pytest.raises(MountError, match="outside the mount"):
            resolve_inside(mount, path)
        with pytest.raises(MountError, match="outside the mount"):
            resolve_inside(mount, path, strict=False)


def test_symlinks_inside_the_mount_are_followed(mount: Mount) -> None:
    (mount.host_path / "alias.txt").symlink_to(mount.host_path / "sub" / "file.txt")
    assert resolve_inside(mount, "alias.txt") == mount.host_path / "sub" / "file.txt"


def test_missing_files(mount: Mount) -> None:
    with pytest.raises(MountError, match="does not exist"):
        resolve_inside(mount, "nope.txt")
    assert resolve_inside(mount, "new/file.txt", strict=False) == mount.host_path / "new" / "file.txt"


def test_open_inside_checks_the_opened_file(mount: Mount) -> None:
    fd, info, path = open_inside(mount, "sub/file.txt")
    assert path == mount.host_path / "sub" / "file.txt"
    try:
        assert os.read(fd, 100) == b"hello" and info.st_size == 5
    finally:
        os.close(fd)
    with pytest.raises(MountError, match="folder"):
        open_inside(mount, "sub")
    fifo = mount.host_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(MountError, match="not a regular file"):  # and it does not block
        open_inside(mount, "pipe")


# -- sniffing, listing, resources -----------------------------------------------------------------


def test_sniff_uses_contents_not_names() -> None:
    assert sniff(tiny_png())[0] == "image/png"
    assert sniff(b"\xff\xd8\xff\xe0\x00\x10JFIF")[0] == "image/jpeg"
    assert sniff(b"GIF89a\x01\x00")[0] == "image/gif"
    assert sniff(b"RIFF\x10\x00\x00\x00WEBPVP8 ")[0] == "image/webp"
    assert sniff(b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>')[0] == "image/svg+xml"
    assert sniff(b"hello, world\n") == (None, "text")
    assert sniff(b"%PDF-1.7")[1] == "a PDF document"
    assert sniff(b"\x00\x01\x02\x03")[1] == "binary data"
    assert sniff(b"")[1] == "an empty file"


def test_listing_is_sorted_bounded_and_typed(mount: Mount) -> None:
    for i in range(5):
        (mount.host_path / f"f{i}.bin").write_bytes(b"x" * i)
    listing = list_directory(mount, "", limit=3)
    assert [e.name for e in listing.entries] == ["sub", "f0.bin", "f1.bin"]
    assert listing.entries[0].type == "directory" and listing.entries[2].size == 1
    assert listing.total == 6 and listing.omitted == 3
    assert list_directory(mount, "/mnt/data/sub").entries[0].name == "file.txt"


def test_resources_walk_list_read_and_notice_changes(mount: Mount, tmp_path: Path) -> None:
    (mount.host_path / ".hidden").write_text("x")
    (mount.host_path / "out").symlink_to(tmp_path / "secret.txt")
    (mount.host_path / "plot.png").write_bytes(tiny_png())
    assert [f.rel for f in walk_files([mount])] == ["plot.png", "sub/file.txt"]
    catalog = MountResources([mount])
    listed = catalog.list().resources
    assert [r.uri for r in listed] == ["file:///mnt/data/plot.png", "file:///mnt/data/sub/file.txt"]
    assert listed[0].mime_type == "image/png"
    text = catalog.read("file:///mnt/data/sub/file.txt").contents[0]
    assert getattr(text, "text", None) == "hello"
    before = catalog.fingerprint()
    (mount.host_path / "new file.txt").write_text("x")
    assert catalog.fingerprint() != before
    assert catalog.read("file:///mnt/data/new%20file.txt").contents[0].uri == "file:///mnt/data/new%20file.txt"
    link = catalog.link_for(mount.host_path / "plot.png")
    assert link is not None and link.uri == "file:///mnt/data/plot.png"
    assert catalog.link_for(tmp_path / "secret.txt") is None


def test_grants_list_each_folder_once_and_never_one_inside_another(tmp_path: Path) -> None:
    from mcp_pyodide._launch import _outermost

    outer, inner = tmp_path / "cache", tmp_path / "cache" / "mcp-pyodide" / "tree"
    other = tmp_path / "elsewhere"
    assert _outermost([inner, other, outer, other, tmp_path / "cachex"]) == [other, outer, tmp_path / "cachex"]


def test_a_read_only_mount_holding_the_caches_works(tmp_path: Path) -> None:
    # Node's permission model refused reads below a folder granted after paths inside it: a
    # read-only mount of ~/.cache crashed the interpreter at boot.
    from mcp_pyodide._paths import cache_root
    from mcp_pyodide.sync import SyncSandbox

    holder = cache_root().parent
    with SyncSandbox(mounts=[Mount.create("caches", holder, read_only=True)], output_dir=tmp_path / "out") as sandbox:
        result = sandbox.execute(f"import os\n{cache_root().name!r} in os.listdir('/mnt/caches')")
    assert result.error is None and result.result == "True"
