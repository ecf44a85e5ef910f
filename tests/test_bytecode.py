"""The bytecode cache: packages are compiled once per machine, by the broker's own runtime only,
and a sandbox can read the compiled modules but never change them."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ALLOW_ALL, REPO, ServerHandle, fresh_cache_root, offline_packages_dir, tree_digest

from mcp_pyodide import _bytecode
from mcp_pyodide.config import RuntimeConfig
from mcp_pyodide.mounts import Mount
from mcp_pyodide.netbroker import NetworkPolicy
from mcp_pyodide.packages.lock import LockEntry

SIX_WHEEL = "six-1.16.0-py2.py3-none-any.whl"
SIX_PYC = "lib/python3.12/site-packages/six.cpython-312.pyc"
GUEST_TREE = "/lib/mcp-pyodide-bytecode"


def probe(module: str, where: str = "__spec__.cached") -> str:
    """Code that prints whether importing `module` compiled its source, and where CPython found
    its bytecode (`where`, an attribute path on the module)."""
    return f"""
import builtins
_compiled = []
_compile = builtins.compile
def _counting(source, filename, *args, **kwargs):
    _compiled.append(str(filename))
    return _compile(source, filename, *args, **kwargs)
builtins.compile = _counting
import {module}
builtins.compile = _compile
print("compiled" if any(f.endswith("/{module}.py") for f in _compiled) else "from-cache", {module}.{where})
"""


PROBE = probe("six")
STDLIB_PROBE = probe("fractions", "__file__")


def _pyc(source: bytes, *, magic: bytes = _bytecode.PYC_MAGIC, flags: int = 3, digest: bytes | None = None) -> bytes:
    digest = _bytecode.source_hash(source) if digest is None else digest
    return magic + flags.to_bytes(4, "little") + digest + b"\xe3marshalled code"


def _entry(file_name: str, sha256: str = "ab" * 32, install_dir: str = "site") -> LockEntry:
    return LockEntry(name="pkg", version="1", file_name=file_name, install_dir=install_dir, sha256=sha256)


# -- the broker's checks, unit ----------------------------------------------------------------


def test_the_hash_is_the_one_pyodides_python_computes() -> None:
    # importlib.util.source_hash(b"print(1)\n") inside Pyodide 0.27.7, measured once.
    assert _bytecode.source_hash(b"print(1)\n").hex() == "bf71f361a5f8cd69"


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        ("six.py", "six.cpython-312.pyc"),
        ("matplotlib/pyplot.py", "matplotlib/pyplot.cpython-312.pyc"),
        ("pkg/data.json", None),
        ("/etc/evil.py", None),
        ("pkg/../../evil.py", None),
        ("pkg\\evil.py", None),
        ("six-1.16.0.data/scripts/tool.py", None),
    ],
)
def test_only_a_wheels_importable_modules_have_a_place_in_the_tree(member: str, expected: str | None) -> None:
    path = _bytecode.pyc_path(member)
    assert (str(path) if path is not None else None) == expected


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_pyc(b"x = 1\n"), None),
        (_pyc(b"x = 1\n")[:15], "15 bytes"),
        (_pyc(b"x = 1\n", magic=b"\xa7\r\r\n"), "not CPython 3.12 bytecode"),  # 3.11's magic
        (_pyc(b"x = 1\n", flags=0), "not a checked-hash pyc"),  # timestamp-based: never checked
        (_pyc(b"x = 1\n", flags=1), "not a checked-hash pyc"),  # unchecked hash
        (_pyc(b"x = 2\n"), "made from another source"),
    ],
)
def test_a_compiled_module_is_kept_only_as_a_checked_pyc_of_its_own_source(data: bytes, reason: str | None) -> None:
    assert _bytecode.check_pyc(data, b"x = 1\n") == reason


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MCP_PYODIDE_CACHE_ROOT", str(tmp_path / "cache"))
    return _bytecode.cache_dir()


def test_the_broker_keeps_only_checked_files_for_the_wheels_own_modules(tmp_path: Path, cache: Path) -> None:
    wheel = tmp_path / "pkg-1-py3-none-any.whl"
    sources = {"good.py": b"a = 1\n", "pkg/wrong.py": b"b = 2\n", "pkg/linked.py": b"c = 3\n", "pkg/fifo.py": b"d\n"}
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, source in sources.items():
            archive.writestr(name, source)
    staged = tmp_path / "staging" / _bytecode.SITE_PACKAGES
    (staged / "pkg").mkdir(parents=True)
    (staged / "good.cpython-312.pyc").write_bytes(_pyc(b"a = 1\n"))
    (staged / "pkg" / "wrong.cpython-312.pyc").write_bytes(_pyc(b"import os; os.system('x')\n"))
    outside = tmp_path / "outside.pyc"  # a good file, but reached through a link the builder made
    outside.write_bytes(_pyc(b"c = 3\n"))
    (staged / "pkg" / "linked.cpython-312.pyc").symlink_to(outside)
    os.mkfifo(staged / "pkg" / "fifo.cpython-312.pyc")  # would block a plain read forever
    (staged / "extra.cpython-312.pyc").write_bytes(_pyc(b"e = 5\n"))  # not a module of this wheel
    entry = _entry(wheel.name)
    assert _bytecode.wanted([entry]) == [entry]

    assert _bytecode.keep(tmp_path / "staging", wheel, entry) == (1, 1)

    tree = _bytecode.tree_dir() / _bytecode.SITE_PACKAGES
    kept = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
    assert kept == ["good.cpython-312.pyc"]
    assert _bytecode.is_done(entry) and _bytecode.wanted([entry]) == []
    assert not _bytecode.is_done(_entry(wheel.name, sha256="cd" * 32)), "a new wheel of that name is compiled again"


def test_the_compiled_standard_library_holds_every_member_and_only_checked_pycs(tmp_path: Path) -> None:
    source = tmp_path / "python_stdlib.zip"
    members = {"a.py": b"a = 1\n", "pkg/__init__.py": b"b = 2\n", "pkg/data.txt": b"text", "c.py": b"c = 3\n"}
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("pkg/", b"")
        for name, data in members.items():
            archive.writestr(name, data)
    staged = tmp_path / "staging" / "stdlib"
    (staged / "pkg").mkdir(parents=True)
    (staged / "a.pyc").write_bytes(_pyc(b"a = 1\n"))
    (staged / "pkg" / "__init__.pyc").write_bytes(_pyc(b"evil = 1\n"))
    (staged / "pkg" / "data.txtc").write_bytes(_pyc(b"text"))  # not a module: never looked at
    target = tmp_path / "tree" / "stdlib-x.zip"

    assert _bytecode.keep_stdlib(tmp_path / "staging", source, target) == (1, 1)

    with zipfile.ZipFile(target) as compiled:
        assert sorted(compiled.namelist()) == ["a.py", "a.pyc", "c.py", "pkg/", "pkg/__init__.py", "pkg/data.txt"]
        assert all(compiled.read(name) == data for name, data in members.items())


def test_only_site_packages_wheels_are_compiled(cache: Path) -> None:
    entries = [_entry("a-1-py3-none-any.whl"), _entry("ssl-1.0.0.whl", install_dir="stdlib"), _entry("openblas.zip")]
    assert _bytecode.wanted(entries) == entries[:1]


def test_stale_staging_folders_are_pruned(tmp_path: Path) -> None:
    now = 1_000_000.0
    for name, age in (("build-old", 7200), ("build-live", 60), ("other", 7200)):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (now - age, now - age))
    _bytecode._prune_staging(tmp_path, now)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build-live", "other"]


def test_the_builder_gets_no_user_mount_network_or_output(tmp_path: Path) -> None:
    user = RuntimeConfig(
        mounts=(Mount.create("data", tmp_path / "data"),),
        output_dir=tmp_path / "out",
        network=NetworkPolicy(("example.com",)),
        preload=("numpy",),
        notebook="n.ipynb",
        spare_interpreter=True,
    )
    clean = _bytecode.builder_config(user, tmp_path / "staging")
    assert [(m.name, m.host_path, m.read_only) for m in clean.mounts] == [("bytecode", tmp_path / "staging", False)]
    assert clean.output_dir is None and clean.notebook is None and clean.preload == ()
    assert not clean.network.allows("https://example.com/")
    assert not clean.spare_interpreter and not clean.use_bytecode_cache


# -- a real server on a machine without the cache ----------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, Path]]:
    root = fresh_cache_root(tmp_path_factory.mktemp("bytecode"), snapshot=True)
    handle = ServerHandle(
        "--policy",
        ALLOW_ALL,
        "--package-source",
        str(offline_packages_dir()),
        env={"MCP_PYODIDE_CACHE_ROOT": str(root)},
    ).start()
    try:
        yield handle, root
    finally:
        handle.close()


def _stdout(handle: ServerHandle, code: str) -> str:
    result = handle.execute(code)
    assert result.structured_content is not None and not result.is_error, result
    assert result.structured_content.get("error") is None, result.structured_content
    return str(result.structured_content["stdout"])


def test_a_package_is_compiled_after_its_first_import_and_later_interpreters_skip_compiling(
    served: tuple[ServerHandle, Path],
) -> None:
    handle, root = served
    assert _stdout(handle, PROBE).split()[0] == "compiled"
    handle.wait_for_log("bytecode cache: kept")
    tree = root / "bytecode" / (_bytecode.cache_dir().name) / "tree"
    pyc = tree / SIX_PYC
    with zipfile.ZipFile(offline_packages_dir() / SIX_WHEEL) as wheel:
        assert _bytecode.check_pyc(pyc.read_bytes(), wheel.read("six.py")) is None

    handle.call("pyodide_reset")
    assert _stdout(handle, PROBE).split() == ["from-cache", f"{GUEST_TREE}/{SIX_PYC}"]
    assert _stdout(handle, "import six\nprint(six.PY3, six.moves.range(3)[-1])").split() == ["True", "2"]


def test_the_standard_library_is_compiled_with_the_first_packages(served: tuple[ServerHandle, Path]) -> None:
    handle, root = served
    _stdout(handle, "import six")
    handle.wait_for_log("the standard library")
    tree = root / "bytecode" / (_bytecode.cache_dir().name) / "tree"
    [compiled] = tree.glob("stdlib-*.zip")
    handle.call("pyodide_reset")
    word, path = _stdout(handle, STDLIB_PROBE).split()
    assert (word, path) == ("from-cache", f"{GUEST_TREE}/{compiled.name}/fractions.pyc")
    # Tracebacks through the compiled library still show its source lines.
    failed = handle.execute("import fractions\nfractions.Fraction(1, 0)")
    assert failed.structured_content is not None
    error = failed.structured_content["error"]
    assert error["type"] == "ZeroDivisionError"
    assert "raise ZeroDivisionError('Fraction(%s, 0)' % numerator)" in error["traceback"]


def test_a_sandbox_cannot_change_the_compiled_modules_it_reads(served: tuple[ServerHandle, Path]) -> None:
    handle, root = served
    _stdout(handle, "import six")
    handle.wait_for_log("bytecode cache: kept")
    tree = root / "bytecode" / (_bytecode.cache_dir().name) / "tree"
    before = tree_digest(tree)
    assert SIX_PYC in before
    attack = f"""
