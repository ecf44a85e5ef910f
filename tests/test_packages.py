"""Tests for the package broker, against real Pyodide 0.27.7 files.

They need an offline package set. Prepare it once with::

    python scripts/prepare_test_packages.py --lock <path to pyodide-lock.json>
    export MCP_PYODIDE_TEST_PACKAGES=$PWD/test-packages

``MCP_PYODIDE_TEST_LOCK`` may point at a ``pyodide-lock.json``; otherwise the
copy the script puts in the package folder is used. Missing setup is a test
FAILURE, never a skip: silently skipped integrity tests protect nothing.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from mcp_pyodide.packages import (
    IntegrityError,
    PackageBroker,
    PackageSourceError,
    PyodideLock,
    UnknownPackageError,
    default_cache_dir,
    sha256_file,
)
from mcp_pyodide.packages.cli import fetch_packages_main
from mcp_pyodide.packages.lock import LockEntry, LockError
from mcp_pyodide.packages.source import (
    FolderSource,
    HttpSource,
    PackageSource,
    load_httpx,
)

SETUP_HINT = (
    "run `python scripts/prepare_test_packages.py --lock <pyodide-lock.json>` and set "
    "MCP_PYODIDE_TEST_PACKAGES to the prepared folder (default <repo>/test-packages)"
)


def packages_dir() -> Path:
    """Folder of official package files; fails (not skips) when not configured."""
    value = os.environ.get("MCP_PYODIDE_TEST_PACKAGES")
    if not value:
        pytest.fail(f"MCP_PYODIDE_TEST_PACKAGES is not set: {SETUP_HINT}")
    path = Path(value)
    if not path.is_dir() or not any(path.glob("*.whl")):
        pytest.fail(f"MCP_PYODIDE_TEST_PACKAGES={value} holds no package files: {SETUP_HINT}")
    return path


def lock_path() -> Path:
    """``$MCP_PYODIDE_TEST_LOCK``, else the lock copied next to the test packages."""
    value = os.environ.get("MCP_PYODIDE_TEST_LOCK")
    if value:
        path = Path(value)
        if not path.is_file():
            pytest.fail(f"MCP_PYODIDE_TEST_LOCK={value} does not exist")
        return path
    path = packages_dir() / "pyodide-lock.json"
    if not path.is_file():
        pytest.fail(f"no pyodide-lock.json in the test package folder and MCP_PYODIDE_TEST_LOCK unset: {SETUP_HINT}")
    return path


@pytest.fixture(scope="module")
def lock() -> PyodideLock:
    return PyodideLock.from_path(lock_path())


def copy_source(lock: PyodideLock, names: list[str], dest: Path) -> Path:
    """A private source folder holding exactly the files ``names`` resolve to."""
    dest.mkdir(parents=True, exist_ok=True)
    src = packages_dir()
    for entry in lock.resolve(names):
        shutil.copy2(src / entry.file_name, dest / entry.file_name)
    return dest


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# --- lock -------------------------------------------------------------------


def test_resolve_matplotlib_pulls_dependencies_first(lock: PyodideLock) -> None:
    entries = lock.resolve(["Matplotlib"])
    keys = [e.key for e in entries]
    assert keys[-1] == "matplotlib"
    assert len(keys) == len(set(keys))
    for dep in (
        "numpy",
        "pillow",
        "kiwisolver",
        "python-dateutil",
        "six",
        "matplotlib-pyodide",
    ):
        assert dep in keys
    position = {k: i for i, k in enumerate(keys)}
    for entry in entries:
        for dep in entry.depends:
            assert position[lock.packages[dep.lower().replace("_", "-")].key] < position[entry.key]
    assert keys.index("six") < keys.index("python-dateutil")


def test_resolve_normalises_names(lock: PyodideLock) -> None:
    keys = [e.key for e in lock.resolve(["python_dateutil", "SIX", "Python.DateUtil"])]
    assert keys == ["six", "python-dateutil"]


def test_unknown_names_are_all_reported(lock: PyodideLock) -> None:
    with pytest.raises(UnknownPackageError) as info:
        lock.resolve(["numpy", "no-such-pkg", "sklearn", "also_missing"])
    assert info.value.names == ("no-such-pkg", "sklearn", "also_missing")
    message = str(info.value)
    assert "no-such-pkg" in message and "also_missing" in message
    assert info.value.hints == {"sklearn": "scikit-learn"}
    assert "scikit-learn" in message


def test_import_map(lock: PyodideLock) -> None:
    imports = lock.import_map()
    assert imports["sklearn"] == "scikit-learn"
    assert imports["PIL"] == "pillow"
    assert imports["dateutil"] == "python-dateutil"
    assert lock.packages_for_imports(["sklearn", "PIL.Image", "os", "numpy", "PIL"]) == [
        "scikit-learn",
        "pillow",
        "numpy",
    ]


def test_the_real_lock_reads_every_entry_with_its_lists_as_tuples(lock: PyodideLock) -> None:
    numpy = lock.get("NumPy")
    assert isinstance(numpy, LockEntry) and numpy.imports == ("numpy",) and numpy.depends == ()
    assert lock.info.version == "0.27.7" and len(lock.packages) > 300
    assert lock.get("matplotlib") is not None and "numpy" in lock.get("matplotlib").depends  # type: ignore[union-attr]


GOOD_ENTRY = {"name": "pkg", "version": "1", "file_name": "pkg.whl", "install_dir": "site", "sha256": "ab" * 32}


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({**GOOD_ENTRY, "sha256": 5}, "packages.pkg.sha256 is int 5, not str"),
        ({**GOOD_ENTRY, "depends": "numpy"}, "packages.pkg.depends is str 'numpy', not tuple[str, ...]"),
        ({**GOOD_ENTRY, "depends": ["numpy", 3]}, "packages.pkg.depends is list"),
        ({**GOOD_ENTRY, "unvendored_tests": "yes"}, "packages.pkg.unvendored_tests is str 'yes', not bool"),
        ({k: v for k, v in GOOD_ENTRY.items() if k != "file_name"}, "packages.pkg has no 'file_name'"),
        (["not", "an", "object"], "packages.pkg is not an object"),
    ],
)
def test_a_bad_lock_entry_is_refused_with_the_file_entry_and_field_named(
    tmp_path: Path, entry: object, problem: str
) -> None:
    path = tmp_path / "pyodide-lock.json"
    path.write_text(json.dumps({"info": {"version": "0.27.7"}, "packages": {"pkg": entry}}))
    with pytest.raises(LockError) as caught:
        PyodideLock.from_path(path)
    assert str(path) in str(caught.value) and problem in str(caught.value)


def test_a_lock_entry_keeps_defaults_and_ignores_fields_it_does_not_use(tmp_path: Path) -> None:
    path = tmp_path / "pyodide-lock.json"
    extra = {**GOOD_ENTRY, "shared_library": True, "imports": ["pkg"]}
    path.write_text(json.dumps({"info": {"version": None, "extra": 1}, "packages": {"Pkg": extra}}))
    parsed = PyodideLock.from_path(path)
    entry = parsed.get("pkg")
    assert entry == LockEntry(
        name="pkg", version="1", file_name="pkg.whl", install_dir="site", sha256="ab" * 32, imports=("pkg",)
    )
    assert entry.package_type == "package" and not entry.unvendored_tests and parsed.info.version is None
    bad_info = tmp_path / "bad-info.json"
    bad_info.write_text(json.dumps({"info": {"version": 27}, "packages": {}}))
    with pytest.raises(LockError) as caught:
        PyodideLock.from_path(bad_info)
    assert "info.version is int 27, not str | None" in str(caught.value)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYODIDE_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PYODIDE_CACHE_DIR")
    monkeypatch.delenv("MCP_PYODIDE_CACHE_ROOT", raising=False)  # the override a test run may set wins over XDG
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform != "win32":
        assert default_cache_dir() == tmp_path / "xdg" / "mcp-pyodide" / "packages"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir().parts[-2:] == ("mcp-pyodide", "packages")


# --- broker -----------------------------------------------------------------


def test_ensure_from_folder_into_empty_cache(lock: PyodideLock, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    broker = PackageBroker(lock_path(), packages_dir(), cache)
    events: list[tuple[int, int, str]] = []

    result = anyio.run(lambda: broker.ensure(["matplotlib"], progress=lambda d, t, m: events.append((d, t, m))))

    expected = lock.resolve(["matplotlib"])
    assert result.names == [e.key for e in expected]
    assert [p.status for p in result.packages] == ["fetched"] * len(expected)
    assert ("numpy", "2.0.2") in [(p.name, p.version) for p in result.packages]
    for entry, pkg in zip(expected, result.packages, strict=True):
        assert pkg.path == cache / entry.file_name
        assert sha256_file(pkg.path) == entry.sha256
    assert cache_files(cache) == sorted(e.file_name for e in expected)  # no temp files left
    assert events[-1][0] == events[-1][1] == len(expected)


def test_corrupted_file_raises_and_is_not_cached(lock: PyodideLock, tmp_path: Path) -> None:
    source = copy_source(lock, ["six"], tmp_path / "src")
    wheel = source / lock.packages["six"].file_name
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    broker = PackageBroker(lock, source, cache)

    with pytest.raises(IntegrityError) as info:
        anyio.run(broker.ensure, ["six"])

    err = info.value
    assert err.file_name == wheel.name
    assert err.expected == lock.packages["six"].sha256
    assert err.actual == sha256_file(wheel)
    for part in (wheel.name, err.expected, err.actual, str(source)):
        assert part in str(err)
    assert cache_files(cache) == []


def test_cache_hit_does_not_refetch(lock: PyodideLock, tmp_path: Path) -> None:
    source = copy_source(lock, ["python-dateutil"], tmp_path / "src")
    cache = tmp_path / "cache"
    first = anyio.run(PackageBroker(lock, source, cache).ensure, ["python-dateutil"])
    assert [p.status for p in first.packages] == ["fetched", "fetched"]

    shutil.rmtree(source)  # any fetch attempt would now fail
    broker = PackageBroker(lock, source, cache)  # fresh broker: re-hashes the files
    for _ in range(2):  # second round uses the in-memory size+mtime record
        again = anyio.run(broker.ensure, ["python-dateutil"])
        assert [(p.name, p.status) for p in again.packages] == [
            ("six", "cached"),
            ("python-dateutil", "cached"),
        ]


def test_corrupt_cached_file_is_replaced(lock: PyodideLock, tmp_path: Path) -> None:
    source = copy_source(lock, ["six"], tmp_path / "src")
    cache = tmp_path / "cache"
    broker = PackageBroker(lock, source, cache)
    anyio.run(broker.ensure, ["six"])
    cached = cache / lock.packages["six"].file_name
    cached.write_bytes(b"garbage")

    result = anyio.run(broker.ensure, ["six"])
    assert result.packages[0].status == "fetched"
    assert sha256_file(cached) == lock.packages["six"].sha256

    cached.write_bytes(b"garbage")
    shutil.rmtree(source)
    with pytest.raises(PackageSourceError):
        anyio.run(broker.ensure, ["six"])
    assert not cached.exists()  # a bad copy is never left for the sandbox to load


def test_missing_file_in_folder_source_names_file_and_folder(lock: PyodideLock, tmp_path: Path) -> None:
    source = tmp_path / "empty"
    source.mkdir()
    with pytest.raises(PackageSourceError) as info:
        anyio.run(PackageBroker(lock, source, tmp_path / "cache").ensure, ["six"])
    assert lock.packages["six"].file_name in str(info.value)
    assert str(source) in str(info.value)
    assert cache_files(tmp_path / "cache") == []


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_base() -> Iterator[str]:
    """The test package folder served on 127.0.0.1 by http.server in a thread."""
    handler = functools.partial(_QuietHandler, directory=str(packages_dir()))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


HTTP_BACKENDS = ["urllib"] + (["httpx"] if load_httpx() is not None else [])


@pytest.mark.parametrize("backend", HTTP_BACKENDS)
def test_http_source(lock: PyodideLock, tmp_path: Path, http_base: str, backend: str) -> None:
    source = HttpSource(http_base, timeout=10, backend=backend)
    assert source.backend == backend
    cache = tmp_path / "cache"
    broker = PackageBroker(lock, source, cache)
    events: list[str] = []

    result = anyio.run(lambda: broker.ensure(["python-dateutil"], progress=lambda d, t, m: events.append(m)))

    assert [(p.name, p.status) for p in result.packages] == [
        ("six", "fetched"),
        ("python-dateutil", "fetched"),
    ]
    for pkg in result.packages:
        assert sha256_file(pkg.path) == lock.packages[pkg.name].sha256
    assert any("MB" in m for m in events)  # byte-level progress while downloading

    # A file the server does not have: the error names the file and the URL.
    absent = next(e for e in lock.packages.values() if not (packages_dir() / e.file_name).exists() and not e.depends)
    with pytest.raises(PackageSourceError) as info:
        anyio.run(broker.ensure, [absent.key])
    assert absent.file_name in str(info.value) and http_base in str(info.value)
    assert "404" in str(info.value)


class _CountingSource(PackageSource):
    """Wraps a folder and counts fetches; slow enough that calls overlap."""

    def __init__(self, root: Path) -> None:
        self.inner = FolderSource(root)
        self.calls: dict[str, int] = {}

    @property
    def description(self) -> str:
        return self.inner.description

    async def fetch(self, file_name: str, dest: Path, on_bytes: object = None) -> None:
        self.calls[file_name] = self.calls.get(file_name, 0) + 1
        await anyio.sleep(0.05)
        await self.inner.fetch(file_name, dest)


def test_concurrent_ensure_fetches_each_file_once(lock: PyodideLock, tmp_path: Path) -> None:
    source = _CountingSource(packages_dir())
    broker = PackageBroker(lock, source, tmp_path / "cache")
    results: list[list[tuple[str, str]]] = []

    async def one(names: list[str]) -> None:
        res = await broker.ensure(names)
        results.append([(p.name, p.status) for p in res.packages])

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(one, ["python-dateutil"])
            tg.start_soon(one, ["six"])
            tg.start_soon(one, ["python_dateutil"])

    anyio.run(main)
    six_file = lock.packages["six"].file_name
    assert source.calls[six_file] == 1
    assert source.calls[lock.packages["python-dateutil"].file_name] == 1
    statuses = [s for r in results for n, s in r if n == "six"]
    assert sorted(statuses) == ["cached", "cached", "fetched"]


# --- CLI --------------------------------------------------------------------


def test_cli_fetch_packages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    args = [
        "--lock",
        str(lock_path()),
        "--package-source",
        str(packages_dir()),
        "--cache-dir",
        str(cache),
    ]

    assert fetch_packages_main(["python-dateutil", *args]) == 0
    out = capsys.readouterr()
    assert "fetched  six 1.16.0" in out.out
    assert "2 package(s) ready" in out.out
    assert "[2/2]" in out.err

    assert fetch_packages_main(["six", *args]) == 0
    assert "verified six 1.16.0" in capsys.readouterr().out

    assert fetch_packages_main(["nope-not-a-package", *args]) == 2
    assert "nope-not-a-package" in capsys.readouterr().err
    assert fetch_packages_main(args) == 2
