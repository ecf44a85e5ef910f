"""Red-team round on the bytecode cache: a serving sandbox's code is hostile; the shared tree
of compiled modules must stay what the broker's builder made, whatever it tries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import ALLOW_ALL, ServerHandle, fresh_cache_root, offline_packages_dir, tree_digest

from mcp_pyodide import _bytecode
from mcp_pyodide.packages.lock import LockEntry

SIX_PYC = "lib/python3.12/site-packages/six.cpython-312.pyc"
GUEST_TREE = "/lib/mcp-pyodide-bytecode"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, Path, Path]]:
    base = tmp_path_factory.mktemp("sec-bytecode")
    root = fresh_cache_root(base, snapshot=True)
    work = base / "work"
    work.mkdir()
    handle = ServerHandle(
        "--policy",
        ALLOW_ALL,
        "--package-source",
        str(offline_packages_dir()),
        "--mount",
        f"work={work}:rw",
        env={"MCP_PYODIDE_CACHE_ROOT": str(root)},
    ).start()
    try:
        result = handle.execute("import six")
        assert result.structured_content is not None and result.structured_content.get("error") is None
        handle.wait_for_log("the standard library")
        yield handle, root / "bytecode" / _bytecode.cache_dir().name / "tree", work
    finally:
        handle.close()


ATTACKS = f"""
import os, sys
base = {GUEST_TREE!r}
pyc = base + "/" + {SIX_PYC!r}
zips = [n for n in os.listdir(base) if n.startswith("stdlib-")]
stdzip = base + "/" + zips[0]
def fs_write():
    import pyodide_js
    pyodide_js.FS.writeFile(pyc, "x")
def fs_remount():
    import js, pyodide_js
    from pyodide.ffi import to_js
    FS = pyodide_js.FS
    FS.unmount(base)  # allowed: the interpreter's own file system; mounting a host folder is not
    FS.mount(FS.filesystems.NODEFS, to_js({{"root": "/mnt/work"}}, dict_converter=js.Object.fromEntries), base)
def node_write():
    import pyodide_js
    FS = pyodide_js.FS
    node = FS.lookupPath(pyc).node
    stream = FS.open(pyc, "r")
    FS.close(stream)
    node.node_ops.setattr(node, __import__("pyodide").ffi.to_js({{"size": 0}}, dict_converter=__import__("js").Object.fromEntries))
def hardlink():
    os.link(pyc, "/mnt/work/hl.pyc")
    open("/mnt/work/hl.pyc", "r+b").write(b"HACK")
def symlink_write():
    os.symlink(pyc, "/mnt/work/sl.pyc")
    open("/mnt/work/sl.pyc", "r+b").write(b"HACK")
def rename_out():
    os.rename(pyc, "/mnt/work/moved.pyc")
def rename_in():
    open("/mnt/work/evil.pyc", "wb").write(b"HACK")
    os.rename("/mnt/work/evil.pyc", base + "/lib/python3.12/site-packages/evil.cpython-312.pyc")
def zip_append():
    open(stdzip, "ab").write(b"HACK")
def zip_dir_file():
    open(stdzip + "/os.pyc", "wb").write(b"HACK")
def host_link_write():  # links the test made on the host, in the read-write mount, into the tree
    open("/mnt/work/host-link.pyc", "r+b").write(b"HACK")
def host_dirlink_new():
    open("/mnt/work/host-dir/evil.cpython-312.pyc", "wb").write(b"HACK")
def mkdir_tree():
    os.makedirs(base + "/lib/python3.12/site-packages/newpkg")
attempts = dict(fs_write=fs_write, node_write=node_write, hardlink=hardlink,
    symlink_write=symlink_write, rename_out=rename_out, rename_in=rename_in, zip_append=zip_append,
    zip_dir_file=zip_dir_file, host_link_write=host_link_write,
    host_dirlink_new=host_dirlink_new, mkdir_tree=mkdir_tree, fs_remount=fs_remount)  # remount last: it unmounts
for name, attempt in attempts.items():
    try:
        attempt()
        print(name, "DONE")
    except BaseException as exc:
        print(name, "refused", type(exc).__name__, str(exc)[:80].replace(chr(10), " "))
