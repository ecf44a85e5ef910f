"""`mcp-pyodide config claude|cursor|vscode`: print (or write) the client's server entry.

Each MCP client wants the same facts in a slightly different JSON shape. The
command uses the absolute path of the installed `mcp-pyodide` so the entry
works whatever PATH the client app starts with (Claude Desktop's is minimal),
or `uvx --from SOURCE mcp-pyodide` when asked. The options for the server are
checked first: an entry that would start a dead server is refused. Writing merges into the existing file: every
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
from typing import Any, NoReturn

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
        p.add_argument(
            "--uvx",
            action="store_true",
            help="start the server with `uvx --from SOURCE mcp-pyodide`, SOURCE being where this installation "
            "came from (a checkout, a wheel, a git URL); plain `uvx mcp-pyodide` once it is on PyPI",
        )
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
        source = install_source()
        return "uvx", (["--from", source, "mcp-pyodide"] if source != PACKAGE else [PACKAGE])
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


PACKAGE = "mcp-pyodide"


def install_source() -> str:
    """What `uvx --from` needs to get this very installation: a checkout, a wheel, a git URL.

    The package is not on PyPI yet, so `uvx mcp-pyodide` alone only works once it is
    published; until then an entry must name where the code came from. Returns PACKAGE
    when it was installed from an index.
    """
    package_dir = Path(__file__).resolve().parent.parent
    checkout = package_dir.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "node_runtime" / "host.mjs").is_file():
        return str(checkout)
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        text = distribution(PACKAGE).read_text("direct_url.json")
    except PackageNotFoundError:
        return PACKAGE
    if not text:
        return PACKAGE
    try:
        origin = json.loads(text)
    except json.JSONDecodeError:
        return PACKAGE
    url = str(origin.get("url", ""))
    vcs = origin.get("vcs_info")
    if isinstance(vcs, dict) and vcs.get("vcs") == "git":
        commit = vcs.get("commit_id")
        return f"git+{url}" + (f"@{commit}" if commit else "")
    if url.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(url).path)
    return url or PACKAGE


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


PATH_OPTIONS = ("--output-dir", "--policy", "--audit-log", "--cache-dir", "--node")


def check_server_args(server_args: list[str]) -> str | None:
    """Why the server would not start with these options, or None.

    The client starts the server later, from a folder of its choosing and with no terminal
    to show an error: so the options must parse, the mounts, the output folder and the
    policy must be usable now, and every path must be absolute (or start with ~).
    """
    from ..cli import OneLineParser, add_serve_options, add_transport_options, policy_problem, runtime_config
    from ..mounts import MountError
    from ..policy import PolicyError, load_policy

    class Refuse(Exception):
        pass

    class Checking(OneLineParser):
        def error(self, message: str) -> NoReturn:
            raise Refuse(message)

    parser = Checking(prog="mcp-pyodide", add_help=False)
    add_serve_options(parser)
    add_transport_options(parser)
    try:
        parsed = parser.parse_args(server_args)
    except Refuse as exc:
        return f"the server options do not parse: {exc}"
    relative = _relative_paths(parsed)
    if relative:
        return (
            f"{', '.join(relative)}: use an absolute path (or one starting with ~); "
            "the client starts the server from a folder of its own"
        )
    try:
        runtime_config(parsed)
        if parsed.policy is not None:
            load_policy(Path(parsed.policy).expanduser())
    except PolicyError as exc:
        return policy_problem(exc)
    except (MountError, ValueError) as exc:
        return str(exc)
    if parsed.node is not None and not Path(parsed.node).expanduser().is_file():
        return f"--node {parsed.node}: no such file"
    return None


def _relative_paths(parsed: argparse.Namespace) -> list[str]:
    """The path options (and mount paths) that are neither absolute nor start with ~."""
    found: list[tuple[str, str, str]] = []
    for option in PATH_OPTIONS:
        value = getattr(parsed, option[2:].replace("-", "_"))
        if value is not None:
            found.append((option, str(value), str(value)))
    for spec in parsed.mount:
        found.append(("--mount", spec, _mount_path(spec)))
    return [
        f"{option} {shown}" for option, shown, path in found if not (path.startswith("~") or Path(path).is_absolute())
    ]


def _mount_path(spec: str) -> str:
    _, _, path = spec.partition("=")
    for flag in (":ro", ":rw"):
        if path.endswith(flag):
            return path[: -len(flag)]
    return path


def run(args: argparse.Namespace, server_args: list[str]) -> int:
    problem = check_server_args(server_args)
    if problem is not None:
        print(f"mcp-pyodide config: refused, the server would not start: {problem}", file=sys.stderr)
        return 2
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
