"""Runs inside Pyodide: executes one cell of user code and reports the outcome as JSON.

The broker sends this file to the sandbox, which imports it as `mcp_guest_executor`.
It must only use the standard library and Pyodide's own modules, and it keeps
everything in one namespace object so user code does not see its helpers.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import io as _io
import json
import linecache
import os
import signal
import sys
import tokenize
import traceback
import types
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from .mcp_guest_figures import FigureSaver

CO_COROUTINE = 0x0080
MAX_REPR_CHARS = 100_000
MAX_ERROR_CHARS = 100_000
ONE_LINER_CHARS = 4096  # cells up to this size are tried as a lone expression first
KEEP_SOURCES = 20  # cells whose source stays in linecache for tracebacks (older ones are dropped)

# Bound once, at import: user code shares this interpreter and may replace the builtins and
# modules it can reach, but not these references. (A determined user can still patch this
# executor through `gc`; `pyodide_reset` always gives a clean one.)
_eval = builtins.eval
_compile = builtins.compile
_repr = builtins.repr
_isinstance = builtins.isinstance
_encode = json.JSONEncoder(ensure_ascii=False).encode
_ONLY_AST = ast.PyCF_ONLY_AST
_NOTHING = compile("", "<cell>", "exec", dont_inherit=True)  # the body of a cell that is one expression
_set_signal = signal.signal
_default_int_handler = signal.default_int_handler
_SIGINT = signal.SIGINT
_settrace = sys.settrace
_setprofile = sys.setprofile
_STDIO = (sys.stdin, sys.stdout, sys.stderr)


def _restore_runtime_state() -> None:
    """Undo what an earlier call may have done to the interpreter's plumbing."""
    _settrace(None)
    _setprofile(None)
    _set_signal(_SIGINT, _default_int_handler)
    global _STDIO
    streams = list(_STDIO)
    for index, name in enumerate(("stdin", "stdout", "stderr")):
        original = streams[index]
        if getattr(original, "closed", False) and index > 0:
            # Closing sys.stdout closes the Python object, not fd 1: open a new one on it.
            streams[index] = original = _io.TextIOWrapper(
                _io.FileIO(index, "w", closefd=False),
                encoding="utf-8",
                errors="backslashreplace",
                line_buffering=True,
                write_through=index == 2,
            )
        if getattr(sys, name, None) is not original:
            setattr(sys, name, original)
    _STDIO = (streams[0], streams[1], streams[2])


def _no_host_processes(*args: object, **kwargs: object) -> int:
    raise PermissionError("starting host processes is not allowed in the sandbox")


BETWEEN_CALLS = "guest code cannot run between calls (a callback outlived the call that scheduled it)"


def refuse_between_calls(frame: types.FrameType, event: str, arg: object) -> None:
    """The trace function the worker installs between calls: no Python frame may start.

    JavaScript can still try to call back into Python after a call ended (a Pyodide API
    finishing in the background); each such frame fails with this error before it runs.
    """
    raise RuntimeError(BETWEEN_CALLS)


