"""Options for serving past one machine: HTTP authentication and shared state (`--state redis://...`).

All opt-in: without these options the server is exactly what it was.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("mcp_pyodide.server")


def add_options(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    group = parser.add_argument_group("authentication (Streamable HTTP)")
    group.add_argument(
        "--auth-tokens",
        type=Path,
        default=env("MCP_PYODIDE_AUTH_TOKENS") or None,
        metavar="FILE",
        help="accept bearer tokens whose sha256 is listed in FILE ('sha256:<hex> <principal>' lines, re-read when "
        "it changes; add one with `mcp-pyodide token add`) (env MCP_PYODIDE_AUTH_TOKENS)",
    )
    group.add_argument(
        "--oauth-issuer",
        default=env("MCP_PYODIDE_OAUTH_ISSUER") or None,
        metavar="URL",
        help="accept OAuth 2.1 JWT access tokens from this issuer (its `iss`)",
    )
    group.add_argument(
        "--oauth-jwks-url",
        default=env("MCP_PYODIDE_OAUTH_JWKS_URL") or None,
        metavar="URL",
        help="the issuer's JWKS, for checking token signatures (needed with --oauth-issuer)",
    )
    group.add_argument(
        "--oauth-audience",
        default=env("MCP_PYODIDE_OAUTH_AUDIENCE") or None,
        metavar="AUD",
        help="the `aud` a token must carry (default: --resource-url)",
    )
    group.add_argument(
        "--resource-url",
        default=env("MCP_PYODIDE_RESOURCE_URL") or None,
        metavar="URL",
        help="this server's public MCP URL, as clients reach it through any proxy; named in the "
        "RFC 9728 metadata (default http://HOST:PORT/mcp)",
    )
    group.add_argument(
        "--state",
        default=env("MCP_PYODIDE_STATE") or None,
        metavar="URL",
        help="keep rate-limit windows, pending approvals, session handles and the audit stream in Redis "
        "(redis://host:6379/0), so replicas share one policy; the [redis] extra (env MCP_PYODIDE_STATE)",
    )
    group.add_argument(
        "--request-state-keys",
        type=Path,
        default=env("MCP_PYODIDE_REQUEST_STATE_KEYS") or None,
        metavar="FILE",
        help="secrets (one per line, 32+ characters; the first seals, all open) for the requestState of "
        "2026-07-28 approvals, shared by the replicas; default with --state: one kept in Redis "
        "(env MCP_PYODIDE_REQUEST_STATE_KEYS)",
    )
    ray = parser.add_argument_group("interpreters on a Ray cluster (--backend ray, the [ray] extra)")
    ray.add_argument(
        "--backend",
        choices=["local", "ray"],
        default=env("MCP_PYODIDE_BACKEND", "local"),
        help="local (default): interpreters are Node processes of this server; ray: each session's interpreter is "
        "a named Ray actor, found by any replica (Streamable HTTP; use with --state) (env MCP_PYODIDE_BACKEND)",
    )
    ray.add_argument(
        "--ray-address",
        default=env("MCP_PYODIDE_RAY_ADDRESS") or None,
        metavar="ADDR",
        help="the Ray cluster to join (host:port of its head, or 'auto'; default: RAY_ADDRESS, else a local one)",
    )
    ray.add_argument(
        "--ray-namespace",
        default=env("MCP_PYODIDE_RAY_NAMESPACE", "mcp-pyodide"),
        help="the Ray namespace of the session actors; replicas that share sessions share it (default mcp-pyodide)",
    )
    ray.add_argument(
        "--ray-cpus", type=float, default=1.0, metavar="N", help="CPUs each session actor declares (default 1)"
    )
    ray.add_argument(
        "--ray-memory-mb",
        type=int,
        default=512,
        metavar="MB",
        help="memory each session actor declares to Ray, for placement (default 512; an interpreter uses ~200)",
    )


def http_auth(args: argparse.Namespace) -> Any:
    """The configured :class:`~mcp_pyodide.server.auth.HttpAuth`, or None. Raises ValueError for bad options."""
    if args.oauth_jwks_url and not args.oauth_issuer:
        raise ValueError("--oauth-jwks-url needs --oauth-issuer")
    if args.auth_tokens is None and args.oauth_issuer is None:
        return None
    if args.transport != "streamable-http":
        raise ValueError("--auth-tokens and --oauth-issuer apply to --transport streamable-http")
    # Only now: importing it imports the whole MCP SDK, which the server otherwise loads in a
    # thread while Node boots (commands/serve.py).
    from ..server.auth import Authenticator, HttpAuth, JwtVerifier, OAuthSettings, TokenFile

    resource = args.resource_url or f"http://{args.host}:{args.port}/mcp"
    tokens = None
    if args.auth_tokens is not None:
        try:
            tokens = TokenFile(args.auth_tokens)
        except OSError as exc:
            raise ValueError(f"--auth-tokens {args.auth_tokens}: {exc.strerror or exc}") from exc
    oauth = None
    if args.oauth_issuer:
        if not args.oauth_jwks_url:
            raise ValueError("--oauth-issuer needs --oauth-jwks-url (where the issuer publishes its signing keys)")
        oauth = JwtVerifier(OAuthSettings(args.oauth_issuer, args.oauth_audience or resource, args.oauth_jwks_url))
    return HttpAuth(Authenticator(tokens, oauth), resource_url=resource, issuer=args.oauth_issuer)


def request_state_keys(path: Path | None) -> list[bytes] | None:
    """The secrets of ``--request-state-keys`` (first seals); None when not given. ValueError names the problem."""
    if path is None:
        return None
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ValueError(f"--request-state-keys {path}: {exc.strerror or exc}") from exc
    keys = [line.strip() for line in lines if line.strip() and not line.startswith(b"#")]
    if not keys or any(len(key) < 32 for key in keys):
        raise ValueError(
            f"--request-state-keys {path}: give one secret per line, each at least 32 characters "
            '(make one with: python -c "import secrets; print(secrets.token_hex(32))")'
        )
    return keys


def apply_state(state: Any, url: str | None, keys: list[bytes] | None = None) -> None:
    """Point the server's policy engine, pending approvals, handle registry and audit log at Redis (``--state``);
    seal `requestState` with ``keys`` when given, else (with ``--state``) with a key shared through Redis."""
    state.request_state_keys = keys
    if not url:
        return
    from ..policy import PolicyEngine
    from ..server.approval import PendingApprovals
    from ..state.redis_approvals import RedisApprovals, shared_request_state_key
    from ..state.redis_audit import AuditTee
    from ..state.redis_handles import RedisHandles
    from ..state.redis_store import RedisLimitStore, connect

    client = connect(url)
    policy = state.engine.policy
    store = RedisLimitStore(client, url, policy.all_limits())
    state.engine = PolicyEngine(policy, store=store, reservation_ttl_s=state.engine.reservation_ttl_s)
    state.approvals = PendingApprovals(state.engine, RedisApprovals(store, client))
    state.sandboxes.handles = RedisHandles(store, client, state.sandboxes.handles.idle_timeout_s)
    state.audit = AuditTee(state.audit, client)
    import redis

    # Also tells the operator at start-up when Redis does not answer (then served fail-closed until it does).
    shared = shared_request_state_key(redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2), url)
    if keys is None and shared is not None:
        state.request_state_keys = [shared]


def ray_provider(args: argparse.Namespace, config: Any) -> Any:
    """The `RaySandboxes` provider for ``--backend ray``. Raises ValueError for options it cannot serve."""
    if args.transport != "streamable-http":
        raise ValueError("--backend ray serves --transport streamable-http (stdio has one client: use local)")
    if config.mounts:
        raise ValueError(
            "--mount is not supported with --backend ray: the interpreters run on other machines "
            "(only what a run writes to the output folder is carried back, as returned figures and files)"
        )
    if args.ray_cpus < 0 or args.ray_memory_mb <= 0:
        raise ValueError("--ray-cpus must be >= 0 and --ray-memory-mb > 0")
    try:
        from ..backends.ray_provider import RaySandboxes
    except ImportError as exc:
        raise ValueError(f"--backend ray needs the [ray] extra (pip install 'mcp-pyodide[ray]'): {exc}") from exc
    return RaySandboxes(
        config,
        idle_timeout_s=float(args.idle_timeout),
        address=args.ray_address,
        namespace=args.ray_namespace,
        num_cpus=args.ray_cpus,
        memory_bytes=args.ray_memory_mb * 1024 * 1024,
    )


def add_token_parser(sub: Any) -> None:
    token = sub.add_parser("token", help="manage bearer tokens for Streamable HTTP")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    add = token_sub.add_parser("add", help="mint a token for a principal: prints it once, stores only its sha256")
    add.add_argument("principal", help="who the token stands for (rate limits with scope grant count per principal)")
    add.add_argument("--file", type=Path, required=True, help="the token file the server reads (--auth-tokens)")


def run_token(args: argparse.Namespace) -> int:
    from ..server.auth import add_token

    try:
        token = add_token(args.file, args.principal)
    except (OSError, ValueError) as exc:
        print(f"mcp-pyodide: {exc}", file=sys.stderr)
        return 2
    print(token)
    print(
        f"token for {args.principal!r} added to {args.file} (only its hash is stored; it is shown this once)",
        file=sys.stderr,
    )
    return 0
