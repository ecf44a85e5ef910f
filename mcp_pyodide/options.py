"""The serve, transport, sandbox and folder options, their environment-variable defaults and checks.

Shared by `serve`, `run`, `doctor` and `config` (which checks a client's options before writing them),
and turned into a `RuntimeConfig` here. Imports stay light: `--version` and the helpers build these too.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .config import (
    DEFAULT_GRACE_MS,
    DEFAULT_HOST,
    DEFAULT_MAX_CODE_BYTES,
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_OUTPUT_CHARS,
    DEFAULT_MAX_TEXT_CHARS,
    DEFAULT_MEMORY_LIMIT_MB,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT_MS,
    RuntimeConfig,
)
from .mounts import ENV_SEPARATOR, Mount, MountError, build_mounts, output_mount, split_env_mounts
from .netbroker import NetworkPolicy
from .policy import PolicyError
from .policy.engine import RESERVATION_TTL_S
from .tool_names import ToolName


def policy_problem(exc: PolicyError) -> str:
    """A policy error as users should read it: it says that the file is the policy."""
    return f"policy file {exc}"


def env_positive_int(name: str, default: int) -> int:
    """A whole number > 0 from the environment; a bad value is an error naming the variable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a whole number of milliseconds") from None
    if value <= 0:
        raise ValueError(f"{name}={text!r} must be greater than zero")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than zero")
    return value


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--timeout",
        type=_positive_int,
        default=None,
        help=f"default run time limit per call, in ms (default {DEFAULT_TIMEOUT_MS}; env MCP_PYODIDE_TIMEOUT)",
    )
    parser.add_argument(
        "--max-output",
        type=_positive_int,
        default=DEFAULT_MAX_OUTPUT_CHARS,
        metavar="CHARS",
        help=f"characters kept per stream per call (default {DEFAULT_MAX_OUTPUT_CHARS})",
    )
    parser.add_argument(
        "--max-text-output",
        type=_positive_int,
        default=DEFAULT_MAX_TEXT_CHARS,
        metavar="CHARS",
        help="characters of each stream also shown in a result's text; past that the text says how much more "
        f"the structured result holds, so big outputs are not sent twice (default {DEFAULT_MAX_TEXT_CHARS})",
    )
    parser.add_argument(
        "--max-code-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_CODE_BYTES,
        metavar="BYTES",
        help=f"largest code accepted per call (default {DEFAULT_MAX_CODE_BYTES})",
    )
    parser.add_argument(
        "--memory-limit",
        type=_positive_int,
        default=DEFAULT_MEMORY_LIMIT_MB,
        metavar="MIB",
        help=f"WebAssembly memory cap for the interpreter, in MiB (default {DEFAULT_MEMORY_LIMIT_MB})",
    )
    parser.add_argument(
        "--grace",
        type=_positive_int,
        default=DEFAULT_GRACE_MS,
        metavar="MS",
        help="how long an interrupted run may take to stop before the interpreter is replaced "
        f"(default {DEFAULT_GRACE_MS})",
    )
    parser.add_argument("--node", default=None, help="path to the node binary (env MCP_PYODIDE_NODE)")
    parser.add_argument(
        "--isolation",
        choices=["auto", "strict", "standard"],
        default=env("MCP_PYODIDE_ISOLATION", "auto"),
        help="auto: the strongest this machine offers; strict: refuse to start without it; "
        "standard: Node's permission model only (env MCP_PYODIDE_ISOLATION)",
    )
    parser.add_argument(
        "--package-source",
        default=env("MCP_PYODIDE_PACKAGE_SOURCE") or None,
        metavar="URL|FOLDER",
        help="where Pyodide package files come from (default: the Pyodide 0.27.7 CDN; env MCP_PYODIDE_PACKAGE_SOURCE)",
    )
    parser.add_argument(
        "--allow-network",
        default=env("MCP_PYODIDE_ALLOW_NETWORK") or None,
        metavar="HOST,...",
        help="hosts code may fetch from (pyfetch, micropip), e.g. 'pypi.org,files.pythonhosted.org' or "
        "'*.example.com'; requests are made by the server, each URL checked; default: none "
        "(env MCP_PYODIDE_ALLOW_NETWORK)",
    )
    parser.add_argument(
        "--no-inline-images",
        action="store_true",
        help="list saved figures by path and resource link only, without the image data in the result",
    )
    parser.add_argument(
        "--preload",
        default=env("MCP_PYODIDE_PRELOAD", ""),
        metavar="PKG,...",
        help="Pyodide packages to load in the background once the first call is answered (or 1 s "
        "after start-up without one), e.g. numpy,matplotlib (matplotlib is also imported, so the "
        "first figure is quick; env MCP_PYODIDE_PRELOAD)",
    )
    parser.add_argument(
        "--spare-interpreter",
        action="store_true",
        default=env("MCP_PYODIDE_SPARE_INTERPRETER", "") not in ("", "0"),
        help="keep a second interpreter ready in the background so pyodide_reset (and recovery after a "
        "timeout or crash) is a swap, not a boot; costs one interpreter's memory (env MCP_PYODIDE_SPARE_INTERPRETER)",
    )
    parser.add_argument(
        "--notebook",
        default=env("MCP_PYODIDE_NOTEBOOK") or None,
        metavar="NAME",
        help="keep the session as a Jupyter notebook NAME in the output folder, rewritten after every call "
        "(env MCP_PYODIDE_NOTEBOOK; stdio only)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="package cache folder (env PYODIDE_CACHE_DIR; default: a per-user cache folder)",
    )


