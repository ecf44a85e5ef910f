"""The figure saver without matplotlib: names, reports and the import hook it installs on demand."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mcp_pyodide.guest import mcp_guest_figures as fg


def test_figure_names_are_unique_and_in_the_output_folder(tmp_path: Path) -> None:
    saver = fg.FigureSaver(str(tmp_path))
    first, second = saver.next_path(), saver.next_path()
    assert first != second
    assert Path(first).parent == tmp_path
    assert re.fullmatch(r"figure-\d{8}-\d{6}-\d{3}-[0-9a-f]{4}-0001\.png", Path(first).name)


def test_a_report_lists_saved_figures_once_and_the_font_cache_once(tmp_path: Path) -> None:
    saver = fg.FigureSaver(str(tmp_path))
    assert saver.report() == {}
    saver.saved = ["a.png"]
    saver.font_cache = "{}"
    assert saver.report() == {"figures": ["a.png"], "fontCache": "{}"}
    assert saver.report() == {"figures": ["a.png"]}


def test_the_import_hook_is_only_installed_when_asked(tmp_path: Path) -> None:
    finders = [f for f in sys.meta_path if isinstance(f, fg._PyplotFinder)]
    assert finders == [], "importing the module installed its import hook"
    saver = fg.FigureSaver(str(tmp_path))
    saver.install()
    try:
        assert any(isinstance(f, fg._PyplotFinder) for f in sys.meta_path)
        assert sys.meta_path[0].find_spec("json", None) is None  # other modules are not its business
    finally:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, fg._PyplotFinder)]
