"""Mount tricks from inside the sandbox: the fence is the host folder, whatever path Python uses."""

from __future__ import annotations

import ast
import tempfile
from pathlib import Path

import pytest
from sec_support import JS_PRELUDE, Sandbox, text_of

RO = Path(tempfile.mkdtemp(prefix="mcp-sec-ro-"))
RW = Path(tempfile.mkdtemp(prefix="mcp-sec-rw-"))
(RO / "keep.txt").write_text("read-only content")
SERVER_ARGS = ("--mount", f"ro={RO}:ro", "--mount", f"rw={RW}")
HOST_PASSWD = Path("/etc/passwd").read_text(errors="replace")


def sc(result):  # type: ignore[no-untyped-def]
    return result.structured_content or {}


VECTORS = {
    "write-read-only-mount": "open('/mnt/ro/new.txt', 'w').write('x')",
    "overwrite-read-only-file": "open('/mnt/ro/keep.txt', 'w').write('changed')",
    "delete-read-only-file": "import os\nos.remove('/mnt/ro/keep.txt')",
    "rename-out-of-read-only": "import os\nos.rename('/mnt/ro/keep.txt', '/mnt/rw/stolen.txt')",
    "remount-read-only-elsewhere": "import pyodide_js\nfrom pyodide.ffi import to_js\n"
    "O = pyodide_js.FS.filesystems.constructor\npyodide_js.FS.mkdir('/again')\n"
    "pyodide_js.FS.mount(pyodide_js.FS.filesystems.NODEFS, to_js({{'root': {ro!r}}}, dict_converter=O.fromEntries), '/again')\n"
    "open('/again/new.txt', 'w').write('x')",
    "mount-host-marker-dir": "import pyodide_js\nfrom pyodide.ffi import to_js\n"
    "O = pyodide_js.FS.filesystems.constructor\npyodide_js.FS.mkdir('/m')\n"
    "pyodide_js.FS.mount(pyodide_js.FS.filesystems.NODEFS, to_js({{'root': {host_dir!r}}}, dict_converter=O.fromEntries), '/m')\n"
    "open('/m/marker.txt').read()",
    "symlink-to-host-marker": "import os\nos.symlink({marker!r}, '/mnt/rw/link')\nopen('/mnt/rw/link').read()",
    "symlink-dir-to-host": "import os\nos.symlink({host_dir!r}, '/mnt/rw/dirlink')\nopen('/mnt/rw/dirlink/marker.txt').read()",
    "symlink-to-etc-passwd": "import os\nos.symlink('/etc/passwd', '/mnt/rw/pw')\nopen('/mnt/rw/pw').read()",
    "dotdot-out-of-mount": "open('/mnt/rw/../../..' + {marker!r}).read()",
    "hard-link-out": "import os\nos.link('/mnt/ro/keep.txt', '/mnt/rw/hard')\nopen('/mnt/rw/hard', 'a').write('x')",
    "write-matplotlib-cache": "import os\nopen(os.path.join(os.environ['MPLCONFIGDIR'], 'matplotlibrc'), 'w').write('backend: x')",
}


@pytest.mark.parametrize("snippet", list(VECTORS.values()), ids=list(VECTORS))
def test_mount_tricks_stay_inside(sandbox: Sandbox, snippet: str) -> None:
    code = snippet.format(marker=str(sandbox.host.marker), host_dir=str(sandbox.host.dir), ro=str(RO))
    result = sandbox.run(code)
    text = text_of(result)
    assert sandbox.host.marker_text not in text, f"the host marker leaked: {text}"
    assert HOST_PASSWD.strip() not in text, "the host's /etc/passwd leaked"
    assert (RO / "keep.txt").read_text() == "read-only content", "the read-only mount was changed"
    assert sorted(p.name for p in RO.iterdir()) == ["keep.txt"], "a file appeared in the read-only mount"
    assert not (RW / "stolen.txt").exists()
    sandbox.assert_healthy()


def test_read_only_writes_fail_visibly(sandbox: Sandbox) -> None:
    result = sandbox.run("open('/mnt/ro/visible.txt', 'w').write('x')")
    assert result.is_error and "Read-only file system" in text_of(result)


