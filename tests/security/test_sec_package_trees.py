"""Red-team round on the unpacked package trees: every interpreter on the machine links the same
host folders, so no sandbox may change them, whatever route it takes; what it changes in its own
site-packages stays in its own interpreter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ALLOW_ALL, ServerHandle, fresh_cache_root, offline_packages_dir, text_of, tree_digest

GUEST_TREES = "/lib/mcp-pyodide-packages"
SITE = "/lib/python3.12/site-packages"


def serve(root: Path, work: Path) -> ServerHandle:
    return ServerHandle(
        "--policy",
        ALLOW_ALL,
        "--package-source",
        str(offline_packages_dir()),
        "--mount",
        f"work={work}:rw",
        env={"MCP_PYODIDE_CACHE_ROOT": str(root)},
    ).start()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, Path, Path]]:
    base = tmp_path_factory.mktemp("sec-trees")
    root = fresh_cache_root(base, snapshot=True)
    work = base / "work"
    work.mkdir()
    handle = serve(root, work)
    try:
        result = handle.execute("import six, cycler, os\nos.path.realpath(six.__file__)")
        assert result.structured_content is not None and result.structured_content.get("error") is None, text_of(result)
        assert str(result.structured_content["result"]).startswith(f"'{GUEST_TREES}/"), "six was not linked"
        yield handle, root / "package-trees", work
    finally:
        handle.close()


ATTACKS = f"""
import os, six, cycler
link = {SITE!r} + "/six.py"
real = os.path.realpath(six.__file__)
pkg_real = os.path.realpath(cycler.__file__)
tree = os.path.dirname(real)
def write_real():
    open(real, "w").write("HACK = 1")
def fs_write():
    import pyodide_js
    pyodide_js.FS.writeFile(real, "HACK = 1")
def node_truncate():
    import js, pyodide_js
    from pyodide.ffi import to_js
    node = pyodide_js.FS.lookupPath(real).node
    node.node_ops.setattr(node, to_js({{"size": 0}}, dict_converter=js.Object.fromEntries))
def new_file_in_tree():
    open(tree + "/evil.py", "w").write("HACK = 1")
def mkdir_in_tree():
    os.mkdir(tree + "/evil")
def unlink_in_tree():
    os.unlink(real)
def rename_out():
    os.rename(real, "/mnt/work/moved.py")
def rename_in():
    open("/mnt/work/evil.py", "w").write("HACK = 1")
    os.rename("/mnt/work/evil.py", tree + "/six.py")
def hardlink():
    os.link(real, "/mnt/work/hl.py")
    open("/mnt/work/hl.py", "r+").write("HACK = 1")
def symlink_write():
    os.symlink(real, "/mnt/work/sl.py")
    open("/mnt/work/sl.py", "r+").write("HACK = 1")
def chmod_tree():
    os.chmod(pkg_real, 0o777)
def host_link_write():  # a link the test made on the host, in the read-write mount, into the tree
    open("/mnt/work/host-link.py", "r+").write("HACK = 1")
def remount():
    import js, pyodide_js
    from pyodide.ffi import to_js
    FS = pyodide_js.FS
    FS.unmount({GUEST_TREES!r})
    FS.mount(FS.filesystems.NODEFS, to_js({{"root": "/mnt/work"}}, dict_converter=js.Object.fromEntries), {GUEST_TREES!r})
def fs_write_link_target():  # JavaScript's FS, not Python's open: the real file, through the mount
    import pyodide_js
    pyodide_js.FS.writeFile(pyodide_js.FS.readlink(link), "HACK = 1")
attempts = dict(write_real=write_real, fs_write_link_target=fs_write_link_target, fs_write=fs_write, node_truncate=node_truncate, new_file_in_tree=new_file_in_tree,
    mkdir_in_tree=mkdir_in_tree, unlink_in_tree=unlink_in_tree, rename_out=rename_out,
    rename_in=rename_in, hardlink=hardlink, symlink_write=symlink_write, chmod_tree=chmod_tree,
    host_link_write=host_link_write, remount=remount)  # remount last: it unmounts
