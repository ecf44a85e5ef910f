"""Mount tricks from inside the sandbox: the fence is the host folder, whatever path Python uses."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from sec_support import Sandbox, text_of

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
