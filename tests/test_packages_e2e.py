"""Packages, figures and files end to end: the agent's CSV-to-chart workflow through the real client.

Uses the verified offline Pyodide package set (see scripts/prepare_test_packages.py).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mcp_types as types
import pytest
from support import ALLOW_ALL, REPO, ServerHandle, fresh_cache_root, offline_packages_dir, text_of

from mcp_pyodide import RuntimeConfig, SyncSandbox

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("workspace")
    data = root / "data"
    data.mkdir()
    (data / "sales.csv").write_text("month,total\njan,10\nfeb,32\nmar,21\n")
    return root


@pytest.fixture(scope="module")
def server(workspace: Path) -> Iterator[ServerHandle]:
    handle = ServerHandle(
        "--policy",
        ALLOW_ALL,
        "--package-source",
        str(offline_packages_dir()),
        "--cache-dir",
        str(workspace / "cache"),
        "--mount",
        f"data={workspace / 'data'}:ro",
        "--output-dir",
        str(workspace / "output"),
    ).start()
    yield handle
    handle.close()


def test_csv_to_chart_workflow(server: ServerHandle, workspace: Path) -> None:
    result = server.execute("import pandas as pd\ndf = pd.read_csv('/mnt/data/sales.csv')\nint(df.total.sum())")
    assert not result.is_error, text_of(result)
    sc = result.structured_content
    assert sc is not None and sc["result"] == "63"
    assert any(p.startswith("pandas 2.2.3") for p in sc["loaded_packages"])
    assert "packages loaded" in text_of(result)

    chart = server.execute(
        "import matplotlib.pyplot as plt\ndf.plot(x='month', y='total', kind='bar')\nplt.title('Sales')\nplt.show()"
    )
    assert not chart.is_error, text_of(chart)
    figures = chart.structured_content["figures"]  # type: ignore[index]
    assert len(figures) == 1
    png = Path(figures[0])
    assert png.parent == (workspace / "output").resolve()
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert str(png) in text_of(chart)
    images = [b for b in chart.content if isinstance(b, types.ImageContent)]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    assert base64.b64decode(images[0].data) == png.read_bytes()
    links = [b for b in chart.content if isinstance(b, types.ResourceLink)]
    assert links and str(links[0].uri).startswith("file:///mnt/output/")

    again = server.call("pyodide_read-image", {"mountName": "output", "imagePath": png.name})
    assert not again.is_error, text_of(again)
    [image] = [b for b in again.content if isinstance(b, types.ImageContent)]
    assert base64.b64decode(image.data) == png.read_bytes()


def test_figures_left_open_are_saved_too(server: ServerHandle) -> None:
    result = server.execute("import matplotlib.pyplot as plt\nplt.figure()\nplt.plot([3, 1, 2]);")
    figures = result.structured_content["figures"]  # type: ignore[index]
    assert len(figures) == 1 and Path(figures[0]).read_bytes().startswith(PNG_MAGIC)
    # Closed once saved: the next run saves nothing new.
    assert server.execute("1").structured_content["figures"] == []  # type: ignore[index]


def test_figure_names_are_unique_and_sortable(server: ServerHandle) -> None:
    code = "import matplotlib.pyplot as plt\nfor i in range(3):\n    plt.figure(); plt.plot([i])\nplt.show()"
    figures = server.execute(code).structured_content["figures"]  # type: ignore[index]
    assert len(figures) == 3 and len(set(figures)) == 3 and figures == sorted(figures)


ARTIST_DOCS = """
import hashlib, inspect, json
import matplotlib.pyplot as plt
from matplotlib.artist import Artist, ArtistInspector

def subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)

made = {f"{c.__module__}.{c.__qualname__}": [c.set.__doc__, str(inspect.signature(c.set))]
        for c in subclasses(Artist) if "set" in c.__dict__}
print(len(made), hashlib.sha256(json.dumps(made, sort_keys=True).encode()).hexdigest(),
      inspect.cleandoc.__module__, ArtistInspector.get_valid_values.__module__)
