"""Authenticated Streamable HTTP: bearer tokens from a hash file and OAuth JWTs, refused with reasons, running nothing.

One real server process serves the module (it boots interpreters only for calls
that get through); a JWKS is served from a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from scale_support import HttpServerProcess, connect, execute
from support import REPO

from mcp_pyodide.server.auth import TokenFile, add_token, token_digest

POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {"pyodide_execute": {"limits": [{"counter": "runs", "window": "hour", "max": 3, "scope": "grant"}]}},
}
KID = "test-key"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class Jwks:
    """An issuer's signing key and a JWKS endpoint on 127.0.0.1."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        body = json.dumps({"keys": [{**public, "kid": KID, "use": "sig", "alg": "RS256"}]}).encode()
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                self.send_response(200 if self.path == "/jwks.json" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(
        self,
        audience: str,
        *,
        sub: str = "bob",
        lifetime: float = 600,
        issuer: str | None = None,
        key: Any = None,
        kid: str = KID,
    ) -> str:
        now = int(time.time())
        claims = {"iss": issuer or self.issuer, "aud": audience, "sub": sub, "iat": now, "exp": now + int(lifetime)}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": kid})


class AuthServer:
    def __init__(self, tmp: Path) -> None:
        self.jwks = Jwks()
        self.tokens = tmp / "tokens"
        self.alice = add_token(self.tokens, "alice")
        self.carol = add_token(self.tokens, "carol")
        self.audit = tmp / "audit.jsonl"
        self.http = HttpServerProcess(
            tmp,
            POLICY,
            "--auth-tokens",
            str(self.tokens),
            "--oauth-issuer",
            self.jwks.issuer,
            "--oauth-jwks-url",
            f"{self.jwks.issuer}/jwks.json",
            "--audit-log",
            str(self.audit),
        )
        self.url = self.http.url
        self.marker = self.http.output_dir / "marker"

    def close(self) -> None:
        self.http.stop()
        self.jwks.server.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    handle = AuthServer(tmp_path_factory.mktemp("auth"))
    try:
        yield handle
    finally:
        handle.close()


WRITE_MARKER = "open('/mnt/output/marker', 'w').write('ran'); 'ran'"


def refused(url: str, token: str | None) -> tuple[int, str, str]:
    """POST an initialize with ``token``: (status, WWW-Authenticate, body)."""
    headers = {**MCP_HEADERS, **({"Authorization": f"Bearer {token}"} if token is not None else {})}
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    response = httpx2.post(url, json=body, headers=headers, timeout=30)
    return response.status_code, response.headers.get("www-authenticate", ""), response.text


def client_refused(url: str, token: str | None) -> str:
    """The official client's error when it connects and runs code with ``token``."""

    async def attempt() -> None:
        async with connect(url, token) as session:
            await execute(session, WRITE_MARKER)

    with pytest.raises(Exception) as caught:  # the client wraps the 401 in its own error types
        asyncio.run(asyncio.wait_for(attempt(), 60))
    return repr(caught.value)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("none", "no bearer token"),
        ("wrong", "unknown token"),
        ("expired", "the access token has expired"),
        ("audience", "the access token is not for this server"),
        ("issuer", "the access token was not issued by"),
        ("signature", "signature does not verify"),
        ("garbage-jwt", "no signing key for the access token"),
    ],
)
def test_bad_credentials_are_refused_with_the_reason_and_run_nothing(
    server: AuthServer, case: str, reason: str
) -> None:
    jwks = server.jwks
    token = {
        "none": None,
        "wrong": "mcpp_not-a-token-anyone-was-given",
        "expired": jwks.token(server.url, lifetime=-120),
        "audience": jwks.token("https://someone-else.example/mcp"),
        "issuer": jwks.token(server.url, issuer="https://evil.example"),
        "signature": jwks.token(server.url, key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "garbage-jwt": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
    }[case]
    status, challenge, body = refused(server.url, token)
    assert status == 401
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    assert reason in challenge and reason in body
    assert "/.well-known/oauth-protected-resource/mcp" in challenge  # RFC 9728: where to find the issuer
    assert "Server returned an error response" in client_refused(server.url, token)  # the official client stops
    assert not server.marker.exists()
    assert server.http.node_processes() == []  # no interpreter was even started


def test_protected_resource_metadata_names_the_issuer(server: AuthServer) -> None:
    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
        response = httpx2.get(f"http://127.0.0.1:{server.http.port}{path}", timeout=10)
        assert response.status_code == 200, path
        metadata = response.json()
        assert metadata["resource"] == server.url
        assert [url.rstrip("/") for url in metadata["authorization_servers"]] == [server.jwks.issuer]


def test_principals_run_code_keep_their_sessions_and_count_their_own_quota(server: AuthServer) -> None:
    async def scenario() -> None:
        async with (
            connect(server.url, server.alice) as alice,
            connect(server.url, server.jwks.token(server.url)) as bob,
        ):
            assert (await execute(alice, "x = 'alice'; x"))["result"] == "'alice'"
            assert (await execute(bob, "x = 'bob'; x"))["result"] == "'bob'"
            assert (await execute(alice, "x"))["result"] == "'alice'"
            assert (await execute(alice, "x"))["result"] == "'alice'"
            over = await execute(alice, "x")  # alice's 4th run: her quota of 3 per hour is spent
            assert over["is_error"] and "[POLICY DENIED]" in over["text"] and "rate limit 3" in over["text"]
            assert (await execute(bob, "x"))["result"] == "'bob'"  # bob's quota is his own

    asyncio.run(asyncio.wait_for(scenario(), 240))
    records = [json.loads(line) for line in server.audit.read_text().splitlines()]
    by_principal = {(r["principal"], r["decision"]) for r in records}
    assert ("alice", "allow") in by_principal and ("alice", "deny") in by_principal
    assert ("oauth:bob", "allow") in by_principal


def test_another_principals_session_runs_nothing(server: AuthServer) -> None:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    alice = {**MCP_HEADERS, "Authorization": f"Bearer {server.alice}"}
    opened = httpx2.post(server.url, json=init, headers=alice, timeout=30)
    assert opened.status_code == 200
    session = opened.headers["mcp-session-id"]
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "pyodide_execute", "arguments": {"code": WRITE_MARKER}},
    }
    carol = {
        **MCP_HEADERS,
        "Authorization": f"Bearer {server.carol}",
        "Mcp-Session-Id": session,
        "Mcp-Protocol-Version": "2025-11-25",
    }
    stolen = httpx2.post(server.url, json=call, headers=carol, timeout=30)
    assert stolen.status_code == 404 and "Session not found" in stolen.text
    assert not server.marker.exists()