class Guest:
    """The sandbox-side executor; one instance per interpreter."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        self.cell = 0
        self.hooks: list[Any] = []

    def configure(self, options: Any) -> None:
        """Called once per interpreter with the broker's settings (a dict converted from JS)."""
        opts = dict(options)
        # Without an output folder too: its import hook keeps matplotlib from rebuilding the font
        # cache (0.3-0.5 s) in every interpreter, and speeds up pyplot's import.
        output_dir = str(opts["outputDir"]) if opts.get("outputDir") else None
        saver: FigureSaver = _sibling("mcp_guest_figures").FigureSaver(output_dir)
        saver.install()
        self.hooks.append(saver)

    def execute(self, source: str) -> str | Coroutine[Any, Any, str]:
        """Run `source`; return JSON now, or a coroutine when the code awaits at top level."""
        self.cell += 1
        # Tracers, signal handlers and stream replacements left by an earlier call must not
        # make this one unstoppable or silent.
        _restore_runtime_state()
        if not _isinstance(self.namespace, dict):
            self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        for hook in self.hooks:
            try:
                hook.before_run()
            except BaseException as exc:  # noqa: BLE001
                print(f"[mcp-pyodide] pre-run hook failed: {exc!r}", file=sys.stderr)
        filename = f"<cell-{self.cell}>"
        try:
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            linecache.cache.pop(f"<cell-{self.cell - KEEP_SOURCES}>", None)  # bounded: cells are never freed
        except BaseException:  # noqa: BLE001 - only makes tracebacks prettier
            pass
        try:
            body, last = compile_cell(source, filename)
        except SyntaxError as exc:
            return self.report_error(exc, filename)
        if is_async(body) or (last is not None and is_async(last)):
            return self.finish_async(body, last, filename)
        try:
            _eval(body, self.namespace)
            value = _eval(last, self.namespace) if last is not None else None
        except BaseException as exc:  # noqa: BLE001 - user code may raise anything, SystemExit included
            _settrace(None)
            return self.report_error(exc, filename)
        _settrace(None)  # a tracer set by this cell traces this cell, not our reporting
        _setprofile(None)
        return self.report_value(value)

    async def finish_async(self, body: types.CodeType, last: types.CodeType | None, filename: str) -> str:
        """Run a cell that uses top-level `await`."""
        try:
            outcome = _eval(body, self.namespace)
            if is_async(body):
                await cast("Awaitable[Any]", outcome)
            value = _eval(last, self.namespace) if last is not None else None
            if last is not None and is_async(last):
                value = await cast("Awaitable[Any]", value)
        except BaseException as exc:  # noqa: BLE001
            _settrace(None)
            return self.report_error(exc, filename)
        _settrace(None)
        _setprofile(None)
        return self.report_value(value)

    def report_value(self, value: object) -> str:
        self.run_hooks()
        result = None
        if value is not None:
            self.namespace["_"] = value
            try:
                result = _repr(value)
            except BaseException as exc:  # noqa: BLE001
                result = f"<repr failed: {type(exc).__name__}: {exc}>"
            if len(result) > MAX_REPR_CHARS:
                cut = len(result) - MAX_REPR_CHARS
                result = result[:MAX_REPR_CHARS] + f"... [{cut} characters cut]"
        return _encode({"ok": True, "result": result, "extra": self.collect_extra()})

    def report_error(self, exc: BaseException, filename: str) -> str:
        self.run_hooks()
        return _encode(
            {
                "ok": False,
                "error": {
                    "type": type(exc).__name__,
                    "message": _bounded(safe_str(exc)),
                    "traceback": _bounded(format_user_traceback(exc, filename)),
                },
                "extra": self.collect_extra(),
            }
        )

    def run_hooks(self) -> None:
        """Give post-run hooks (figure saving) a chance; they must never fail the run."""
        for hook in self.hooks:
            try:
                hook.after_run()
            except BaseException as exc:  # noqa: BLE001
                print(f"[mcp-pyodide] post-run hook failed: {exc!r}", file=sys.stderr)

    def collect_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        for hook in self.hooks:
            try:
                extra.update(hook.report())
            except BaseException:  # noqa: BLE001
                pass
        return extra

    def flush_streams(self) -> None:
        """End of a run: a partial line still in stdout's buffer belongs to this run's output."""
        for stream in {id(s): s for s in (sys.stdout, sys.stderr, *_STDIO[1:])}.values():
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass


def _bounded(text: str) -> str:
    if len(text) <= MAX_ERROR_CHARS:
        return text
    half = MAX_ERROR_CHARS // 2
    return f"{text[:half]}\n... [{len(text) - MAX_ERROR_CHARS:,} characters cut] ...\n{text[-half:]}"


def is_async(code: types.CodeType) -> bool:
    return bool(code.co_flags & CO_COROUTINE)


def compile_cell(source: str, filename: str) -> tuple[types.CodeType, types.CodeType | None]:
    """Compile a cell into its body and, when it ends in an expression, that expression.

    The expression's value is the cell's value, as in a notebook; a trailing
    semicolon hides it, as in IPython.
    """
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    # One short unindented line that is one expression (`1+1`, `df.head()`) compiles as such: a
    # fifth of the parse-and-compile-twice below, and failing costs a few us on one line.
    if len(source) <= ONE_LINER_CHARS and not source[:1].isspace() and "\n" not in source.rstrip():
        try:
            return _NOTHING, _compile(source, filename, "eval", flags=flags, dont_inherit=True)
        except SyntaxError:
            pass
    tree = _compile(source, filename, "exec", flags=_ONLY_AST | flags, dont_inherit=True)
    last: types.CodeType | None = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not ends_with_semicolon(_after(source, tree.body[-1])):
        expr = ast.Expression(tree.body.pop().value)
        last = _compile(expr, filename, "eval", flags=flags, dont_inherit=True)
    body = _compile(tree, filename, "exec", flags=flags, dont_inherit=True)
    return body, last


