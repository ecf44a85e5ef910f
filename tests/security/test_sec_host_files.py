"""Host file system: nothing outside the sandbox's in-memory FS may be read or written.

Pyodide has its own in-memory /etc, /proc and /tmp: what matters is that host
content (a marker file we create, /etc/passwd, the repo, the runtime's files)
never reaches the output, and that nothing is written on the host.
"""

from __future__ import annotations

import pytest
from sec_support import JS_PRELUDE, REPO_ROOT, Host, Sandbox, sc, text_of

HOST_PASSWD_LINE = "root:x:0:0"

# id -> snippet; {marker}, {dir}, {repo} are filled in from the host fixture.
READS = {
    "open-etc-passwd": "open('/etc/passwd').read()",
    "open-marker-by-host-path": "open({marker!r}).read()",
    "listdir-marker-dir": "import os\nos.listdir({dir!r})",
    "proc-self-environ": "open('/proc/self/environ', 'rb').read()",
    "proc-self-cmdline": "open('/proc/self/cmdline', 'rb').read()",
    "nodefs-mount-root-read-marker": JS_PRELUDE + "import os\nos.makedirs('/hostroot', exist_ok=True)\n"
    "pyodide_js.FS.mount(pyodide_js.FS.filesystems.NODEFS, jsobj(root='/'), '/hostroot')\n"
    "print(os.listdir('/hostroot'))\n"
    "open('/hostroot' + {marker!r}).read()",
    "nodefs-mount-root-read-etc-passwd": JS_PRELUDE + "import os\nos.makedirs('/hostroot2', exist_ok=True)\n"
    "pyodide_js.FS.mount(pyodide_js.FS.filesystems.NODEFS, jsobj(root='/'), '/hostroot2')\n"
    "open('/hostroot2/etc/passwd').read()",
    "nodefs-mount-marker-dir": JS_PRELUDE + "import os\nos.makedirs('/m', exist_ok=True)\n"
    "pyodide_js.FS.mount(pyodide_js.FS.filesystems.NODEFS, jsobj(root={dir!r}), '/m')\n"
    "print(os.listdir('/m'))\n"
    "open('/m/marker.txt').read()",
    "module-NODEFS-direct": JS_PRELUDE + "import os\nos.makedirs('/m3', exist_ok=True)\n"
    "pyodide_js._module.FS.mount(pyodide_js._module.NODEFS, jsobj(root={dir!r}), '/m3')\n"
    "open('/m3/marker.txt').read()",
    "mountNodeFS-marker-dir": "import pyodide_js, os\npyodide_js.mountNodeFS('/m2', {dir!r})\nopen('/m2/marker.txt').read()",
    "loadBinaryFile-marker": "import pyodide_js\nbytes((await pyodide_js._api.loadBinaryFile({marker!r})).to_py())",
    "loadBinaryFile-etc-passwd": "import pyodide_js\nbytes((await pyodide_js._api.loadBinaryFile('/etc/passwd')).to_py())",
    "loadBinaryFile-file-url": "import pyodide_js\nbytes((await pyodide_js._api.loadBinaryFile('file://' + {marker!r})).to_py())",
    "unpackArchive-host-path": "import pyodide_js\npyodide_js.unpackArchive({marker!r}, 'zip')",
    "nodefs-read-repo-file": JS_PRELUDE + "import os\nos.makedirs('/repo', exist_ok=True)\n"
    "pyodide_js.FS.mount(pyodide_js.FS.filesystems.NODEFS, jsobj(root={repo!r}), '/repo')\n"
    "open('/repo/pyproject.toml').read()",
}


def fill(snippet: str, host: Host) -> str:
    return snippet.format(marker=str(host.marker), dir=str(host.dir), repo=str(REPO_ROOT()))


@pytest.mark.parametrize("snippet", list(READS.values()), ids=list(READS))
def test_host_read_is_refused(sandbox: Sandbox, host: Host, snippet: str) -> None:
    result = sandbox.run(fill(snippet, host))
    text = text_of(result)
    # Sandbox.run already fails on the marker text or the secret; these are further host tells.
    assert HOST_PASSWD_LINE not in text, "host /etc/passwd content reached the output"
    assert "['marker.txt'" not in text and "'marker.txt']" not in text, "the host marker folder was listed"
    assert "[project]" not in text, "the repo's pyproject.toml was read"
    assert "/proc/self" in snippet or result.is_error, f"expected the read to fail, got: {text}"
    sandbox.assert_healthy()


