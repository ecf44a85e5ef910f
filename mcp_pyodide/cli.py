"""The `mcp-pyodide` command: serve MCP by default, plus a few helper subcommands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import anyio

from . import __version__
from .config import (
    DEFAULT_GRACE_MS,
    DEFAULT_MAX_CODE_BYTES,
    DEFAULT_MAX_OUTPUT_CHARS,
    DEFAULT_MEMORY_LIMIT_MB,
    DEFAULT_TIMEOUT_MS,
    RuntimeConfig,
)
from .errors import SetupError
from .mounts import ENV_SEPARATOR, Mount, MountError, build_mounts, output_mount, split_env_mounts
from .netbroker import NetworkPolicy
from .policy import DEFAULT_POLICY_JSON, PolicyError, explain, load_policy
from .tool_names import POLICY_NAMES, ToolName

if TYPE_CHECKING:
    from .server.sessions import SessionSandboxes

SUBCOMMANDS = ("serve", "policy", "fetch-packages", "install-runtime", "config", "doctor", "run", "token")
KNOWN_TOOLS = POLICY_NAMES


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line naming the option and the rule, not a usage block.

    With no subcommand typed, `serve` is implied; its errors must not name it.
    """

    implied_serve = False

    def error(self, message: str) -> NoReturn:
        prog = "mcp-pyodide" if self.implied_serve and self.prog.endswith(" serve") else self.prog
        help_for = "mcp-pyodide serve" if prog == "mcp-pyodide" and self.implied_serve else prog
        self.exit(2, f"{prog}: {message} (options: {help_for} --help)\n")


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


