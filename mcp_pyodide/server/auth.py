"""Who is calling over Streamable HTTP: bearer tokens from a hash file, or OAuth 2.1 access tokens (JWT).

The server is an OAuth resource server in the MCP authorization spec's sense:
it never issues tokens, it checks them. Two sources, either or both:

- a token file of ``sha256:<hex> <principal>`` lines (only hashes are stored;
  the file is re-read when it changes, so adding or revoking a token needs no
  restart), written by ``mcp-pyodide token add``;
- JWT access tokens from one issuer: signature against the issuer's JWKS,
  ``iss``, ``aud`` and ``exp`` all checked (PyJWT, the ``[auth]`` extra).

Whatever verifies a token yields its *principal*: the file's name for it, or
``oauth:<sub>`` for a JWT. Rate limits with ``"scope": "grant"`` count per
principal, the audit log records it, and a session is bound to it. The MCP
SDK's bearer middleware does the HTTP side (401 with ``WWW-Authenticate``,
RFC 9728 metadata); :class:`AuthFailureDetail` only fills in *why* a token was
refused, which the SDK's generic message leaves out.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("mcp_pyodide.auth")

TOKEN_LINE = re.compile(r"^sha256:([0-9a-f]{64})\s+(\S.*?)\s*$")
JWT_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
"""Asymmetric only: a shared-secret (HS*) token could be forged by anyone holding the JWKS."""
MAX_TOKEN_CHARS = 8192
REFRESH_EVERY_S = 60.0
OAUTH_PREFIX = "oauth:"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def current_principal() -> str:
    """The authenticated principal of the request being served; "" when HTTP auth is off (or stdio)."""
    token = get_access_token()
    return token.client_id if token is not None else ""


_failure: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("mcp_pyodide_auth_failure", default=None)


def _refuse(reason: str) -> None:
    """Remember why this request's token was refused, for the 401 the SDK is about to send."""
    holder = _failure.get()
    if holder is not None:
        holder.append(reason)
    log.warning("refused a bearer token: %s", reason)