"""


def test_no_route_from_a_serving_sandbox_writes_the_tree(served: tuple[ServerHandle, Path, Path]) -> None:
    handle, tree, work = served
    before = tree_digest(tree)
    (work / "host-link.pyc").symlink_to(tree / SIX_PYC)
    (work / "host-dir").symlink_to((tree / SIX_PYC).parent, target_is_directory=True)
    work_before = sorted(work.iterdir())
    assert SIX_PYC in before and any(name.startswith("stdlib-") for name in before)
    result = handle.execute(ATTACKS)
    assert result.structured_content is not None
    out = str(result.structured_content["stdout"])
    lines = out.splitlines()
    assert [line for line in lines if "DONE" in line] == [], out
    assert len([line for line in lines if " refused " in line]) == 12, out
    assert tree_digest(tree) == before
    links = [p for p in work.iterdir() if p not in work_before and (p.is_symlink() or p.stat().st_nlink > 1)]
    assert all(p.is_symlink() and not p.resolve().is_relative_to(tree) for p in links), links


@pytest.mark.parametrize(
    "where",
    [
        "bytecode/pyodide-{v}/tree",
        "bytecode/pyodide-{v}/tree/lib",
        "bytecode",
        ".",
        "packages-elsewhere",
        "package-trees",
    ],
)
@pytest.mark.parametrize("option", ["--mount", "--output-dir"])
def test_a_read_write_mount_inside_the_shared_cache_is_refused(tmp_path: Path, where: str, option: str) -> None:
    """Before: `--mount x=<cache>/bytecode/.../tree:rw` let a sandbox write every later session's modules."""
    root = fresh_cache_root(tmp_path, snapshot=True)
    inside = root / where.format(v=_bytecode.PYODIDE_VERSION)
    if where == "packages-elsewhere":
        inside = root / "node-runtime"  # the runtime's own scripts and Pyodide
    inside.mkdir(parents=True, exist_ok=True)
    args = ["--policy", ALLOW_ALL, "--package-source", str(offline_packages_dir())]
    value, guest = (f"x={inside}:rw", "/mnt/x") if option == "--mount" else (str(inside), "/mnt/output")
    handle = ServerHandle(*args, option, value, env={"MCP_PYODIDE_CACHE_ROOT": str(root)}).start()
    try:
        result = handle.execute(f"open('{guest}/{PROBE_NAME}', 'w').write('poison')")
        text = str(result.structured_content or result.content)
        assert result.is_error or (result.structured_content or {}).get("error"), text
        assert "a cache shared by every server" in text, text
        assert not list(root.rglob(PROBE_NAME))
    finally:
        handle.close()


PROBE_NAME = "mcp-sec-poison-probe.txt"


def test_a_guest_claiming_packages_it_was_not_asked_for_starts_no_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Node's list of loaded packages is its word: before, any lock name in it was compiled."""
    import asyncio

    from mcp_pyodide.config import RuntimeConfig
    from mcp_pyodide.sandbox import Sandbox

    monkeypatch.setenv("MCP_PYODIDE_CACHE_ROOT", str(fresh_cache_root(tmp_path, snapshot=True)))
    asked: list[list[str]] = []

    def record(config: RuntimeConfig, entries: list[LockEntry], package_cache_dir: Path) -> None:
        asked.append(sorted(entry.name for entry in entries))

    monkeypatch.setattr(_bytecode, "build_soon", record)

    async def main() -> None:
        config = RuntimeConfig(package_source=str(offline_packages_dir()))
        async with Sandbox(config=config) as sandbox:
            honest = sandbox.runtime.load_packages

            async def hostile(names: list[str], timeout_ms: int = 300_000, trees: Any = None) -> object:
                reply = await honest(names, timeout_ms, trees)
                reply.loaded.update({"numpy": "2.0.2", "matplotlib": "3.8.4"})  # never loaded
                return reply

            monkeypatch.setattr(sandbox.runtime, "load_packages", hostile)
            await sandbox.install(["six"])

    asyncio.run(main())
    assert asked == [["six"]]


def test_a_changed_source_in_the_sandbox_is_compiled_not_served_from_the_tree(
    served: tuple[ServerHandle, Path, Path],
) -> None:
    """A sandbox that rewrites (or micropip-shadows) a module gets its own code: the pyc is checked."""
    handle, tree, _ = served
    before = tree_digest(tree)
    handle.call("pyodide_reset")
    code = (
        "open('/lib/python3.12/site-packages/six.py', 'w').write('X = \"mine\"\\n')\n"
        "import six\nprint(six.X, six.__spec__.cached)"
    )
    result = handle.execute(code)
    assert result.structured_content is not None and result.structured_content.get("error") is None, result
    assert str(result.structured_content["stdout"]).split() == ["mine", f"{GUEST_TREE}/{SIX_PYC}"]
    assert tree_digest(tree) == before