def test_tokens_added_while_serving_work_without_a_restart(server: AuthServer) -> None:
    minted = subprocess.run(
        [sys.executable, "-m", "mcp_pyodide", "token", "add", "dave", "--file", str(server.tokens)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    token = minted.stdout.strip()
    assert token.startswith("mcpp_") and "shown this once" in minted.stderr
    assert token not in server.tokens.read_text() and token_digest(token) in server.tokens.read_text()

    async def scenario() -> None:
        async with connect(server.url, token) as dave:
            assert (await execute(dave, "6 * 7"))["result"] == "42"

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_token_file_stores_hashes_only_and_rejects_plain_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    token = add_token(path, "erin")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token not in path.read_text()
    assert TokenFile(path).lookup(token) == "erin"
    assert TokenFile(path).lookup(token + "x") is None
    path.write_text("erin mcpp_plaintoken\n")
    with pytest.raises(ValueError, match="plain tokens are never stored"):
        TokenFile(path)
    with pytest.raises(ValueError, match="oauth:"):
        add_token(path, "oauth:mallory")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--oauth-issuer", "https://issuer.example"], "--oauth-issuer needs --oauth-jwks-url"),
        (["--oauth-jwks-url", "https://issuer.example/jwks"], "--oauth-jwks-url needs --oauth-issuer"),
        (["--auth-tokens", "/nonexistent/tokens"], "--auth-tokens /nonexistent/tokens"),
        (["--transport", "stdio", "--auth-tokens", "/dev/null"], "apply to --transport streamable-http"),
        (["--state", "http://127.0.0.1:1"], "expected a redis://, rediss:// or unix:// URL"),
    ],
)
def test_bad_options_are_named_before_serving(args: list[str], message: str) -> None:
    transport = [] if "--transport" in args else ["--transport", "streamable-http", "--port", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "mcp_pyodide", *transport, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_unknown_key_ids_do_not_make_the_server_hammer_the_issuer() -> None:
    from mcp_pyodide.server.auth import JwtVerifier, OAuthSettings

    jwks = Jwks()
    try:
        verifier = JwtVerifier(OAuthSettings(jwks.issuer, "aud", f"{jwks.issuer}/jwks.json"))
        good = verifier.verify(jwks.token("aud"))
        assert good is not None and good[0] == "oauth:bob"
        for i in range(20):
            assert verifier.verify(jwks.token("aud", kid=f"forged-{i}")) is None
        assert jwks.fetches <= 2  # the first read, and one refresh for the first unknown kid
    finally:
        jwks.server.shutdown()
