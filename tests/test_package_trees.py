"""Unpacked package trees: made on the host from verified bytes only, atomically, or not at all."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import zipfile
from pathlib import Path

import pytest
from support import offline_packages_dir

from mcp_pyodide.config import RuntimeConfig
from mcp_pyodide.packages.lock import LockEntry
from mcp_pyodide.packages.trees import MANIFEST, ensure_tree
from mcp_pyodide.sync import SyncSandbox

FILES = {
    "demo/__init__.py": b"VALUE = 1\n",
    "demo/_speed.so": b"\0asm fake",
    "demo/sub/data.txt": b"data",
    "demo_single.py": b"X = 2\n",
    "demo-1.0.dist-info/METADATA": b"Name: demo\nVersion: 1.0\n",
    "demo-1.0.data/data/share/man/demo.1": b".TH demo",
}


def wheel(tmp_path: Path, files: dict[str, bytes] = FILES, *, link: str | None = None) -> tuple[LockEntry, Path]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    data = buffer.getvalue()
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    path.write_bytes(data)
    entry = LockEntry("demo", "1.0", path.name, "site", hashlib.sha256(data).hexdigest())
    return entry, path


def test_a_verified_wheel_is_unpacked_with_its_manifest(tmp_path: Path) -> None:
    entry, path = wheel(tmp_path)
    tree = ensure_tree(entry, path, tmp_path / "trees")
    assert tree is not None
    folder = tmp_path / "trees" / entry.sha256
    assert tree.folder == entry.sha256
    assert tree.dirs == (
        "demo",
        "demo-1.0.data",
        "demo-1.0.data/data",
        "demo-1.0.data/data/share",
        "demo-1.0.data/data/share/man",
        "demo-1.0.dist-info",
        "demo/sub",
    ), "parents before their folders"
    assert set(tree.files) == {*FILES, "demo-1.0.dist-info/INSTALLER", "demo-1.0.dist-info/PYODIDE_SOURCE"}
    assert tree.dynlibs == ("demo/_speed.so",)
    assert tree.datafiles == ("demo-1.0.data/data/share/man/demo.1",)
    for name, data in FILES.items():
        assert (folder / name).read_bytes() == data
    # What loadPackage records, so micropip and importlib.metadata see the same install.
    assert (folder / "demo-1.0.dist-info" / "INSTALLER").read_text() == "pyodide.loadPackage"
    assert json.loads((folder / MANIFEST).read_text())["files"] == list(tree.files)
    assert [p.name for p in (tmp_path / "trees").iterdir()] == [entry.sha256], "no staging folder left behind"


def test_an_existing_tree_is_read_not_made_again(tmp_path: Path) -> None:
    entry, path = wheel(tmp_path)
    first = ensure_tree(entry, path, tmp_path / "trees")
    path.unlink()  # the wheel is not even read again
    assert ensure_tree(entry, path, tmp_path / "trees") == first


def test_bytes_that_do_not_match_the_lock_make_no_tree(tmp_path: Path) -> None:
    entry, path = wheel(tmp_path)
    path.write_bytes(path.read_bytes() + b"tampered after verification")
    assert ensure_tree(entry, path, tmp_path / "trees") is None
    assert not (tmp_path / "trees" / entry.sha256).exists()


@pytest.mark.parametrize(
    "member",
    ["../escape.py", "/abs/path.py", "demo/../../escape.py", "demo\\win.py", "demo/./x.py", "demo//x.py"],
)
def test_an_unsafe_member_name_leaves_the_wheel_to_load_package(tmp_path: Path, member: str) -> None:
    entry, path = wheel(tmp_path, {**FILES, member: b"payload"})
    assert ensure_tree(entry, path, tmp_path / "trees") is None
    assert not list(tmp_path.rglob("escape.py")) and not list((tmp_path / "trees").iterdir())


def test_a_link_member_leaves_the_wheel_to_load_package(tmp_path: Path) -> None:
    entry, path = wheel(tmp_path, link="demo/passwd")
    assert ensure_tree(entry, path, tmp_path / "trees") is None
    assert not list((tmp_path / "trees").iterdir())


def test_only_plain_site_package_wheels_qualify(tmp_path: Path) -> None:
    entry, path = wheel(tmp_path)
    for other in (
        LockEntry("lib", "1", "lib-1.zip", "dynlib", entry.sha256, package_type="shared_library"),
        LockEntry("std", "1", path.name, "stdlib", entry.sha256),
        LockEntry("bad", "1", path.name, "site", "not-a-sha"),
    ):
        assert ensure_tree(other, path, tmp_path / "trees") is None
    assert not (tmp_path / "trees").exists()


def test_a_damaged_tree_is_made_again(tmp_path: Path) -> None:
    entry, path = wheel(tmp_path)
    folder = tmp_path / "trees" / entry.sha256
    folder.mkdir(parents=True)
    (folder / "leftover").write_text("half a tree, no manifest")
    tree = ensure_tree(entry, path, tmp_path / "trees")
    assert tree is not None and not (folder / "leftover").exists()
    assert (folder / "demo" / "__init__.py").read_bytes() == FILES["demo/__init__.py"]


@pytest.mark.parametrize(
    "manifest",
    [
        {"files": ["../up.py"]},
        {"files": ["demo/__init__.py", "/abs.so"]},
        {"files": "demo/__init__.py"},
        {"files": []},
        [],
    ],
)
def test_a_manifest_that_names_paths_outside_the_tree_is_not_trusted(tmp_path: Path, manifest: object) -> None:
    entry, path = wheel(tmp_path)
    folder = tmp_path / "trees" / entry.sha256
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    tree = ensure_tree(entry, path, tmp_path / "trees")
    assert tree is not None and "demo/__init__.py" in tree.files and "/abs.so" not in tree.files, "made again"
    assert (folder / "demo" / "__init__.py").exists()


def test_servers_making_the_same_tree_at_once_all_get_it_whole(tmp_path: Path) -> None:
    """HTTP sessions (or servers) importing a package together: one rename wins, none fails."""
    from concurrent.futures import ThreadPoolExecutor

    entry, path = wheel(tmp_path)
    with ThreadPoolExecutor(8) as pool:
        trees = list(pool.map(lambda _: ensure_tree(entry, path, tmp_path / "trees"), range(8)))
    assert all(tree is not None and tree == trees[0] for tree in trees)
    assert [p.name for p in (tmp_path / "trees").iterdir()] == [entry.sha256], "no staging folder left behind"
    assert (tmp_path / "trees" / entry.sha256 / "demo" / "__init__.py").read_bytes() == FILES["demo/__init__.py"]


# -- through a real interpreter ---------------------------------------------------------------

PROBE = (
    "import six, os, importlib.metadata as md\n"
    "(os.path.realpath(six.__file__).split('/')[2], six.__version__, md.version('six'),"
    " md.distribution('six').read_text('INSTALLER'))"
)


def sandbox(**options: bool) -> SyncSandbox:
    return SyncSandbox(config=RuntimeConfig(package_source=str(offline_packages_dir()), **options))


def test_an_imported_package_is_linked_and_installed_as_load_package_would() -> None:
    with sandbox() as sb:
        result = sb.execute(PROBE)
        assert result.error is None, result.error
        assert result.result == "('mcp-pyodide-packages', '1.16.0', '1.16.0', 'pyodide.loadPackage')"
        [outcome] = sb.install(["cycler"])
        assert outcome.installed and outcome.error is None
        assert sb.execute("import cycler; cycler.cycler(c=[1, 2]).keys").result == "{'c'}"


def test_with_trees_off_packages_are_unzipped_as_before() -> None:
    with sandbox(use_package_trees=False) as sb:
        result = sb.execute(PROBE)
        assert result.error is None, result.error
        assert result.result == "('python3.12', '1.16.0', '1.16.0', 'pyodide.loadPackage')"


def test_a_name_taken_in_site_packages_is_left_to_load_package() -> None:
    with sandbox() as sb:
        sb.execute("open('/lib/python3.12/site-packages/six.py', 'w').write('__version__ = \"mine\"')")
        result = sb.execute(PROBE)
        assert result.error is None, result.error
        assert result.result == "('python3.12', '1.16.0', '1.16.0', 'pyodide.loadPackage')"
