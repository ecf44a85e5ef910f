"""`mcp-pyodide run FILE.py | -c CODE | -`: run code once in the sandbox, like `python` but fenced in.

The same sandbox, options and policy as the server, so a script that works
here works for the model and the other way round. Output streams live: the
code's stdout to our stdout and its stderr to our stderr; then the value of a
final expression (its repr) on stdout and the saved figures and files on
stderr. Exit status: 0 ok, 1 the code raised (traceback on stderr) or timed
out, 2 usage error or the policy refused the run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, TextIO

from .. import _caches
from .._isolation import IsolationUnavailable
from ..errors import MCPPyodideError
from ..escaping import shown
from ..policy import PolicyEngine, PolicyError, default_policy, load_policy
from ..policy.admit import admit
from ..tool_names import ToolName

EXECUTE_TOOL = ToolName.EXECUTE
CLI_SESSION = "cli"
EXIT_OK, EXIT_RAISED, EXIT_REFUSED = 0, 1, 2


def add_parser(sub: Any, add_options: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run a Python file or snippet once in the sandbox and print what it printed",
        description="Run Python once in the Pyodide sandbox with the server's options and policy. "
        "Examples: `mcp-pyodide run script.py`, `mcp-pyodide run -c 'print(1 + 1)'`, "
        "`echo 'import sys; print(sys.version)' | mcp-pyodide run -`.",
    )
    run.add_argument("file", nargs="?", default=None, help="a .py file, or '-' to read the code from stdin")
    run.add_argument("-c", dest="code", default=None, metavar="CODE", help="the code to run, as a string")
    add_options(run)


def read_code(args: argparse.Namespace, stdin: TextIO) -> tuple[str, str]:
    """(code, where it came from); raises ValueError with a usage message."""
    if args.code is not None and args.file is not None:
        raise ValueError("give either FILE or -c CODE, not both")
    if args.code is not None:
        return str(args.code), "-c"
    if args.file is None:
        raise ValueError("nothing to run: give a FILE, '-' for stdin, or -c CODE")
    if args.file == "-":
        return stdin.read(), "<stdin>"
    path = Path(args.file).expanduser()
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None


def _ask(prompt: str) -> bool:
    """Ask on the terminal; anything but yes is no."""
    try:
        with open("/dev/tty", encoding="utf-8", errors="replace") as tty:  # not stdin: it may hold the code
            print(prompt + " [y/N] ", end="", file=sys.stderr, flush=True)
            return tty.readline().strip().lower() in ("y", "yes")
    except OSError:
        return False


def _admit(args: argparse.Namespace, code: str, timeout_ms: int) -> str | None:
    """Apply the policy as an execute-tool call; None when admitted, else the refusal to print."""
    policy = load_policy(args.policy) if args.policy else default_policy()
    engine = PolicyEngine(policy)

    async def ask(prompt: str) -> tuple[bool, str]:
        if sys.stderr.isatty() and _ask(prompt):
            return True, ""
        return False, "this run needs approval, and no one answered yes at a terminal"

    arguments = {"code": code, "timeout": timeout_ms}
    decision = asyncio.run(admit(engine, EXECUTE_TOOL, arguments, CLI_SESSION, ask))
    return None if decision.allowed else decision.message


def run(args: argparse.Namespace, runtime_config: Any) -> int:
    try:
        code, _origin = read_code(args, sys.stdin)
        config = runtime_config(args)
        refusal = _admit(args, code, config.timeout_ms)
    except PolicyError as exc:
        print(f"mcp-pyodide run: policy file {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ValueError as exc:
        print(f"mcp-pyodide run: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return EXIT_REFUSED
    try:
        return asyncio.run(_execute(code, config))
    except (MCPPyodideError, IsolationUnavailable) as exc:
        print(f"mcp-pyodide run: {exc}", file=sys.stderr)
        return EXIT_RAISED
    except KeyboardInterrupt:
        print("\nmcp-pyodide run: interrupted", file=sys.stderr)
        return 130


async def _execute(code: str, config: Any) -> int:
    from ..sandbox import Sandbox

    def echo(stream: str, text: str) -> None:
        out = sys.stderr if stream == "stderr" else sys.stdout
        out.write(text)
        out.flush()

    last_progress = ""

    def progress(done: int, total: int, message: str) -> None:
        nonlocal last_progress
        if message != last_progress and sys.stderr.isatty():
            last_progress = message
            print(f"mcp-pyodide: {message}", file=sys.stderr, flush=True)

    async with Sandbox(config=config) as sandbox:
        result = await sandbox.execute(code, on_output=echo, progress=progress)
    value = result.result if result.error is None else None
    _finish_streams(result, more_stdout=value is not None)
    if value is not None:
        print(value)
    for label, paths in (("figure", result.figures), ("file", result.files)):
        for path in paths:
            print(f"saved {label}: {shown(str(path))}", file=sys.stderr)  # a name cannot drive the terminal
    sys.stdout.flush()
    await _caches.finish_pending()  # after the output: only the first runs on a machine wait
    if result.error is not None:
        error = result.error
        text = error.traceback.rstrip() or f"{error.type}: {error.message}"
        if result.timed_out and error.message not in text:
            text = f"{text}\n{error.message}" if error.traceback else text
        print(text, file=sys.stderr)
        return EXIT_RAISED
    return EXIT_OK


def _finish_streams(result: Any, *, more_stdout: bool) -> None:
    """End a partial last line before we add our own lines after it; note cut output."""
    if more_stdout and result.stdout and not result.stdout.endswith("\n"):
        sys.stdout.write("\n")
    more_stderr = result.error is not None or result.figures or result.files or result.stdout_truncated_chars
    if (more_stderr or result.stderr_truncated_chars) and result.stderr and not result.stderr.endswith("\n"):
        sys.stderr.write("\n")
    for name, cut in (("stdout", result.stdout_truncated_chars), ("stderr", result.stderr_truncated_chars)):
        if cut:
            print(f"mcp-pyodide: {cut:,} more characters of {name} were cut (--max-output)", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