for name, attempt in attempts.items():
    try:
        attempt()
        print(name, "DONE")
    except BaseException as exc:
        print(name, "refused", type(exc).__name__, str(exc)[:80].replace(chr(10), " "))
"""


def test_no_route_from_a_sandbox_changes_a_tree(served: tuple[ServerHandle, Path, Path]) -> None:
    handle, trees, work = served
    before = tree_digest(trees)
    six_tree = next(p for p in trees.iterdir() if (p / "six.py").exists())
    (work / "host-link.py").symlink_to(six_tree / "six.py")
    result = handle.execute(ATTACKS)
    assert result.structured_content is not None, text_of(result)
    lines = str(result.structured_content["stdout"]).splitlines()
    assert [line for line in lines if "DONE" in line] == [], lines
    assert len([line for line in lines if " refused " in line]) == 14, lines
    assert tree_digest(trees) == before
    assert not (work / "moved.py").exists()


def test_a_package_changed_in_one_interpreter_is_whole_in_the_next(served: tuple[ServerHandle, Path, Path]) -> None:
    handle, trees, _ = served
    # Its own site-packages is the guest's to change, as after loadPackage: a module added beside
    # cycler's, one of its files patched in place (the link becomes the interpreter's own copy),
    # six's file removed and written anew. None of it reaches the host tree, nor another interpreter.
    before = tree_digest(trees)
    handle.call("pyodide_reset")  # the attacks above unmounted the trees in that interpreter
    result = handle.execute(
        "import os, importlib, sys, six, cycler\n"
        f"open({SITE!r} + '/cycler/added.py', 'w').write('ADDED = 1')\n"
        f"open({SITE!r} + '/cycler/__init__.py', 'a').write('\\nPATCHED = 2\\n')\n"
        f"os.unlink({SITE!r} + '/six.py')\n"
        f"open({SITE!r} + '/six.py', 'w').write('HACK = 1')\n"
        "importlib.invalidate_caches()\n"
        "sys.modules.pop('cycler')\n"
        "import cycler, cycler.added\n"
        "(cycler.added.ADDED, cycler.PATCHED, callable(cycler.cycler))"
    )
    assert result.structured_content is not None, text_of(result)
    assert result.structured_content["result"] == "(1, 2, True)", text_of(result)
    assert tree_digest(trees) == before
    handle.call("pyodide_reset")
    again = handle.execute(
        "import six, cycler, importlib.util\n"
        "(six.__version__, importlib.util.find_spec('cycler.added'), hasattr(cycler, 'PATCHED'))"
    )
    assert again.structured_content is not None, text_of(again)
    assert again.structured_content["result"] == "('1.16.0', None, False)", text_of(again)


COPY_PAST_THE_LIMIT = """
import os, numpy
libs = [os.path.join(d, f) for d, _, fs in os.walk(os.path.dirname(numpy.__file__)) for f in fs if f.endswith('.so')]
big = max(libs, key=os.path.getsize)
size = os.path.getsize(big)
chunk = b'x' * (1 << 20)
with open('/tmp/filler', 'wb') as filler:
    try:
        while True:
            filler.write(chunk)
            filler.flush()
    except OSError:
        pass
os.truncate('/tmp/filler', os.path.getsize('/tmp/filler') - size // 2)
try:
    open(big, 'r+b').close()
    outcome = 'copied'
except OSError as exc:
    outcome = f'refused {exc.errno}'
kept = (os.path.islink(big), os.path.exists(big + '.mcp-pyodide-copy'))
os.remove('/tmp/filler')
open(big, 'r+b').close()
(outcome, kept, os.path.islink(big), int(numpy.arange(4).sum()))
"""


def test_a_copy_on_write_past_the_memory_limit_is_refused_and_keeps_the_link() -> None:
    """Patching a big package file copies it into memory first: that copy counts against the limit."""
    from mcp_pyodide.config import RuntimeConfig
    from mcp_pyodide.sync import SyncSandbox

    with SyncSandbox(config=RuntimeConfig(package_source=str(offline_packages_dir()), memory_limit_mb=96)) as sb:
        result = sb.execute(COPY_PAST_THE_LIMIT)
    assert result.error is None, result.error
    assert result.result == "('refused 51', (True, False), False, 6)", result.result  # 51: ENOSPC
