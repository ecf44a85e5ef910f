"""`mcp-pyodide serve` (also what runs with no subcommand): check the set-up, then serve MCP over stdio or HTTP."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from functools import partial
from typing import TYPE_CHECKING

import anyio

from .. import __version__
from ..config import RuntimeConfig
from ..errors import SetupError
from ..options import policy_problem, runtime_config
from ..policy import PolicyError, load_policy

if TYPE_CHECKING:
    from ..server.sessions import SessionSandboxes


def session_provider(args: argparse.Namespace, config: RuntimeConfig) -> SessionSandboxes:
    """Interpreters by session, bounded by --max-sessions and --idle-timeout on either transport (stdio also
    keeps its one default interpreter)."""
    from ..sandbox import Sandbox
    from ..server.sessions import SessionSandboxes

    default = None if args.transport == "streamable-http" else Sandbox(config=config)
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
    except PolicyError as exc:
        print(f"mcp-pyodide: {policy_problem(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"mcp-pyodide: {exc}", file=sys.stderr)
        return 2
    # Fail fast on a missing Node or isolation: the client shows our stderr, and a server
    # without its runtime helps nobody.
    from dataclasses import replace

    from .. import _prewarm
    from .._isolation import IsolationUnavailable

    probe = _prewarm.begin(config)  # Node, isolation and runtime files, found while the server imports
    from ..server import make_state, serve_stdio

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
        approval_timeout_s=float(args.approval_timeout),
    )
    try:
        scale.apply_state(state, args.state, scale.request_state_keys(args.request_state_keys))
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
            from ..server.http import serve_http

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