import os, sys
base = {GUEST_TREE!r}
pyc = base + "/" + {SIX_PYC!r}
attempts = {{
    "overwrite": lambda: open(pyc, "wb").write(b"x"),
    "append": lambda: open(pyc, "ab").write(b"x"),
    "truncate": lambda: os.truncate(pyc, 0),
    "remove": lambda: os.remove(pyc),
    "rename": lambda: os.rename(pyc, pyc + ".old"),
    "replace from memory": lambda: (open("/tmp/evil.pyc", "wb").write(b"x"), os.replace("/tmp/evil.pyc", pyc)),
    "new file": lambda: open(base + "/lib/python3.12/site-packages/evil.cpython-312.pyc", "wb").write(b"x"),
    "new folder": lambda: os.mkdir(base + "/evil"),
    "symlink": lambda: os.symlink("/tmp", base + "/evil-link"),
    "chmod": lambda: os.chmod(pyc, 0o777),
    "utime": lambda: os.utime(pyc, (0, 0)),
}}
for name, attempt in attempts.items():
    try:
        attempt()
        print(name, "DONE")
    except Exception as exc:
        print(name, "refused", type(exc).__name__)
# Unmounting it (allowed: the interpreter's own file system) only hides it from this interpreter.
__import__("pyodide_js").FS.unmount(base)
os.makedirs(os.path.dirname(pyc), exist_ok=True)
open(pyc, "wb").write(b"written after unmounting")
# An interpreter told to write bytecode writes it nowhere the next one would read.
sys.dont_write_bytecode = False
os.makedirs("/tmp/mine", exist_ok=True)
open("/tmp/mine/mymod.py", "w").write("X = 1\\n")
sys.path.insert(0, "/tmp/mine")
import mymod
print("imported", mymod.X)
"""
    lines = _stdout(handle, attack).splitlines()
    assert [line for line in lines if "DONE" in line] == []
    assert len([line for line in lines if "refused" in line]) == 11
    assert lines[-1] == "imported 1"
    assert tree_digest(tree) == before
    handle.call("pyodide_reset")
    assert _stdout(handle, PROBE).split()[0] == "from-cache"


def test_run_waits_for_the_build_so_the_next_run_imports_compiled_modules(tmp_path: Path) -> None:
    env = {**os.environ, "MCP_PYODIDE_CACHE_ROOT": str(fresh_cache_root(tmp_path, snapshot=True))}
    command = [sys.executable, "-m", "mcp_pyodide", "run", "--package-source", str(offline_packages_dir()), "-c", PROBE]
    words = []
    for _ in range(2):
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        words.append(done.stdout.split()[0])
    assert words == ["compiled", "from-cache"]