def test_nodefs_cannot_read_the_runtime_files(sandbox: Sandbox) -> None:
    """The Node process may read its own scripts and the Pyodide package; user code must not (via NODEFS).

    Two ways in, each refused for its own reason: a new NODEFS mount is refused outright, and
    re-rooting the existing output mount at the runtime folder has no effect.
    """
    mount_new = JS_PRELUDE + (
        "import os\nroot = pyodide_js._api.config.indexURL\nos.makedirs('/rt', exist_ok=True)\n"
        "pyodide_js.FS.mount(pyodide_js.FS.filesystems.NODEFS, jsobj(root=str(root)), '/rt')\n"
        "sorted(os.listdir('/rt'))[:5]"
    )
    result = sandbox.run(mount_new)
    assert result.is_error and "mounting host folders is not allowed" in text_of(result), text_of(result)
    reroot = JS_PRELUDE + (
        "import os\nroot = str(pyodide_js._api.config.indexURL)\n"
        "mount = pyodide_js.FS.lookupPath('/mnt/output').node.mount\n"
        "try:\n    mount.opts.root = root\nexcept Exception:\n    pass\n"
        "(str(mount.opts.root), sorted(os.listdir('/mnt/output')))"
    )
    listed = sandbox.run(reroot)
    assert not listed.is_error, text_of(listed)
    host_output = sandbox.handle.output_dir
    expected = (str(host_output), sorted(p.name for p in host_output.iterdir()))
    assert sc(listed)["result"] == repr(expected), f"the output mount was re-rooted: {text_of(listed)}"
    assert "pyodide.asm.wasm" not in text_of(listed)
    sandbox.assert_healthy()


WRITES = {
    "nodefs-mount-dir-write": JS_PRELUDE + "import os\nos.makedirs('/w', exist_ok=True)\n"
    "pyodide_js.FS.mount(pyodide_js.FS.filesystems.NODEFS, jsobj(root={dir!r}), '/w')\n"
    "with open('/w/pwned-nodefs-write', 'w') as f:\n    f.write('x')",
    "nodefs-mount-root-write": JS_PRELUDE + "import os\nos.makedirs('/w2', exist_ok=True)\n"
    "pyodide_js.FS.mount(pyodide_js.FS.filesystems.NODEFS, jsobj(root='/'), '/w2')\n"
    "with open('/w2' + {dir!r} + '/pwned-root-write', 'w') as f:\n    f.write('x')",
    "nodefs-mount-dir-mkdir": JS_PRELUDE + "import os\nos.makedirs('/w3', exist_ok=True)\n"
    "pyodide_js.FS.mount(pyodide_js.FS.filesystems.NODEFS, jsobj(root={dir!r}), '/w3')\n"
    "os.mkdir('/w3/pwned-mkdir')",
    "nodefs-mount-dir-overwrite-marker": JS_PRELUDE + "import os\nos.makedirs('/w4', exist_ok=True)\n"
    "pyodide_js.FS.mount(pyodide_js.FS.filesystems.NODEFS, jsobj(root={dir!r}), '/w4')\n"
    "with open('/w4/marker.txt', 'w') as f:\n    f.write('overwritten')",
    "mountNodeFS-write": "import pyodide_js\npyodide_js.mountNodeFS('/w5', {dir!r})\nwith open('/w5/pwned-mountnodefs', 'w') as f:\n    f.write('x')",
}


@pytest.mark.parametrize("snippet", list(WRITES.values()), ids=list(WRITES))
def test_host_write_is_refused(sandbox: Sandbox, host: Host, snippet: str) -> None:
    result = sandbox.run(fill(snippet, host))
    assert result.is_error, f"expected the write to fail, got: {text_of(result)}"
    # The autouse fixture checks that no file appeared on the host and the marker is unchanged.
    sandbox.assert_healthy()


def test_in_memory_writes_stay_in_memory(sandbox: Sandbox, host: Host) -> None:
    """Writing the host's path inside the sandbox creates an in-memory file only."""
    path = str(host.pwn_path("memfs"))
    data = sc(
        sandbox.run(
            f"import os\nos.makedirs({str(host.dir)!r}, exist_ok=True)\nopen({path!r}, 'w').write('x')\nopen({path!r}).read()"
        )
    )
    assert data["result"] == "'x'"
    sandbox.assert_healthy()