"""
UNHOOKED = "import sys\nsys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != '_PyplotFinder']\n"


def test_pyplots_generated_docstrings_match_an_import_without_our_hook(server: ServerHandle) -> None:
    """Our import hook memoizes pyplot's docstring work; every Artist's `set` must come out the same."""
    runs = []
    for code in (ARTIST_DOCS, UNHOOKED + ARTIST_DOCS):
        assert not server.call("pyodide_reset").is_error
        result = server.execute(code)
        assert not result.is_error, text_of(result)
        runs.append(result.structured_content["stdout"].split())  # type: ignore[index]
    hooked, plain = runs
    assert int(hooked[0]) > 80, hooked  # every Artist subclass pyplot defines, with its generated `set`
    assert hooked == plain
    assert hooked[2:] == ["inspect", "matplotlib.artist"]  # both functions are their own again
    assert not server.call("pyodide_reset").is_error


def test_the_python_api_without_an_output_folder_keeps_the_font_cache_and_saves_nothing() -> None:
    """No output folder (the API's default): no figure files, but no font-cache rebuild either."""
    config = RuntimeConfig(package_source=str(offline_packages_dir()), timeout_ms=180_000)
    with SyncSandbox(config=config) as first:  # on closing, the machine's font list is made if missing
        assert first.execute("import matplotlib").ok
    with SyncSandbox(config=config) as sandbox:
        result = sandbox.execute(
            "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\nlen(plt.get_fignums())"
        )
        assert result.ok, result.error
        assert "building the font cache" not in result.stderr, result.stderr
        assert result.value == "1"  # show() is matplotlib's own: the figure stays open, nothing saved
        assert result.figures == [] and sandbox.output_dir is None


def test_files_written_to_output_are_listed(server: ServerHandle, workspace: Path) -> None:
    result = server.execute("open('/mnt/output/report.txt', 'w').write('done')")
    files = result.structured_content["files"]  # type: ignore[index]
    assert str((workspace / "output" / "report.txt").resolve()) in files
    assert (workspace / "output" / "report.txt").read_text() == "done"


def test_read_only_mount_refuses_writes(server: ServerHandle, workspace: Path) -> None:
    result = server.execute("open('/mnt/data/new.txt', 'w').write('x')")
    assert result.is_error
    assert not (workspace / "data" / "new.txt").exists()


def test_install_packages_reports_each_package(server: ServerHandle) -> None:
    result = server.call("pyodide_install-packages", {"package": "scipy nosuchpackage"})
    assert result.is_error  # one of them failed
    by_name = {p["name"]: p for p in result.structured_content["packages"]}  # type: ignore[index]
    assert by_name["scipy"]["installed"] is True and by_name["scipy"]["version"] == "1.14.1"
    assert by_name["nosuchpackage"]["installed"] is False
    assert "not in Pyodide" in by_name["nosuchpackage"]["error"]
    text = text_of(result)
    assert "installed scipy 1.14.1" in text and "not installed nosuchpackage" in text
    assert server.execute("import scipy\nscipy.__version__").structured_content["result"] == "'1.14.1'"  # type: ignore[index]


def test_import_name_hint_for_unknown_package(server: ServerHandle) -> None:
    result = server.call("pyodide_install-packages", {"package": "sklearn"})
    assert result.is_error and "scikit-learn" in text_of(result)


def test_corrupted_package_file_is_refused_and_not_kept(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for item in offline_packages_dir().iterdir():
        os.symlink(item, source / item.name)
    six = "six-1.16.0-py2.py3-none-any.whl"
    (source / six).unlink()
    data = bytearray((offline_packages_dir() / six).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (source / six).write_bytes(bytes(data))
    cache = tmp_path / "cache"
    handle = ServerHandle("--policy", ALLOW_ALL, "--package-source", str(source), "--cache-dir", str(cache)).start()
    try:
        result = handle.call("pyodide_install-packages", {"package": "six"})
        assert result.is_error
        assert six in text_of(result) and "sha256" in text_of(result).lower()
        assert not (cache / six).exists()
        imported = handle.execute("import six")
        assert imported.is_error and "PackageError" in text_of(imported)
        assert handle.execute("1 + 1").structured_content["result"] == "2"  # type: ignore[index]
    finally:
        handle.close()


def test_fetch_packages_fills_the_cache_for_offline_use(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    root = fresh_cache_root(tmp_path, snapshot=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mcp_pyodide",
            "fetch-packages",
            "matplotlib",
            "--package-source",
            str(offline_packages_dir()),
            "--cache-dir",
            str(cache),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "MCP_PYODIDE_CACHE_ROOT": str(root)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "matplotlib" in proc.stdout and (cache / "numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl").exists()
    # Unpacked as well (fonttools included: its man page is a data file), for interpreters to link.
    assert "13 of them unpacked" in proc.stdout, proc.stdout
    trees = {p.name for p in (root / "package-trees").iterdir()}
    assert len(trees) == 13 and not any(name.startswith(".") for name in trees), trees
    # The cache alone now serves a server whose source is unreachable.
    handle = ServerHandle(
        "--policy",
        ALLOW_ALL,
        "--package-source",
        str(tmp_path / "nowhere"),
        "--cache-dir",
        str(cache),
        env={"MCP_PYODIDE_CACHE_ROOT": str(root)},
    ).start()
    try:
        result = handle.execute("import numpy, os\n(int(numpy.arange(4).sum()), os.path.islink(numpy.__file__))")
        assert result.structured_content["result"] == "(6, True)", text_of(result)  # type: ignore[index]
    finally:
        handle.close()
    shutil.rmtree(cache)


def test_package_installs_report_progress_to_clients_that_ask(tmp_path: Path) -> None:
    handle = ServerHandle(
        "--policy", ALLOW_ALL, "--package-source", str(offline_packages_dir()), "--cache-dir", str(tmp_path / "c")
    ).start()
    try:
        events: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            events.append((progress, total, message))

        assert handle.session is not None
        result = handle.run(
            handle.session.call_tool("pyodide_install-packages", {"package": "pandas"}, progress_callback=on_progress)
        )
        assert not result.is_error, text_of(result)
        assert events, "no progress notification arrived"
        assert any(total for _, total, _ in events)
    finally:
        handle.close()
