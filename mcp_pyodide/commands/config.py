"""`mcp-pyodide config claude|cursor|vscode`: print (or write) the client's server entry.

Each MCP client wants the same facts in a slightly different JSON shape. The
command uses the absolute path of the installed `mcp-pyodide` so the entry
works whatever PATH the client app starts with (Claude Desktop's is minimal),
or `uvx mcp-pyodide` when asked. Writing merges into the existing file: every
other server and key is kept, a timestamped backup is made first, and a file
that is not valid JSON is left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CLIENTS = ("claude", "cursor", "vscode")
DEFAULT_NAME = "pyodide"


class ConfigFileError(Exception):
    """The client's config file cannot be merged into safely; nothing was changed."""


def add_parser(sub: Any) -> None:
    """Register `config` on the main parser's subparsers."""
    config = sub.add_parser(
        "config",
        help="print or write the server entry for Claude Desktop, Cursor or VS Code",
        description="Print the JSON a client needs to start mcp-pyodide. Server options for the entry go after "
        "'--', e.g. `mcp-pyodide config claude -- --mount data=~/data:ro`.",
    )
    clients = config.add_subparsers(dest="client", required=True)
    for client, text in (
        ("claude", "Claude Desktop (claude_desktop_config.json)"),
        ("cursor", "Cursor (~/.cursor/mcp.json)"),
        ("vscode", "VS Code (.vscode/mcp.json; print only)"),
    ):
        p = clients.add_parser(client, help=text)
        p.add_argument("--name", default=DEFAULT_NAME, help=f"the server's key in the file (default {DEFAULT_NAME})")
        p.add_argument("--uvx", action="store_true", help="start the server with `uvx mcp-pyodide` (no install needed)")
        if client != "vscode":
            p.add_argument("--write", action="store_true", help="merge the entry into the client's config file")
            p.add_argument(
                "--config-file",
                type=Path,
                default=None,
                metavar="PATH",
                help="the config file to write (default: the client's usual place)",
            )


def split_server_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split at the first '--': our options before it, the server's options after it."""
    items = list(argv)
    if "--" in items:
        at = items.index("--")
        return items[:at], items[at + 1 :]
    return items, []


def server_command(*, uvx: bool, argv0: str | None = None) -> tuple[str, list[str]]:
    """(command, leading args) that start this server from a client app.

    Prefers the `mcp-pyodide` script of this very installation (beside the
    running interpreter), then one on PATH, then the script we were started as,
    then `python -m mcp_pyodide` with this interpreter. Paths are made absolute
    but symlinks are kept: resolving a virtualenv's python would step out of it.
    """
    if uvx:
        return "uvx", ["mcp-pyodide"]
    script = "mcp-pyodide.exe" if sys.platform == "win32" else "mcp-pyodide"
    beside = Path(sys.executable).parent / script
    if beside.is_file():
        return os.path.abspath(beside), []
    found = shutil.which("mcp-pyodide")
    if found:
        return os.path.abspath(found), []
    argv0 = argv0 if argv0 is not None else sys.argv[0]
    if argv0 and Path(argv0).name.startswith("mcp-pyodide") and Path(argv0).is_file():
        return os.path.abspath(argv0), []
    return os.path.abspath(sys.executable), ["-m", "mcp_pyodide"]


def entry_for(client: str, command: str, args: list[str]) -> dict[str, Any]:
    if client == "vscode":
        return {"type": "stdio", "command": command, "args": args}
    return {"command": command, "args": args}


def top_key(client: str) -> str:
    return "servers" if client == "vscode" else "mcpServers"


def snippet(client: str, name: str, command: str, args: list[str]) -> dict[str, Any]:
    return {top_key(client): {name: entry_for(client, command, args)}}


def default_config_file(client: str) -> Path:
    if client == "cursor":
        return Path.home() / ".cursor" / "mcp.json"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
    if sys.platform == "win32":
        appdata = os.environ.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
        return Path(appdata) / "Claude" / "claude_desktop_config.json"
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "Claude" / "claude_desktop_config.json"


def merge_into_file(path: Path, client: str, name: str, entry: dict[str, Any]) -> Path | None:
    """Add or replace our entry in `path`, keeping everything else; returns the backup made, if any.

    Raises ConfigFileError, leaving the file untouched, when it is not a JSON object.
    """
    data: dict[str, Any] = {}
    backup: Path | None = None
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if text.strip():
            try:
                loaded = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigFileError(
                    f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                    "it was not changed. Fix it by hand, or print the entry with the same command "
                    "without --write and paste it in."
                ) from None
            if not isinstance(loaded, dict):
                raise ConfigFileError(f"{path} does not hold a JSON object; it was not changed")
            data = loaded
        servers = data.get(top_key(client))
        if servers is not None and not isinstance(servers, dict):
            raise ConfigFileError(f"{path}: {top_key(client)!r} is not a JSON object; it was not changed")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = path.with_name(f"{path.name}.{stamp}.bak")
        n = 1
        while backup.exists():
            backup = path.with_name(f"{path.name}.{stamp}-{n}.bak")
            n += 1
        shutil.copy2(path, backup)
    servers = dict(data.get(top_key(client)) or {})
    servers[name] = entry
    data[top_key(client)] = servers
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(staging, path)  # never leave a half-written config behind
    return backup


def run(args: argparse.Namespace, server_args: list[str]) -> int:
    command, lead = server_command(uvx=args.uvx)
    full_args = [*lead, *server_args]
    client: str = args.client
    if not getattr(args, "write", False):
        print(json.dumps(snippet(client, args.name, command, full_args), indent=2))
        if client == "vscode":
            print("\n# Put this in .vscode/mcp.json in your workspace (or your user mcp.json).", file=sys.stderr)
        return 0
    path: Path = (args.config_file or default_config_file(client)).expanduser()
    try:
        backup = merge_into_file(path, client, args.name, entry_for(client, command, full_args))
    except ConfigFileError as exc:
        print(f"mcp-pyodide: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"mcp-pyodide: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"Added {args.name!r} to {path}" + (f" (backup: {backup})" if backup else ""))
    if client == "claude":
        print("Restart Claude Desktop to load it.")
    return 0
