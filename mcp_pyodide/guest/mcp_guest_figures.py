"""Runs inside Pyodide: turns matplotlib figures into PNG files in the output folder.

`plt.show()` saves every open figure and closes it; figures still open when a
run ends are saved the same way. Nothing is displayed and nothing is lost.
pyplot is patched the moment it is imported, whichever way it is imported.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import inspect
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

PYPLOT = "matplotlib.pyplot"
FONT_MANAGER = "matplotlib.font_manager"
# Pyodide's matplotlib keeps its font cache beside font_manager.py, in memory; we keep a copy
# in MPLCONFIGDIR (a host folder) so only the very first figure on a machine pays to build it.
FONT_CACHE = "fontlist.json"


class FigureSaver:
    """Saves figures into `output_dir`; with none (the Python API's default) it saves nothing,
    but its import hook still restores the kept font cache and speeds up pyplot's import."""

    def __init__(self, output_dir: str | None) -> None:
        self.output_dir = output_dir
        self.saved: list[str] = []
        self.counter = 0
        self.session = secrets.token_hex(2)
        self.font_cache: str | None = None

    # -- hooks called by the executor --------------------------------------------------------

    def install(self) -> None:
        sys.meta_path.insert(0, _PyplotFinder(self))
        if PYPLOT in sys.modules:
            self.patch(sys.modules[PYPLOT])

    def before_run(self) -> None:
        self.saved = []
        if not any(isinstance(finder, _PyplotFinder) for finder in sys.meta_path):
            self.install()  # user code removed the finder; put it back
        pyplot = sys.modules.get(PYPLOT)
        if pyplot is not None and not getattr(pyplot.show, "_mcp_saves_figures", False):
            self.patch(pyplot)

    def after_run(self) -> None:
        pyplot = sys.modules.get(PYPLOT)
        if pyplot is not None:
            self.save_open_figures(pyplot)

    def report(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"figures": list(self.saved)} if self.saved else {}
        if self.font_cache is not None:
            extra["fontCache"], self.font_cache = self.font_cache, None
        return extra

    # -- the work ----------------------------------------------------------------------------

    def patch(self, pyplot: Any) -> None:
        if self.output_dir is None:
            return  # nowhere to save to: plt.show() stays matplotlib's own
        saver = self

        def show(*args: Any, **kwargs: Any) -> None:
            saver.save_open_figures(pyplot)

        show._mcp_saves_figures = True  # type: ignore[attr-defined]
        pyplot.show = show
        try:
            pyplot.switch_backend("Agg")
        except Exception:  # noqa: BLE001 - a backend already chosen by the user stays
            pass

    def next_path(self, folder: str) -> str:
        self.counter += 1
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        millis = int(time.time() * 1000) % 1000
        name = f"figure-{stamp}-{millis:03d}-{self.session}-{self.counter:04d}.png"
        return os.path.join(folder, name)

    def save_open_figures(self, pyplot: Any) -> None:
        folder = self.output_dir
        if folder is None:
            return  # figures stay open, as matplotlib leaves them
        for number in list(pyplot.get_fignums()):
            figure = pyplot.figure(number)
            path = self.next_path(folder)
            try:
                os.makedirs(folder, exist_ok=True)
                figure.savefig(path, format="png")
                self.saved.append(path)
            except Exception as exc:  # noqa: BLE001 - report, keep saving the others
                print(f"[mcp-pyodide] could not save figure {number}: {exc}", file=sys.stderr)
            finally:
                pyplot.close(figure)


def _persisted_font_cache() -> str | None:
    folder = os.environ.get("MPLCONFIGDIR")
    return os.path.join(folder, FONT_CACHE) if folder else None


def _restore_font_cache(origin: str | None) -> None:
    saved = _persisted_font_cache()
    if not origin or not saved or not os.path.exists(saved):
        return
    # The copy shipped inside the package does not load here, so ours always wins.
    shutil.copyfile(saved, os.path.join(os.path.dirname(origin), FONT_CACHE))


def _built_font_cache(origin: str | None) -> str | None:
    """The font cache matplotlib just built, for the broker to keep (this side cannot write there)."""
    saved = _persisted_font_cache()
    if not origin or not saved or os.path.exists(saved):
        return None
    built = os.path.join(os.path.dirname(origin), FONT_CACHE)
    if not os.path.exists(built):
        return None
    with open(built, encoding="utf-8") as handle:
        return handle.read()


class _PyplotFinder(importlib.abc.MetaPathFinder):
    """Finds matplotlib modules through the other finders, and wraps their loading."""

    def __init__(self, saver: FigureSaver) -> None:
        self.saver = saver

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in (PYPLOT, FONT_MANAGER):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                loader = spec.loader
                original = loader.exec_module
                saver = self.saver
                origin = spec.origin

                def exec_module(
                    module: Any, original: Any = original, saver: FigureSaver = saver, origin: str | None = origin
                ) -> None:
                    if fullname == FONT_MANAGER:
                        _quietly(_restore_font_cache, origin)
                        original(module)
                        try:
                            saver.font_cache = _built_font_cache(origin)
                        except OSError as exc:
                            print(f"[mcp-pyodide] matplotlib font cache: {exc}", file=sys.stderr)
                    else:
                        with _repeated_docs_memoized():
                            original(module)
                        saver.patch(module)

                loader.exec_module = exec_module  # type: ignore[method-assign]
                return spec
        return None


def _quietly(action: Any, origin: str | None) -> None:
    try:
        action(origin)
    except OSError as exc:
        print(f"[mcp-pyodide] matplotlib font cache: {exc}", file=sys.stderr)


@contextlib.contextmanager
def _repeated_docs_memoized() -> Iterator[None]:
    """While pyplot imports, answer repeated docstring work from a memo; restore what it patched after.

    Each of the ~100 Artist subclasses it defines gets a generated `set` signature and
    docstring, which reads every setter's docstring again: about 7,000 `inspect.cleandoc`
    and 4,000 `ArtistInspector.get_valid_values` calls for a few hundred distinct answers,
    and, per class, the same walk of its setters and aliases twice. `cleandoc` is a function
    of its string alone; `get_valid_values`, for a setter with a docstring, of the setter,
    that docstring and the property name; and nothing changes a class while its own `set` is
    generated, so the walks are kept for that one call only. The answers are the same, and
    outside the import all four are matplotlib's and Python's own again.
    """
    try:
        artist = importlib.import_module("matplotlib.artist")
        inspector, base = artist.ArtistInspector, artist.Artist
        plain = {name: inspector.__dict__[name] for name in ("get_valid_values", "get_aliases", "get_setters")}
        plain_update = base.__dict__["_update_set_signature_and_docstring"]  # a classmethod
        generate = plain_update.__func__
    except Exception:  # noqa: BLE001 - the import proper raises its own error; another matplotlib: no memo
        yield
        return
    plain_cleandoc: Callable[[str], str] = inspect.cleandoc
    docs: dict[str, str] = {}
    values: dict[tuple[Any, ...], Any] = {}
    generating: list[tuple[type, dict[str, Any]]] = []  # the class whose `set` is being made

    def cleandoc(doc: str) -> str:
        if type(doc) is not str:
            return plain_cleandoc(doc)
        found = docs.get(doc)
        if found is None:
            found = docs[doc] = plain_cleandoc(doc)
        return found

    def get_valid_values(self: Any, attr: str) -> Any:
        setter = getattr(self.o, f"set_{attr}", None)
        doc = getattr(setter, "__doc__", None)
        # Only a setter with a docstring of its own: one without inherits its base's docstring,
        # which `inspect.getdoc` finds only once the module defining the class has finished.
        key = (setter, doc, attr) if type(doc) is str and type(attr) is str else None
        try:
            if key is not None and key in values:
                return values[key]
        except TypeError:  # an unhashable setter
            key = None
        answer = plain["get_valid_values"](self, attr)
        if key is not None:
            values[key] = answer
        return answer

    def walked(self: Any, name: str) -> Any:
        if not generating or self.o is not generating[-1][0]:
            return plain[name](self)
        kept = generating[-1][1]
        if name not in kept:
            kept[name] = plain[name](self)
        return kept[name]

    def get_aliases(self: Any) -> dict[str, set[str]]:
        return {prop: set(names) for prop, names in walked(self, "get_aliases").items()}

    def get_setters(self: Any) -> list[str]:
        return list(walked(self, "get_setters"))

    def update(cls: type) -> None:
        generating.append((cls, {}))
        try:
            generate(cls)
        finally:
            generating.pop()

    ours = {"get_valid_values": get_valid_values, "get_aliases": get_aliases, "get_setters": get_setters}
    setattr(inspect, "cleandoc", cleandoc)  # noqa: B010 - the module's attribute, which getdoc reads
    for name, function in ours.items():
        setattr(inspector, name, function)
    base._update_set_signature_and_docstring = classmethod(update)
    try:
        yield
    finally:
        if inspect.cleandoc is cleandoc:  # user code that replaced one meanwhile keeps its own
            setattr(inspect, "cleandoc", plain_cleandoc)  # noqa: B010
        for name, function in ours.items():
            if inspector.__dict__.get(name) is function:
                setattr(inspector, name, plain[name])
        if getattr(base.__dict__.get("_update_set_signature_and_docstring"), "__func__", None) is update:
            base._update_set_signature_and_docstring = plain_update
