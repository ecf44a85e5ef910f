"""The `mcp-pyodide` command: serve MCP by default, plus a few helper subcommands.

This module builds the parser and dispatches; the options live in `options.py`, serving in
`commands/serve.py`, each helper in `commands/`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from . import __version__, _startup_gc
from .commands.serve import session_provider
from .errors import SetupError
from .options import (
    add_mount_options,
    add_run_options,
    add_runtime_options,
    add_serve_options,
    add_transport_options,
    env_positive_int,
    mount_config,
    policy_problem,
    runtime_config,
)
from .policy import DEFAULT_POLICY_JSON, PolicyError, explain, load_policy
from .tool_names import POLICY_NAMES

__all__ = [
    "KNOWN_TOOLS",
    "SUBCOMMANDS",
    "OneLineParser",
    "add_mount_options",
    "add_run_options",
    "add_runtime_options",
    "add_serve_options",
    "add_transport_options",
    "build_parser",
    "env_positive_int",
    "main",
    "mount_config",
    "policy_problem",
    "runtime_config",
    "runtime_lock_path",
    "session_provider",
]

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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    OneLineParser.implied_serve = not argv or argv[0] not in (*SUBCOMMANDS, "-h", "--help", "--version")
    if OneLineParser.implied_serve:
        argv = ["serve", *argv]
    if argv[0] != "serve":
        _startup_gc.resume()  # only serve's start is worth it (serve resumes it once the SDK is in)
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
    from .commands import serve

    return serve.run(args)


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
