"""Typed view of Pyodide's ``pyodide-lock.json``: names, dependencies, imports.

The lock file is the single source of truth for which package files exist and
what their sha256 must be, so everything the broker fetches is resolved here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from ..errors import MCPPyodideError

__all__ = [
    "LockEntry",
    "LockError",
    "LockInfo",
    "PyodideLock",
    "UnknownPackageError",
    "find_lock_file",
    "load_lock",
    "normalize_name",
]

_SEPARATORS = re.compile(r"[-_.]+")


def normalize_name(name: str) -> str:
    """PEP 503 normalisation, so ``Pillow``, ``prompt_toolkit`` and ``Prompt.Toolkit`` match."""
    return _SEPARATORS.sub("-", name.strip()).lower()


class LockError(MCPPyodideError):
    """The lock file is missing, unreadable or not a Pyodide lock."""


class UnknownPackageError(MCPPyodideError, LookupError):
    """Raised by :meth:`PyodideLock.resolve` with *all* unknown names at once.

    Reporting every unknown name (not just the first) lets a caller fix a
    request in one round trip.
    """

    def __init__(
        self,
        names: Iterable[str],
        pyodide_version: str | None = None,
        hints: dict[str, str] | None = None,
    ) -> None:
        self.names: tuple[str, ...] = tuple(names)
        self.hints: dict[str, str] = dict(hints or {})
        where = f"Pyodide {pyodide_version}" if pyodide_version else "the Pyodide lock file"
        message = f"unknown package(s) not in {where}: {', '.join(self.names)}"
        if self.hints:
            message += (
                " ("
                + "; ".join(f"{name!r} is an import name: use package {pkg!r}" for name, pkg in self.hints.items())
                + ")"
            )
        super().__init__(message)


@dataclass(frozen=True)
class LockInfo:
    """The ``info`` block; only used for messages and sanity checks."""

    version: str | None = None
    python: str | None = None
    platform: str | None = None
    arch: str | None = None
    abi_version: str | None = None


@dataclass(frozen=True)
class LockEntry:
    """One package of the lock file (fields we rely on; others are ignored)."""

    name: str
    version: str
    file_name: str
    install_dir: str
    sha256: str
    package_type: str = "package"
    imports: tuple[str, ...] = ()
    depends: tuple[str, ...] = ()
    unvendored_tests: bool = False

    @property
    def key(self) -> str:
        """Normalised name: the stable identifier used everywhere else."""
        return normalize_name(self.name)


_Block = TypeVar("_Block", LockInfo, LockEntry)
# By the fields' annotations (strings: this module defers them).
_CHECKS: dict[str, Callable[[object], bool]] = {
    "str": lambda value: isinstance(value, str),
    "str | None": lambda value: value is None or isinstance(value, str),
    "bool": lambda value: isinstance(value, bool),
    "tuple[str, ...]": lambda value: isinstance(value, list) and all(isinstance(item, str) for item in value),
}


def _parse(cls: type[_Block], raw: object, where: str) -> _Block:
    """`raw` as a `cls`, checked field by field (plain checks: the server's start-up does not
    pay for a validation library's import to read this one file)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} is not an object")
    values: dict[str, Any] = {}
    for field in fields(cls):
        if field.name not in raw:
            if field.default is MISSING:
                raise ValueError(f"{where} has no {field.name!r}")
            continue
        value, kind = raw[field.name], str(field.type)
        if not _CHECKS[kind](value):
            raise ValueError(f"{where}.{field.name} is {type(value).__name__} {value!r:.60}, not {kind}")
        values[field.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


class PyodideLock:
    """Parsed lock file with name resolution helpers."""

    def __init__(self, info: LockInfo, packages: dict[str, LockEntry]) -> None:
        self.info = info
        self.packages: dict[str, LockEntry] = {normalize_name(k): v for k, v in packages.items()}

    @classmethod
    def from_path(cls, path: str | Path) -> PyodideLock:
        """Read and validate a lock file; errors name the path."""
        p = Path(path)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise LockError(f"Pyodide lock file not found: {p}") from exc
        except (OSError, ValueError) as exc:
            raise LockError(f"cannot read Pyodide lock file {p}: {exc}") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("packages"), dict):
            raise LockError(f"{p} is not a pyodide-lock.json (no 'packages' object)")
        try:
            info = _parse(LockInfo, raw.get("info") or {}, "info")
            packages = {k: _parse(LockEntry, v, f"packages.{k}") for k, v in raw["packages"].items()}
        except ValueError as exc:
            raise LockError(f"invalid entry in Pyodide lock file {p}: {exc}") from exc
        return cls(info, packages)

    def get(self, name: str) -> LockEntry | None:
        """Entry for a (non-normalised) name, or ``None``."""
        return self.packages.get(normalize_name(name))

    def resolve(self, names: Iterable[str]) -> list[LockEntry]:
        """Requested packages plus transitive ``depends``, dependencies first.

        Each package appears once. Raises :class:`UnknownPackageError` listing
        every unknown requested name (and any dependency the lock itself lacks)
        before anything is resolved, so no partial result is ever returned.
        """
        requested = list(names)
        unknown = [n for n in requested if normalize_name(n) not in self.packages]
        if unknown:
            imports = self.import_map()
            hints = {n: imports[n] for n in unknown if n in imports}
            # Names arrive PEP 503-normalised from the install tool ('PIL' as 'pil'): match import names so too.
            normalised = {normalize_name(k): v for k, v in imports.items()}
            hints.update(
                {
                    n: normalised[normalize_name(n)]
                    for n in unknown
                    if n not in hints and normalize_name(n) in normalised
                }
            )
            raise UnknownPackageError(unknown, self.info.version, hints)

        order: list[LockEntry] = []
        done: set[str] = set()
        missing: list[str] = []
        for name in requested:
            # Iterative post-order DFS: deep dependency chains cannot hit the
            # recursion limit, and cycles (tolerated by Pyodide) terminate.
            start = normalize_name(name)
            if start in done:
                continue
            in_progress: set[str] = {start}
            stack: list[tuple[str, list[str]]] = [(start, list(self.packages[start].depends))]
            while stack:
                key, pending = stack[-1]
                if pending:
                    dep = normalize_name(pending.pop(0))
                    if dep in done or dep in in_progress:
                        continue
                    if dep not in self.packages:
                        missing.append(f"{dep} (required by {key})")
                        continue
                    in_progress.add(dep)
                    stack.append((dep, list(self.packages[dep].depends)))
                else:
                    stack.pop()
                    in_progress.discard(key)
                    done.add(key)
                    order.append(self.packages[key])
        if missing:
            raise UnknownPackageError(missing, self.info.version)
        return order

    def import_map(self) -> dict[str, str]:
        """Top-level import name -> package key (``sklearn`` -> ``scikit-learn``).

        If two packages claim an import, the first in the lock wins; real
        Pyodide locks do not have such clashes.
        """
        mapping: dict[str, str] = {}
        for key, entry in self.packages.items():
            for imp in entry.imports:
                mapping.setdefault(imp, key)
        return mapping

    def packages_for_imports(self, import_names: Iterable[str]) -> list[str]:
        """Package keys providing the given imports, in first-seen order.

        Dotted names use their top-level module (``PIL.Image`` -> ``pillow``).
        Imports no package provides (stdlib, typos) are silently dropped: the
        caller only wants what can be loaded, and Python reports the rest.
        """
        mapping = self.import_map()
        result: list[str] = []
        for imp in import_names:
            pkg = mapping.get(imp.strip().split(".", 1)[0])
            if pkg is not None and pkg not in result:
                result.append(pkg)
        return result


def load_lock(path: str | Path) -> PyodideLock:
    """Shorthand for :meth:`PyodideLock.from_path`."""
    return PyodideLock.from_path(path)


_LOCK_RELATIVE = Path("node_modules") / "pyodide" / "pyodide-lock.json"


def find_lock_file(runtime_dir: Path | None) -> Path:
    """Locate ``node_modules/pyodide/pyodide-lock.json`` under a Node runtime dir.

    With ``runtime_dir=None`` this looks in the repository's ``node_runtime/``
    (a source checkout) and then the current directory. Raises
    :class:`LockError` naming every place it looked.
    """
    if runtime_dir is not None:
        candidates = [Path(runtime_dir)]
    else:
        repo_runtime = Path(__file__).resolve().parents[2] / "node_runtime"
        candidates = [repo_runtime, Path.cwd() / "node_runtime", Path.cwd()]
    tried: list[Path] = []
    for base in candidates:
        path = base / _LOCK_RELATIVE
        if path in tried:
            continue
        if path.is_file():
            return path
        tried.append(path)
    raise LockError(
        "pyodide-lock.json not found (install the Node runtime with npm, or pass --lock); "
        "looked in: " + ", ".join(str(t) for t in tried)
    )