def runtime_config(args: argparse.Namespace) -> RuntimeConfig:
    mounts, output_dir = mount_config(args)
    timeout = args.timeout if args.timeout is not None else env_positive_int("MCP_PYODIDE_TIMEOUT", DEFAULT_TIMEOUT_MS)
    return RuntimeConfig(
        timeout_ms=timeout,
        max_output_chars=args.max_output,
        max_text_chars=args.max_text_output,
        max_code_bytes=args.max_code_bytes,
        memory_limit_mb=args.memory_limit,
        grace_ms=args.grace,
        node=args.node,
        package_cache_dir=args.cache_dir,
        package_source=args.package_source,
        inline_images=not args.no_inline_images,
        isolation=args.isolation,
        network=NetworkPolicy.parse(args.allow_network),
        mounts=mounts,
        output_dir=output_dir,
        preload=tuple(name.strip() for name in args.preload.split(",") if name.strip()),
        spare_interpreter=args.spare_interpreter,
        notebook=_notebook_name(args.notebook),
    )


def _notebook_name(name: str | None) -> str | None:
    if name is None:
        return None
    from .notebook import NotebookError, check_name

    try:
        return str(check_name(name))
    except NotebookError as exc:
        raise ValueError(f"--notebook: {exc}") from None


def add_mount_options(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="NAME=PATH[:ro]",
        help="show a host folder to Python at /mnt/NAME; ':ro' makes it read-only; repeatable "
        f"(env MCP_PYODIDE_MOUNTS, specs separated by '{ENV_SEPARATOR}'; PYODIDE_DATA_DIR mounts as 'data')",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=env("MCP_PYODIDE_OUTPUT_DIR") or None,
        metavar="PATH",
        help="read-write folder at /mnt/output for figures and files (env MCP_PYODIDE_OUTPUT_DIR; "
        "default: a per-user data folder)",
    )
    parser.add_argument(
        "--max-image-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_IMAGE_BYTES,
        metavar="BYTES",
        help=f"largest image {ToolName.READ_IMAGE} returns (default {DEFAULT_MAX_IMAGE_BYTES})",
    )
    parser.add_argument(
        "--no-resources",
        action="store_true",
        help="do not offer the mounted files as MCP resources",
    )


