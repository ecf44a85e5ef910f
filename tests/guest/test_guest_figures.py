"""The figure saver without matplotlib: names, reports and the import hook it installs on demand."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from mcp_pyodide.guest import mcp_guest_figures as fg


def test_figure_names_are_unique_and_in_the_output_folder(tmp_path: Path) -> None:
    saver = fg.FigureSaver(str(tmp_path))
    first, second = saver.next_path(str(tmp_path)), saver.next_path(str(tmp_path))
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


def test_the_docstring_memo_restores_both_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect
    import types

    class ArtistInspector:
        calls = 0

        def __init__(self, o: object) -> None:
            self.o = o

        def get_valid_values(self, attr: str) -> str:
            ArtistInspector.calls += 1
            return f"{attr}: {inspect.getdoc(getattr(self.o, 'set_' + attr))}"

    class Artist:
        def set_alpha(self, alpha: float) -> None:
            """scalar or None"""

        def set_label(self, label: str) -> None:  # no docstring: never memoized
            pass

    fake = types.ModuleType("matplotlib.artist")
    fake.ArtistInspector = ArtistInspector  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "matplotlib", types.ModuleType("matplotlib"))
    monkeypatch.setitem(sys.modules, "matplotlib.artist", fake)
    plain_cleandoc, plain_values = inspect.cleandoc, ArtistInspector.get_valid_values
    with fg._repeated_docs_memoized():
        assert inspect.cleandoc is not plain_cleandoc
        answers = [ArtistInspector(Artist).get_valid_values(a) for a in ("alpha", "alpha", "label", "label")]
    assert answers == ["alpha: scalar or None"] * 2 + ["label: None"] * 2
    assert ArtistInspector.calls == 3  # the documented setter once, the undocumented one each time
    assert inspect.cleandoc is plain_cleandoc and ArtistInspector.get_valid_values is plain_values

    def users_own(doc: str) -> str:
        return doc

    try:
        with fg._repeated_docs_memoized():
            inspect.cleandoc = users_own
        assert inspect.cleandoc is users_own  # replaced meanwhile by user code: left as the user made it
    finally:
        inspect.cleandoc = plain_cleandoc


def test_the_docstring_memo_is_a_no_op_without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    plain = inspect.cleandoc
    with fg._repeated_docs_memoized():
        assert inspect.cleandoc is plain