_LAYOUT_TOKENS = frozenset(
    {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
)


def ends_with_semicolon(source: str) -> bool:
    """Whether the cell's last token is `;` (read by the tokenizer: `f(';#')` does not end with one)."""
    if ";" not in source:  # nothing to tokenize (the common case: about 10 us in WebAssembly)
        return False
    last: tokenize.TokenInfo | None = None
    try:
        for token in tokenize.generate_tokens(_io.StringIO(source).readline):
            if token.type not in _LAYOUT_TOKENS:
                last = token
    except (tokenize.TokenError, SyntaxError):
        return False
    return last is not None and last.type == tokenize.OP and last.string == ";"


def _after(source: str, node: ast.stmt) -> str:
    """The text after `node` (only `;`, comments and blanks can follow the last statement).

    Tokenizing just that keeps a big cell from being tokenized whole for one character.
    """
    if "\r" in source or node.end_lineno is None or node.end_col_offset is None:
        return source  # line numbers may count differently: read it all
    lines = source.split("\n")
    line = lines[node.end_lineno - 1]
    column = len(line.encode("utf-8")[: node.end_col_offset].decode("utf-8", "replace"))
    return "\n".join([line[column:], *lines[node.end_lineno :]])


def _sibling(name: str) -> Any:
    """Another guest module: top-level inside the sandbox, in `mcp_pyodide.guest` when tested."""
    if __package__:
        return importlib.import_module(f"{__package__}.{name}")
    return importlib.import_module(name)


def safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except BaseException:  # noqa: BLE001
        return f"<unprintable {type(exc).__name__}>"


def format_user_traceback(exc: BaseException, filename: str) -> str:
    """Format `exc` with the runtime's own frames removed, starting at the user's code."""
    if isinstance(exc, SyntaxError):
        return "".join(traceback.format_exception_only(type(exc), exc))
    tb = exc.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell-"):
        tb = tb.tb_next
    try:
        return "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException:  # noqa: BLE001
        return f"{type(exc).__name__}: {safe_str(exc)}\n"


GUEST = Guest()


def _integrity_table() -> tuple[tuple[Any, str, Any], ...]:
    """What this module's behaviour rests on, as (owner, name, original) triples.

    The worker restores these before every run, so ordinary monkeypatching by user code
    (class methods, module globals, a function's __code__) cannot forge or break later
    results. Code that pokes memory (ctypes) can still do anything inside the interpreter;
    `pyodide_reset` is the cure for that.
    """
    entries: list[tuple[Any, str, Any]] = []
    module_globals = globals()
    for name, value in list(module_globals.items()):
        if isinstance(value, types.FunctionType) and value.__module__ == __name__:
            entries.append((module_globals, name, value))
            entries.append((value, "__code__", value.__code__))
    for name, value in list(vars(Guest).items()):
        if isinstance(value, types.FunctionType):
            entries.append((Guest, name, value))
            entries.append((value, "__code__", value.__code__))
    for name in (
        "_eval",
        "_compile",
        "_repr",
        "_isinstance",
        "_encode",
        "_set_signal",
        "_settrace",
        "_setprofile",
        "_NOTHING",
    ):
        entries.append((module_globals, name, module_globals[name]))
    entries.append((GUEST, "__class__", Guest))
    return tuple(entries)


def _restore_integrity(table: tuple[tuple[Any, str, Any], ...]) -> None:
    for owner, name, original in table:
        if type(owner) is dict:
            if owner.get(name) is not original:
                owner[name] = original
        elif getattr(owner, name, None) is not original:
            setattr(owner, name, original)
    for name in [n for n in vars(GUEST) if n not in ("namespace", "cell", "hooks")]:
        delattr(GUEST, name)  # instance attributes shadowing the methods


INTEGRITY = _integrity_table()


def install() -> Guest:
    """Prepare the interpreter for user code and return its executor; the worker calls this once.

    Importing this module changes nothing outside it (so it can be tested in plain CPython);
    this is where the interpreter-wide changes happen. Host processes cannot start (the
    runtime refuses), but `os.system` and `os.popen` say so plainly instead of failing oddly.
    """
    os.system = _no_host_processes
    os.popen = _no_host_processes  # type: ignore[assignment]
    # stdout is line-buffered as in a terminal, not written through: `print` is one write per
    # line instead of two or more (a third of the time of 100,000 prints). stderr stays unbuffered.
    if isinstance(_STDIO[1], _io.TextIOWrapper):
        _STDIO[1].reconfigure(line_buffering=True, write_through=False)
    return GUEST