class TokenFile:
    """``sha256(token) -> principal`` entries, re-read whenever the file's mtime or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, str] = {}
        self.lookup("")  # read now: a bad file fails at start-up, not at the first request

    def _load(self) -> dict[str, str]:
        entries: dict[str, str] = {}
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            match = TOKEN_LINE.match(text)
            if match is None:
                raise ValueError(
                    f"{self.path}:{number}: expected 'sha256:<64 hex digits> <principal>' "
                    "(plain tokens are never stored; add tokens with `mcp-pyodide token add`)"
                )
            entries[match.group(1)] = match.group(2)
        return entries

    def lookup(self, token: str) -> str | None:
        """The principal for ``token``, or None. A file that became unreadable keeps the last good entries."""
        with self._lock:
            try:
                stat = self.path.stat()
                stamp = (stat.st_mtime_ns, stat.st_size)
                if stamp != self._stamp:
                    self._entries = self._load()
                    self._stamp = stamp
                    log.info("token file %s: %d tokens", self.path, len(self._entries))
            except (OSError, ValueError) as exc:
                if self._stamp is None:
                    raise
                log.error("token file %s not reloaded (%s); keeping the previous entries", self.path, exc)
            return self._entries.get(token_digest(token)) if token else None


def add_token(path: Path, principal: str) -> str:
    """Mint a token for ``principal``, append its hash to ``path`` (mode 0600), and return the token."""
    if not principal or any(ch.isspace() for ch in principal) or principal.startswith(OAUTH_PREFIX):
        raise ValueError(f"principal {principal!r}: use a name without spaces that does not start with 'oauth:'")
    token = "mcpp_" + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(f"sha256:{token_digest(token)} {principal}\n")
    return token


@dataclass(frozen=True)
class OAuthSettings:
    issuer: str
    audience: str
    jwks_url: str
    leeway_s: float = 30.0


class JwtVerifier:
    """Checks a JWT access token's signature (issuer's JWKS), issuer, audience and expiry."""

    def __init__(self, settings: OAuthSettings) -> None:
        try:
            import jwt
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ValueError("OAuth needs PyJWT: pip install 'mcp-pyodide[auth]'") from exc
        self.settings = settings
        self._jwt = jwt
        self._keys = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300, timeout=10)
        self._refreshed = -REFRESH_EVERY_S

    def _signing_key(self, token: str) -> Any:
        """The key for the token's ``kid``; an unknown kid re-reads the JWKS at most once a minute
        (otherwise every forged token would make us fetch the issuer's JWKS)."""
        kid = self._jwt.get_unverified_header(token).get("kid")
        for refresh in (False, True):
            if refresh:
                if time.monotonic() - self._refreshed < REFRESH_EVERY_S:
                    break
                self._refreshed = time.monotonic()
            for key in self._keys.get_signing_keys(refresh=refresh):
                if key.key_id == kid:
                    return key
        raise self._jwt.PyJWKClientError(f"the issuer's JWKS has no signing key with kid {kid!r}")

    def verify(self, token: str) -> tuple[str, dict[str, Any]] | None:
        """(principal, claims) for a good token; None (with the reason recorded) otherwise. Blocking."""
        jwt = self._jwt
        try:
            key = self._signing_key(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=JWT_ALGORITHMS,
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            _refuse("the access token has expired")
        except jwt.InvalidAudienceError:
            _refuse(f"the access token is not for this server (audience must be {self.settings.audience})")
        except jwt.InvalidIssuerError:
            _refuse(f"the access token was not issued by {self.settings.issuer}")
        except jwt.InvalidSignatureError:
            _refuse("the access token's signature does not verify against the issuer's keys")
        except jwt.PyJWKClientError as exc:
            _refuse(f"no signing key for the access token ({exc})")
        except jwt.InvalidTokenError as exc:
            _refuse(f"invalid access token ({exc})")
        else:
            subject = claims.get("sub")
            if not isinstance(subject, str) or not subject or len(subject) > 256:
                _refuse("the access token has no usable 'sub' claim")
                return None
            return OAUTH_PREFIX + subject, claims
        return None


class Authenticator:
    """The MCP SDK's ``TokenVerifier``: the token file first, then OAuth when configured."""

    def __init__(self, tokens: TokenFile | None, oauth: JwtVerifier | None) -> None:
        if tokens is None and oauth is None:
            raise ValueError("authentication needs a token file, an OAuth issuer, or both")
        self.tokens = tokens
        self.oauth = oauth

    async def verify_token(self, token: str) -> AccessToken | None:
        if len(token) > MAX_TOKEN_CHARS:
            _refuse("the token is too long")
            return None
        if self.tokens is not None:
            principal = self.tokens.lookup(token)
            if principal is not None:
                return AccessToken(token="", client_id=principal, scopes=[], subject=principal)
        if self.oauth is not None and token.count(".") == 2:
            verified = await anyio.to_thread.run_sync(self.oauth.verify, token)
            if verified is None:
                return None
            principal, claims = verified
            scopes = str(claims.get("scope", "")).split()
            expires = claims.get("exp")
            return AccessToken(
                token="",
                client_id=principal,
                scopes=scopes,
                expires_at=int(expires) if isinstance(expires, (int, float)) else None,
                subject=principal,
                claims={"iss": claims.get("iss")},
            )
        _refuse("unknown token")
        return None


class AuthFailureDetail:
    """Put the reason a token was refused into the SDK's 401 (``error_description`` and the JSON body)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reasons: list[str] = []
        reset = _failure.set(reasons)
        rewriting = False

        def why() -> str:
            if reasons:
                return reasons[-1]
            sent = any(k.lower() == b"authorization" for k, _ in scope.get("headers", []))
            return "invalid or missing bearer token" if sent else "no bearer token"

        async def send_with_reason(message: Message) -> None:
            nonlocal rewriting
            if message["type"] == "http.response.start" and message.get("status") == 401:
                rewriting = True
                headers = [
                    (k, _with_description(v, why()) if k.lower() == b"www-authenticate" else v)
                    for k, v in message.get("headers", [])
                    if k.lower() != b"content-length"
                ]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and rewriting:
                body = {"error": "invalid_token", "error_description": f"Authentication required: {why()}"}
                message = {**message, "body": json.dumps(body).encode()}
            await send(message)

        try:
            await self.app(scope, receive, send_with_reason)
        finally:
            _failure.reset(reset)


def _with_description(header: bytes, why: str) -> bytes:
    text = header.decode("latin-1")
    safe = why.replace('"', "'").replace("\\", "/")
    return re.sub(r'error_description="[^"]*"', f'error_description="Authentication required: {safe}"', text).encode(
        "latin-1", "replace"
    )


@dataclass(frozen=True)
class HttpAuth:
    """What the HTTP app needs: the verifier, and (with OAuth) this server's public URL for RFC 9728 metadata."""

    verifier: Authenticator
    resource_url: str
    issuer: str | None = None

    def sdk_settings(self) -> Any:
        from mcp.server.auth.settings import AuthSettings

        # Without OAuth there is no authorization server to advertise: no resource URL means the SDK serves
        # no metadata and uses `issuer_url` for nothing (it only feeds the metadata document).
        return AuthSettings(
            issuer_url=self.issuer or self.resource_url,  # type: ignore[arg-type]
            resource_server_url=self.resource_url if self.issuer else None,  # type: ignore[arg-type]
            validate_token_resource=False,  # the audience is checked by JwtVerifier itself
        )

    def root_metadata_route(self) -> list[Any]:
        """RFC 9728 metadata at the bare well-known path too (the SDK serves the path-suffixed form)."""
        if not self.issuer:
            return []
        from mcp.server.auth.routes import create_protected_resource_routes
        from pydantic import AnyHttpUrl
        from starlette.routing import Route

        (route,) = create_protected_resource_routes(AnyHttpUrl(self.resource_url), [AnyHttpUrl(self.issuer)])
        assert isinstance(route, Route)
        return [Route("/.well-known/oauth-protected-resource", endpoint=route.endpoint, methods=["GET", "OPTIONS"])]
