"""Runs inside Pyodide: executes one cell of user code and reports the outcome as JSON.

The broker sends this file to the sandbox, which imports it as `mcp_guest_executor`.
It must only use the standard library and Pyodide's own modules, and it keeps
everything in one namespace object so user code does not see its helpers.
"""

from __future__ import annotations

import ast
import builtins
import json
import linecache
import signal
import sys
import traceback
import types
from collections.abc import Coroutine
from typing import Any

CO_COROUTINE = 0x0080
MAX_REPR_CHARS = 100_000


class Guest:
    """The sandbox-side executor; one instance per interpreter."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        self.cell = 0
        self.hooks: list[Any] = []

    def configure(self, options: Any) -> None:
        """Called once per interpreter with the broker's settings (a dict converted from JS)."""
        opts = dict(options)
        if opts.get("outputDir"):
            from mcp_guest_figures import FigureSaver

            saver = FigureSaver(str(opts["outputDir"]))
            saver.install()
            self.hooks.append(saver)

    def execute(self, source: str) -> str | Coroutine[Any, Any, str]:
        """Run `source`; return JSON now, or a coroutine when the code awaits at top level."""
        self.cell += 1
        # A handler left by an earlier call must not make this one unstoppable.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for hook in self.hooks:
            try:
                hook.before_run()
            except BaseException as exc:  # noqa: BLE001
                print(f"[mcp-pyodide] pre-run hook failed: {exc!r}", file=sys.stderr)
        filename = f"<cell-{self.cell}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        try:
            body, last = compile_cell(source, filename)
        except SyntaxError as exc:
            return self.report_error(exc, filename)
        if is_async(body) or (last is not None and is_async(last)):
            return self.finish_async(body, last, filename)
        try:
            eval(body, self.namespace)
            value = eval(last, self.namespace) if last is not None else None
        except BaseException as exc:  # noqa: BLE001 - user code may raise anything, SystemExit included
            return self.report_error(exc, filename)
        return self.report_value(value)

    async def finish_async(self, body: types.CodeType, last: types.CodeType | None, filename: str) -> str:
        """Run a cell that uses top-level `await`."""
        try:
            outcome = eval(body, self.namespace)
            if is_async(body):
                await outcome
            value = eval(last, self.namespace) if last is not None else None
            if last is not None and is_async(last):
                value = await value
        except BaseException as exc:  # noqa: BLE001
            return self.report_error(exc, filename)
        return self.report_value(value)

    def report_value(self, value: object) -> str:
        self.run_hooks()
        result = None
        if value is not None:
            self.namespace["_"] = value
            try:
                result = repr(value)
            except BaseException as exc:  # noqa: BLE001
                result = f"<repr failed: {type(exc).__name__}: {exc}>"
            if len(result) > MAX_REPR_CHARS:
                cut = len(result) - MAX_REPR_CHARS
                result = result[:MAX_REPR_CHARS] + f"... [{cut} characters cut]"
        return json.dumps({"ok": True, "result": result, "extra": self.collect_extra()})

    def report_error(self, exc: BaseException, filename: str) -> str:
        self.run_hooks()
        return json.dumps(
            {
                "ok": False,
                "error": {
                    "type": type(exc).__name__,
                    "message": safe_str(exc),
                    "traceback": format_user_traceback(exc, filename),
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
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass


def is_async(code: types.CodeType) -> bool:
    return bool(code.co_flags & CO_COROUTINE)


def compile_cell(source: str, filename: str) -> tuple[types.CodeType, types.CodeType | None]:
    """Compile a cell into its body and, when it ends in an expression, that expression.

    The expression's value is the cell's value, as in a notebook; a trailing
    semicolon hides it, as in IPython.
    """
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = ast.parse(source, filename, "exec")
    last: types.CodeType | None = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not ends_with_semicolon(source):
        expr = ast.Expression(tree.body.pop().value)
        last = compile(expr, filename, "eval", flags=flags, dont_inherit=True)
    body = compile(tree, filename, "exec", flags=flags, dont_inherit=True)
    return body, last


def ends_with_semicolon(source: str) -> bool:
    lines = [line for line in source.rstrip().splitlines() if line.strip()]
    if not lines:
        return False
    last = lines[-1].split("#", 1)[0].rstrip()
    return last.endswith(";")


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