def policy_problem(exc: PolicyError) -> str:
    """A policy error as users should read it: it says that the file is the policy."""
    return f"policy file {exc}"


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
        help="Pyodide packages to load in the background after start-up, e.g. numpy,matplotlib "
        "(matplotlib is also imported, so the first figure is quick; env MCP_PYODIDE_PRELOAD)",
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
    from .server.files import MAX_IMAGE_BYTES

    parser.add_argument(
        "--max-image-bytes",
        type=_positive_int,
        default=MAX_IMAGE_BYTES,
        metavar="BYTES",
        help=f"largest image {ToolName.READ_IMAGE} returns (default {MAX_IMAGE_BYTES})",
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


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="mcp-pyodide",
        description="An MCP server that runs Python in a Pyodide sandbox. With no subcommand it serves MCP over stdio.",
    )
    parser.add_argument("--version", action="version", version=f"mcp-pyodide {__version__}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="serve MCP over stdio (the default) or Streamable HTTP")
    add_serve_options(serve)
    add_transport_options(serve)

    from .commands import config as config_command
    from .commands import doctor as doctor_command
    from .commands import run as run_command
    from .commands import scale

    scale.add_options(serve)
    scale.add_token_parser(sub)

    config_command.add_parser(sub)
    doctor_command.add_parser(sub, add_serve_options)
    run_command.add_parser(sub, add_run_options)

    policy = sub.add_parser("policy", help="inspect policy files")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    policy_sub.add_parser("show-default", help="print the built-in default policy")
    check = policy_sub.add_parser("check", help="validate a policy file and explain what it allows")
    check.add_argument("file", type=Path)

    fetch = sub.add_parser("fetch-packages", help="fill the package cache ahead of time", add_help=False)
    fetch.add_argument("rest", nargs=argparse.REMAINDER)

    install = sub.add_parser("install-runtime", help="install and verify the Node-side runtime now")
    install.add_argument("--node", default=None)
    return parser


def session_provider(args: argparse.Namespace, config: RuntimeConfig) -> SessionSandboxes:
    """Interpreters by session, bounded by --max-sessions and --idle-timeout on either transport (stdio also
    keeps its one default interpreter)."""
    from .sandbox import Sandbox
    from .server.sessions import SessionSandboxes

    default = None if args.transport == "streamable-http" else Sandbox(config=config)
    return SessionSandboxes(
        default.config if default is not None else config,
        max_sessions=args.max_sessions,
        idle_timeout_s=float(args.idle_timeout),
        default=default,
    )


def add_transport_options(parser: argparse.ArgumentParser) -> None:
    from .server.http import DEFAULT_HOST, DEFAULT_PORT

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


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """What `mcp-pyodide run` shares with the server: the sandbox, its folders and the policy."""
    add_runtime_options(parser)
    add_mount_options(parser)
    parser.add_argument(
        "--policy",
        type=Path,
        default=os.environ.get("MCP_PYODIDE_POLICY") or None,
        help=f"policy.json the run must pass, as a {ToolName.EXECUTE} call (env MCP_PYODIDE_POLICY)",
    )


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    add_runtime_options(parser)
    add_mount_options(parser)
    parser.add_argument(
        "--policy",
        type=Path,
        default=os.environ.get("MCP_PYODIDE_POLICY") or None,
        help="policy.json to enforce on every tool call (env MCP_PYODIDE_POLICY; default: the built-in policy)",
    )
    parser.add_argument("--audit-log", type=Path, default=None, help="append one JSON line per policy decision")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("MCP_PYODIDE_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="stderr log level (default info)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    OneLineParser.implied_serve = not argv or argv[0] not in (*SUBCOMMANDS, "-h", "--help", "--version")
    if OneLineParser.implied_serve:
        argv = ["serve", *argv]
    if argv[0] == "config":
        from .commands import config as config_command

        ours, server_args = config_command.split_server_args(argv)
        return config_command.run(build_parser().parse_args(ours), server_args)
    if argv and argv[0] == "fetch-packages":
        from .packages.cli import fetch_packages_main

        rest = argv[1:]
        if "--lock" not in rest and not {"-h", "--help"} & set(rest):
            try:
                rest += ["--lock", runtime_lock_path()]
            except SetupError as exc:
                print(f"mcp-pyodide: {exc}", file=sys.stderr)
                return 1
        return fetch_packages_main(rest)
    args = build_parser().parse_args(argv)
    if args.command == "policy":
        return _policy(args)
    if args.command == "install-runtime":
        return _install_runtime(args)
    if args.command == "token":
        from .commands import scale

        return scale.run_token(args)
    if args.command == "doctor":
        from .commands import doctor

        return doctor.run(args, runtime_config, mount_config)
    if args.command == "run":
        from .commands import run

        return run.run(args, runtime_config)
    return _serve(args)


def _policy(args: argparse.Namespace) -> int:
    if args.policy_command == "show-default":
        print(DEFAULT_POLICY_JSON)
        return 0
    try:
        policy = load_policy(args.file)
    except PolicyError as exc:
        print(f"invalid {policy_problem(exc)}", file=sys.stderr)
        return 1
    print(f"{args.file}: valid\n")
    print(explain(policy, KNOWN_TOOLS))
    return 0


def runtime_lock_path() -> str:
    """The installed runtime's pyodide-lock.json (installs the runtime first if needed)."""
    from ._node import find_node
    from ._runtime_files import ensure_runtime

    return str(ensure_runtime(find_node()).lock_file)


def _install_runtime(args: argparse.Namespace) -> int:
    from ._node import find_node
    from ._runtime_files import ensure_runtime

    try:
        node = find_node(args.node)
        files = ensure_runtime(node)
    except SetupError as exc:
        print(f"mcp-pyodide: {exc}", file=sys.stderr)
        return 1
    print(f"Node {node.version_text} at {node.path}; Pyodide runtime at {files.pyodide_dir}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .commands import scale

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = runtime_config(args)
        policy = load_policy(args.policy) if args.policy else None
        auth = scale.http_auth(args)
    except PolicyError as exc:
        print(f"mcp-pyodide: {policy_problem(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"mcp-pyodide: {exc}", file=sys.stderr)
        return 2
    # Fail fast on a missing Node or isolation: the client shows our stderr, and a server
    # without its runtime helps nobody.
    from dataclasses import replace

    from . import _prewarm
    from ._isolation import IsolationUnavailable

    probe = _prewarm.begin(config)  # Node, isolation and runtime files, found while the server imports
    from .server import make_state, serve_stdio

    try:
        found = probe.result()  # a wheel carries the runtime; a checkout installs it once (in the probe)
        node, isolation = found.node, found.isolation
    except (SetupError, IsolationUnavailable) as exc:
        print(f"mcp-pyodide: {exc}", file=sys.stderr)
        return 1
    config = replace(config, node=node.path)
    http = args.transport == "streamable-http"
    if http and config.notebook is not None:
        print(
            "mcp-pyodide: --notebook works with stdio only (each HTTP session has its own interpreter); "
            "over HTTP, use the pyodide_export-notebook tool",
            file=sys.stderr,
        )
        return 2
    if http:
        from .server.http import is_loopback

        if not is_loopback(args.host) and auth is None:
            if not args.allow_remote:
                print(
                    f"mcp-pyodide: refusing to listen on {args.host}, which is not a loopback address: the HTTP "
                    "transport has no authentication, so anyone who can reach it can run code. Use --host 127.0.0.1, "
                    "or add --allow-remote if a proxy in front of it authenticates clients.",
                    file=sys.stderr,
                )
                return 2
            logging.getLogger("mcp_pyodide.server").warning(
                "listening on %s with no authentication: anyone who can reach port %d can run code in the sandbox",
                args.host,
                args.port,
            )
    try:
        provider = scale.ray_provider(args, config) if args.backend == "ray" else session_provider(args, config)
    except ValueError as exc:
        print(f"mcp-pyodide: {exc}", file=sys.stderr)
        return 2
    state = make_state(
        config,
        policy=policy,
        audit_log=args.audit_log,
        max_image_bytes=args.max_image_bytes,
        resources=not args.no_resources,
        provider=provider,
    )
    try:
        scale.apply_state(state, args.state)
    except ValueError as exc:
        print(f"mcp-pyodide: {exc}", file=sys.stderr)
        return 2
    where = f"Streamable HTTP at http://{args.host}:{args.port}/mcp" if http else "stdio"
    logging.getLogger("mcp_pyodide.server").info(
        "mcp-pyodide %s serving on %s; Node %s at %s; isolation %s; policy: %s",
        __version__,
        where,
        node.version_text,
        node.path,
        isolation.describe(),
        args.policy or "built-in default",
    )
    try:
        if http:
            from .server.http import serve_http

            serve = partial(
                serve_http,
                state,
                host=args.host,
                port=args.port,
                idle_timeout_s=float(args.idle_timeout),
                log_level=args.log_level,
                auth=auth,
            )
            anyio.run(serve)
        else:
            anyio.run(serve_stdio, state)
    except KeyboardInterrupt:
        pass
    except asyncio.CancelledError:
        pass
    # The runtime is closed by now. Skip the interpreter's slow teardown of hundreds of modules
    # (and a stdin reader thread that may still be blocked): clients wait on our exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