def test_read_write_mount_works_for_honest_code(sandbox: Sandbox) -> None:
    result = sandbox.run("open('/mnt/rw/ok.txt', 'w').write('fine')\nopen('/mnt/ro/keep.txt').read()")
    assert not result.is_error, text_of(result)
    assert sc(result)["result"] == "'read-only content'"
    assert (RW / "ok.txt").read_text() == "fine"


# -- Mount roots cannot be changed from inside -------------------------------------------------------
# Each vector tries to point an existing mount (or one of its nodes) at the runtime's own host
# folder, which the Node process may read; the guest must see neither its files nor a changed root.

REROOT_PRELUDE = (
    JS_PRELUDE
    + "import os\nFS = pyodide_js.FS\nruntime = str(pyodide_js._api.config.indexURL)\n"
    + "os.makedirs('/mnt/rw/sub', exist_ok=True)\n"
    + "top = FS.lookupPath('/mnt/rw').node\nsub = FS.lookupPath('/mnt/rw/sub').node\n"
    + "def attempt(action):\n    try:\n        action()\n    except Exception as exc:\n        print('refused:', type(exc).__name__)\n"
    + "def seen(path):\n    try:\n        return sorted(os.listdir(path))\n    except OSError as exc:\n        return f'OSError {exc.errno}'\n"
)
REROOTS = {
    "opts-root-assigned": "def act():\n    top.mount.opts.root = runtime\nattempt(act)",
    "opts-replaced": "def act():\n    top.mount.opts = jsobj(root=runtime)\nattempt(act)",
    "opts-defineProperty": "def act():\n    js_Object = pyodide_js.FS.filesystems.constructor\n"
    "    js_Object.defineProperty(top.mount.opts, 'root', jsobj(value=runtime))\nattempt(act)",
    "node-mount-swapped": "def act():\n    sub.mount = jsobj(opts=jsobj(root=runtime), mountpoint='/mnt/rw')\nattempt(act)",
    "node-name-dotdot": "def act():\n    sub.name = '../' * 12 + runtime.strip('/')\nattempt(act)",
    "node-parent-loop": "def act():\n    sub.parent = sub\nattempt(act)",
    "realPath-replaced": "def act():\n    FS.filesystems.NODEFS.realPath = create_proxy(lambda node: runtime)\nattempt(act)",
    "node_ops-readdir-replaced": "def act():\n    FS.filesystems.NODEFS.node_ops.readdir = create_proxy(lambda node: ['pyodide.asm.wasm'])\nattempt(act)",
}
RUNTIME_TELLS = ("pyodide.asm.wasm", "pyodide-lock.json", "python_stdlib.zip", "pyodide.mjs")


@pytest.mark.parametrize("attack", list(REROOTS.values()), ids=list(REROOTS))
def test_a_mount_cannot_be_rerooted_from_inside(sandbox: Sandbox, attack: str) -> None:
    sandbox.reset()  # a vector may damage its own interpreter's view of the mount (EPERM from then on)
    (RW / "here.txt").write_text("rw content")
    code = REROOT_PRELUDE + attack + "\n(seen('/mnt/rw'), seen('/mnt/rw/sub'), str(top.mount.opts.root))"
    result = sandbox.run(code)
    text = text_of(result)
    assert not any(tell in text for tell in RUNTIME_TELLS), f"the guest listed the runtime's host folder: {text}"
    assert not result.is_error, text
    listed, sub_listed, root = ast.literal_eval(sc(result)["result"])
    # The real reason the runtime stays unread: the root did not change, and the mount still shows the host folder.
    assert root == str(RW), f"the mount's root reads back as {root!r}"
    assert listed == sorted(p.name for p in RW.iterdir()), f"/mnt/rw no longer shows its host folder: {listed}"
    assert sub_listed == [] or str(sub_listed).startswith("OSError"), sub_listed
    after = sandbox.run("import os\nsorted(os.listdir('/mnt/rw')), open('/mnt/ro/keep.txt').read()")
    assert sc(after)["result"] == repr((sorted(p.name for p in RW.iterdir()), "read-only content"))
    sandbox.assert_healthy()
