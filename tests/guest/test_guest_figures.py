"""The figure saver without matplotlib: names, reports and the import hook it installs on demand."""

from __future__ import annotations

import collections
import inspect
import re
import sys
import types
from pathlib import Path
from typing import ClassVar

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


def fake_artist_module(monkeypatch: pytest.MonkeyPatch, *, complete: bool = True) -> types.ModuleType:
    """A stand-in for matplotlib.artist with the four members the memo wraps, counting their calls."""

    class ArtistInspector:
        calls: ClassVar[collections.Counter[str]] = collections.Counter()

        def __init__(self, o: object) -> None:
            self.o = o
            self.aliasd = self.get_aliases()

        def get_valid_values(self, attr: str) -> str:
            ArtistInspector.calls["values"] += 1
            return f"{attr}: {inspect.getdoc(getattr(self.o, 'set_' + attr))}"

        def get_aliases(self) -> dict[str, set[str]]:
            ArtistInspector.calls["aliases"] += 1
            return {"alpha": {"a"}}

        def get_setters(self) -> list[str]:
            ArtistInspector.calls["setters"] += 1
            return sorted(n[4:] for n in dir(self.o) if n.startswith("set_"))

    class Artist:
        def set_alpha(self, alpha: float) -> None:
            """scalar or None"""

        def set_label(self, label: str) -> None:  # no docstring: never memoized
            pass

        @classmethod
        def _update_set_signature_and_docstring(cls) -> None:  # as matplotlib: two inspectors, two walks
            cls.signature = ArtistInspector(cls).get_setters()  # type: ignore[attr-defined]
            cls.doc = ArtistInspector(cls).get_setters()  # type: ignore[attr-defined]

    if not complete:
        del ArtistInspector.get_aliases
    fake = types.ModuleType("matplotlib.artist")
    fake.ArtistInspector, fake.Artist = ArtistInspector, Artist  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "matplotlib", types.ModuleType("matplotlib"))
    monkeypatch.setitem(sys.modules, "matplotlib.artist", fake)
    return fake


def test_the_docstring_memo_answers_repeats_and_restores_what_it_patched(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_artist_module(monkeypatch)
    inspector, artist = fake.ArtistInspector, fake.Artist
    before = {**vars(inspector)}, artist.__dict__["_update_set_signature_and_docstring"], inspect.cleandoc

    class Line(artist):  # type: ignore[misc, valid-type]
        def set_color(self, color: str) -> None:
            """color"""

    with fg._repeated_docs_memoized():
        assert inspect.cleandoc is not before[2]
        answers = [inspector(Line).get_valid_values(a) for a in ("alpha", "alpha", "label", "label")]
        inspector.calls.clear()
        Line._update_set_signature_and_docstring()
        assert Line.signature == Line.doc == ["alpha", "color", "label"]
        assert inspector.calls == {"aliases": 1, "setters": 1}  # one walk each for the class being made
        inspector(Line).get_setters()
        inspector(Line).get_setters()
        assert inspector.calls == {"aliases": 3, "setters": 3}  # outside that call: walked every time
    assert answers == ["alpha: scalar or None"] * 2 + ["label: None"] * 2
    after = {**vars(inspector)}, artist.__dict__["_update_set_signature_and_docstring"], inspect.cleandoc
    assert after == before

    def users_own(doc: str) -> str:
        return doc

    try:
        with fg._repeated_docs_memoized():
            inspect.cleandoc = users_own
        assert inspect.cleandoc is users_own  # replaced meanwhile by user code: left as the user made it
    finally:
        inspect.cleandoc = before[2]


def test_the_docstring_memo_leaves_another_matplotlib_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_artist_module(monkeypatch, complete=False)
    plain = {**vars(fake.ArtistInspector)}, inspect.cleandoc
    with fg._repeated_docs_memoized():
        assert ({**vars(fake.ArtistInspector)}, inspect.cleandoc) == plain


def test_the_docstring_memo_is_a_no_op_without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    plain = inspect.cleandoc
    with fg._repeated_docs_memoized():
        assert inspect.cleandoc is plain
