"""`mcp-pyodide serve` (also what runs with no subcommand): check the set-up, then serve MCP over stdio or HTTP."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING

import anyio

from .. import __version__, _startup_gc
from ..config import RuntimeConfig
from ..errors import SetupError
from ..options import loop_options, policy_problem, runtime_config
from ..policy import PolicyError, load_policy

if TYPE_CHECKING:
    from concurrent.futures import Future
    from types import ModuleType

    from .._isolation import Isolation
    from .._node import NodeBinary
    from .._prewarm import Probe
    from ..policy import Policy
    from ..sandbox import Sandbox
    from ..server.auth import HttpAuth
    from ..server.sessions import SessionSandboxes


def session_provider(
    args: argparse.Namespace, config: RuntimeConfig, default: Sandbox | None = None
) -> SessionSandboxes:
    """Interpreters by session, bounded by --max-sessions and --idle-timeout on either transport (stdio also
    keeps its one default interpreter: `default` when the caller already started it)."""
    from ..sandbox import Sandbox
    from ..server.sessions import SessionSandboxes

    if default is None and args.transport != "streamable-http":
        default = Sandbox(config=config)
    return SessionSandboxes(
        default.config if default is not None else config,
        max_sessions=args.max_sessions,
        idle_timeout_s=float(args.idle_timeout),
        default=default,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until the client goes; a bad option or a missing runtime is one line on stderr and exit 2 or 1."""
    from . import scale

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = runtime_config(args)
        policy = load_policy(args.policy) if args.policy else None
        auth = scale.http_auth(args)
        loop = loop_options(args.event_loop)
    except PolicyError as exc:
        print(f"mcp-pyodide: {policy_problem(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"mcp-pyodide: {exc}", file=sys.stderr)
        return 2
    from .. import _prewarm

    probe = _prewarm.begin(config)  # Node, isolation and runtime files, found while the server imports
    try:
        code = anyio.run(_serve, args, config, policy, auth, probe, backend_options=loop)
    except KeyboardInterrupt:
        code = 0
    except asyncio.CancelledError:
        code = 0
    if code:
        return code
    # The runtime is closed by now. Skip the interpreter's slow teardown of hundreds of modules
    # (and a stdin reader thread that may still be blocked): clients wait on our exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _import_server() -> ModuleType:
    import mcp_pyodide.server

    return mcp_pyodide.server


async def _serve(
    args: argparse.Namespace, config: RuntimeConfig, policy: Policy | None, auth: HttpAuth | None, probe: Future[Probe]
) -> int:
    """Everything after the options: the MCP SDK imports in a thread while Node already boots (stdio)."""
    from dataclasses import replace

    from .._isolation import IsolationUnavailable
    from ..sandbox import Sandbox  # before the thread starts: both need it, one imports it

    # The MCP SDK (about half a second of imports, holding the GIL) loads in a thread from now
    # on; for stdio's one interpreter Node boots on the other core meanwhile, not after it.
    importing = asyncio.ensure_future(asyncio.to_thread(_import_server))
    # Fail fast on a missing Node or isolation: the client shows our stderr, and a server
    # without its runtime helps nobody.
    try:
        found = await asyncio.wrap_future(probe)  # a wheel carries the runtime; a checkout installs it once
    except (SetupError, IsolationUnavailable) as exc:
        print(f"mcp-pyodide: {exc}", file=sys.stderr)
        await importing
        return 1
    node, isolation = found.node, found.isolation
    config = replace(config, node=node.path)
    default: Sandbox | None = None
    if args.transport != "streamable-http" and args.backend != "ray":
        default = Sandbox(config=config)
        default.start_soon()
    try:
        server = await importing
        _startup_gc.resume()
        code = await _serve_with(server, args, config, policy, auth, default, node, isolation)
    finally:
        if default is not None:
            with anyio.CancelScope(shield=True):
                await default.close()
    return code


async def _serve_with(
    server: ModuleType,
    args: argparse.Namespace,
    config: RuntimeConfig,
    policy: Policy | None,
    auth: HttpAuth | None,
    default: Sandbox | None,
    node: NodeBinary,
    isolation: Isolation,
) -> int:
    from . import scale

    http = args.transport == "streamable-http"
    if http and config.notebook is not None:
        print(
            "mcp-pyodide: --notebook works with stdio only (each HTTP session has its own interpreter); "
            "over HTTP, use the pyodide_export-notebook tool",
            file=sys.stderr,
        )
        return 2
    if http:
        from ..server.http import is_loopback

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
        if args.backend == "ray":
            provider = scale.ray_provider(args, config)
        else:
            provider = session_provider(args, config, default)
    except ValueError as exc:
        print(f"mcp-pyodide: {exc}", file=sys.stderr)
        return 2
    state = server.make_state(
        config,
        policy=policy,
        audit_log=args.audit_log,
        max_image_bytes=args.max_image_bytes,
        resources=not args.no_resources,
        provider=provider,
        approval_timeout_s=float(args.approval_timeout),
    )
    try:
        scale.apply_state(state, args.state, scale.request_state_keys(args.request_state_keys))
    except ValueError as exc:
        print(f"mcp-pyodide: {exc}", file=sys.stderr)
        return 2
    where = f"Streamable HTTP at http://{args.host}:{args.port}/mcp" if http else "stdio"
    logging.getLogger("mcp_pyodide.server").info(
        "mcp-pyodide %s serving on %s; event loop %s; Node %s at %s; isolation %s; policy: %s",
        __version__,
        where,
        type(asyncio.get_running_loop()).__module__.split(".")[0],
        node.version_text,
        node.path,
        isolation.describe(),
        args.policy or "built-in default",
    )
    if http:
        from ..server.http import serve_http

        await serve_http(
            state,
            host=args.host,
            port=args.port,
            idle_timeout_s=float(args.idle_timeout),
            log_level=args.log_level,
            auth=auth,
        )
    else:
        await server.serve_stdio(state)
    return 0
