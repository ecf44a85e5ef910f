"""The per-call host and guest paths stay cheap and bounded for big cells (issue 13)."""

from __future__ import annotations

import importlib
import linecache
import sys
import time
from pathlib import Path

import pytest

from mcp_pyodide.packages import imports
from mcp_pyodide.packages.imports import find_imports

GUEST_DIR = Path(__file__).resolve().parents[1] / "mcp_pyodide" / "guest"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import numpy as np\nx = 1", ["numpy"]),
        ("x = 1; import pandas.core", ["pandas"]),
        ("def f():\n    from matplotlib import (pyplot,\n        cm)\n", ["matplotlib"]),
        ("import a.b, c as d\nfrom . import e\nfrom .f import g\n", ["a", "c"]),
        ("fromx import y\nimporty = 2\n", []),
        ("print('no imports here')", []),
    ],
)
def test_small_and_large_cells_find_the_same_imports(source: str, expected: list[str]) -> None:
    assert find_imports(source) == expected
    padded = source + "\n" + "x = 1\n" * (imports.PARSE_LIMIT // 4)  # past the limit: the line scan
    assert len(padded) > imports.PARSE_LIMIT
    assert find_imports(padded) == expected


def test_a_one_megabyte_cell_is_scanned_in_milliseconds() -> None:
    cells = {
        "no imports": "x = 1\n" * 170_000,
        "one import at the end": "x = 1\n" * 170_000 + "import numpy\n",
        "many import words": "# import\n" * 110_000 + "import scipy\n",
    }
    for label, source in cells.items():
        started = time.perf_counter()
        found = find_imports(source)
        elapsed = time.perf_counter() - started
        assert elapsed < 0.1, f"{label}: {elapsed * 1000:.0f} ms"  # parsing it would take ~0.4 s
        assert found == ([] if label == "no imports" else ["numpy" if "numpy" in source else "scipy"])


def test_syntax_errors_in_small_cells_import_nothing() -> None:
    assert find_imports("import numpy\nif :") == []


def test_the_guest_keeps_only_the_last_cells_sources() -> None:
    sys.path.insert(0, str(GUEST_DIR))
    try:
        executor = importlib.import_module("mcp_guest_executor")
        guest = executor.Guest()
        first = guest.cell + 1
        for i in range(executor.KEEP_SOURCES + 10):
            guest.execute(f"value = {i}\n" + "# padding\n" * 100)
        kept = [name for name in linecache.cache if name.startswith("<cell-")]
        assert len(kept) == executor.KEEP_SOURCES
        assert f"<cell-{first}>" not in linecache.cache
        # Tracebacks still show the failing cell's source.
        reply = guest.execute("def f():\n    return 1 / 0\nf()")
        assert "return 1 / 0" in reply
    finally:
        sys.path.remove(str(GUEST_DIR))