def mount_config(args: argparse.Namespace) -> tuple[tuple[Mount, ...], Path | None]:
    """Mounts from --mount, MCP_PYODIDE_MOUNTS and PYODIDE_DATA_DIR, and the output folder (created).

    Errors are `MountError`s naming the option or variable to fix.
    """
    if not hasattr(args, "mount"):
        return (), None
    specs = [("--mount", spec) for spec in args.mount]
    specs += [("MCP_PYODIDE_MOUNTS", spec) for spec in split_env_mounts(os.environ.get("MCP_PYODIDE_MOUNTS", ""))]
    mounts: tuple[Mount, ...] = build_mounts(specs, legacy_data_dir=os.environ.get("PYODIDE_DATA_DIR") or None)
    from ._paths import data_root

    output_dir = args.output_dir if args.output_dir is not None else data_root() / "output"
    try:
        output = output_mount(output_dir)
    except MountError as exc:
        raise MountError(f"--output-dir {str(output_dir)!r}: {exc}") from None
    return mounts, output.host_path


def add_transport_options(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--transport",
        choices=["stdio", "streamable-http"],
        default=env("MCP_PYODIDE_TRANSPORT", "stdio"),
        help="stdio (default): one client that started us; streamable-http: serve many clients over HTTP, "
        "each MCP session with its own interpreter (env MCP_PYODIDE_TRANSPORT)",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"HTTP: address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"HTTP: port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--max-sessions",
        type=_positive_int,
        default=4,
        metavar="N",
        help="interpreters kept at once for session handles (HTTP: one per MCP session; stdio: beside the "
        'default one, for `"session": "new"`); the least recently used idle one makes room (default 4)',
    )
    parser.add_argument(
        "--idle-timeout",
        type=_positive_int,
        default=900,
        metavar="SECONDS",
        help="end a session handle and its interpreter after this long without a call (HTTP: also the MCP "
        "session; stdio: not the default interpreter) (default 900)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="HTTP: allow a --host that is not loopback without authentication: anyone who can reach "
        "the port can run code in the sandbox (not needed with --auth-tokens or --oauth-issuer).",
    )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 65535")
    return value


def add_policy_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "--policy",
        type=Path,
        default=os.environ.get("MCP_PYODIDE_POLICY") or None,
        help=f"{help_text} (env MCP_PYODIDE_POLICY)",
    )


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """What `mcp-pyodide run` shares with the server: the sandbox, its folders and the policy."""
    add_runtime_options(parser)
    add_mount_options(parser)
    add_policy_option(parser, f"policy.json the run must pass, as a {ToolName.EXECUTE} call")


EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def loop_options(choice: str) -> dict[str, bool]:
    """anyio's asyncio options for `--event-loop`: uvloop takes about 0.1 ms off every warm call."""
    if choice not in EVENT_LOOPS:  # argparse checks a choice on the command line, not one from the environment
        raise ValueError(f"--event-loop {choice!r} (or MCP_PYODIDE_EVENT_LOOP): use auto, uvloop or asyncio")
    if choice == "asyncio":
        return {"use_uvloop": False}
    from importlib.util import find_spec

    if find_spec("uvloop") is None:  # not imported here: anyio does, after Node's probe has begun
        if choice == "uvloop":
            raise ValueError("--event-loop uvloop: uvloop is not installed (pip install uvloop)")
        return {"use_uvloop": False}
    return {"use_uvloop": True}


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    add_runtime_options(parser)
    add_mount_options(parser)
    add_policy_option(parser, "policy.json to enforce on every tool call (default: the built-in policy)")
    parser.add_argument("--audit-log", type=Path, default=None, help="append one JSON line per policy decision")
    parser.add_argument(
        "--approval-timeout",
        type=_positive_int,
        default=int(os.environ.get("MCP_PYODIDE_APPROVAL_TIMEOUT") or RESERVATION_TTL_S),
        metavar="SECONDS",
        help="how long a call needing approval waits for the user's answer (2026-07-28: for the client's retry) "
        f"before it is refused and its quota given back (default {RESERVATION_TTL_S:.0f}; "
        "env MCP_PYODIDE_APPROVAL_TIMEOUT)",
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=os.environ.get("MCP_PYODIDE_EVENT_LOOP", "auto"),
        help="the server's event loop: uvloop (faster per call), asyncio (the standard library's), or auto: "
        "uvloop where it is installed (default auto; env MCP_PYODIDE_EVENT_LOOP)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("MCP_PYODIDE_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="stderr log level (default info)",
    )
