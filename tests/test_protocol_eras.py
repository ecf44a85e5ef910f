"""Both MCP eras, on stdio and on Streamable HTTP, through the official Python client pinned to each.

`mode="legacy"` forces the initialize handshake; `mode="2026-07-28"` pins the
stateless revision with no fallback (`auto` would silently fall back and prove
nothing). Each (transport, era) pair is driven against a real server with a
policy that requires approval for every run, so execute, approval, handles,
resource notices and progress are all checked the way a client meets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import mcp_types as types
import psutil
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from support import REPO, HttpServerProcess, runs_per_session_policy, runtime_nodes

MODERN = "2026-07-28"
ERAS = ["legacy", MODERN]
SCENARIO_TIMEOUT_S = 240


def write_policy(folder: Path) -> Path:
    policy = folder / "policy.json"
    rule = {"action": "require_approval", "reason": "runs only with your OK"}
    policy.write_text(json.dumps({"version": "1", "default": "allow", "tools": {"pyodide_execute": rule}}))
    return policy


PROMPTS: list[str] = []


async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    """The user: declines code that says DECLINE, dismisses code that says CANCEL, approves the rest."""
    message = params.message
    PROMPTS.append(message)
    assert "runs only with your OK" in message
    if "DECLINE" in message:
        return types.ElicitResult(action="decline")
    if "CANCEL" in message:
        return types.ElicitResult(action="cancel")
    return types.ElicitResult(action="accept")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eras")


@pytest.fixture(scope="module")
def http_server(folder: Path) -> Iterator[HttpServerProcess]:
    shared = folder / "shared"
    shared.mkdir(exist_ok=True)
    server = HttpServerProcess(folder, None, "--policy", str(write_policy(folder)), "--mount", f"shared={shared}")
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def client_for(
    transport: str, mode: str, folder: Path, http: HttpServerProcess | None, **kwargs: Any
) -> AsyncIterator[Client]:
    target: Any
    if transport == "http":
        assert http is not None
        target = http.url
    else:
        out = folder / f"stdio-out-{mode}"
        shared = folder / "shared"
        shared.mkdir(exist_ok=True)
        args = ["-m", "mcp_pyodide", "--policy", str(write_policy(folder)), "--output-dir", str(out)]
        args += ["--mount", f"shared={shared}"]
        target = StdioServerParameters(command=sys.executable, args=args, cwd=str(REPO), env=dict(os.environ))
    async with Client(target, mode=mode, elicitation_callback=elicit, **kwargs) as client:  # type: ignore[arg-type]
        assert client.protocol_version == (MODERN if mode == MODERN else "2025-11-25")
        yield client


def structured(result: types.CallToolResult) -> dict[str, Any]:
    assert isinstance(result.structured_content, dict), result
    return result.structured_content


def text(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def session_args(handle: str | None) -> dict[str, Any]:
    return {} if handle is None else {"session": handle}


@pytest.mark.parametrize("transport", ["stdio", "http"])
@pytest.mark.parametrize("mode", ERAS)
def test_execute_with_state_approval_and_handles(transport: str, mode: str, folder: Path, request: Any) -> None:
    http = request.getfixturevalue("http_server") if transport == "http" else None

    async def scenario() -> None:
        async with client_for(transport, mode, folder, http) as client:
            first = await client.call_tool("pyodide_execute", {"code": "x = 20 + 1\nx * 2"})
            assert not first.is_error, text(first)
            assert structured(first)["result"] == "42"
            # stdio serves its one interpreter without a handle, as before; over HTTP every result names one.
            handle = structured(first).get("session")
            assert (handle is None) == (transport == "stdio"), first
            if handle is not None:
                assert f"session: {handle}" in text(first)
            again = await client.call_tool("pyodide_execute", {"code": "x", **session_args(handle)})
            assert structured(again)["result"] == "21", text(again)

            declined = await client.call_tool("pyodide_execute", {"code": "ran = 'DECLINE'", **session_args(handle)})
            assert declined.is_error and "[POLICY DENIED]" in text(declined) and "decline" in text(declined)
            cancelled = await client.call_tool("pyodide_execute", {"code": "ran = 'CANCEL'", **session_args(handle)})
            assert cancelled.is_error and "cancel" in text(cancelled)
            check = await client.call_tool("pyodide_execute", {"code": "'ran' in globals()", **session_args(handle)})
            assert structured(check)["result"] == "False"  # neither refused call ran

            # The user sees the whole code, or is not asked at all.
            long_code = "# " + "y" * 6000 + f"\nlong_{mode.replace('-', '_')} = 1"
            seen = len(PROMPTS)
            shown = await client.call_tool("pyodide_execute", {"code": long_code, **session_args(handle)})
            assert not shown.is_error and any(long_code in p for p in PROMPTS[seen:]), text(shown)
            seen = len(PROMPTS)
            too_long = await client.call_tool("pyodide_execute", {"code": "#" + "x" * 25_000, **session_args(handle)})
            assert too_long.is_error and "too long to show in full" in text(too_long)
            assert len(PROMPTS) == seen  # not asked with a shortened prompt

            # Two handles, two interpreters: "new" starts one and names it.
            other = await client.call_tool("pyodide_execute", {"code": "'x' in globals()", "session": "new"})
            assert structured(other)["result"] == "False", text(other)
            second = structured(other)["session"]
            assert second != handle and len(second) >= 32
            await client.call_tool("pyodide_execute", {"code": "x = 'second'", "session": second})
            mine = await client.call_tool("pyodide_execute", {"code": "x", **session_args(handle)})
            assert structured(mine)["result"] == "21"
            theirs = await client.call_tool("pyodide_execute", {"code": "x", "session": second})
            assert structured(theirs)["result"] == "'second'"

            # A guessed handle runs nothing.
            guessed = await client.call_tool(
                "pyodide_execute", {"code": "x = 'guessed'", "session": second[:-2] + "zz"}
            )
            assert guessed.is_error and "nothing was run" in text(guessed)
            reset = await client.call_tool("pyodide_reset", {"session": second})
            assert not reset.is_error and structured(reset)["session"] == second
            gone = await client.call_tool("pyodide_execute", {"code": "'x' in globals()", "session": second})
            assert structured(gone)["result"] == "False"
            assert (
                structured(await client.call_tool("pyodide_execute", {"code": "x", **session_args(handle)}))["result"]
                == "21"
            )

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))


@pytest.mark.parametrize("transport", ["stdio", "http"])
@pytest.mark.parametrize("mode", ERAS)
def test_progress_and_resource_notices(transport: str, mode: str, folder: Path, request: Any) -> None:
    http = request.getfixturevalue("http_server") if transport == "http" else None
    legacy_notices: list[Any] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceListChangedNotification):
            legacy_notices.append(message)

    async def scenario() -> None:
        async with client_for(transport, mode, folder, http, message_handler=on_message) as client:
            seen: list[str] = []

            async def progress(done: float, total: float | None, message: str | None) -> None:
                seen.append(message or "")

            code = "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.3)\n"
            ran = await client.call_tool("pyodide_execute", {"code": code}, progress_callback=progress)
            assert not ran.is_error, text(ran)
            assert "tick 0" in "".join(seen), seen  # live output arrived while the code ran
            handle = structured(ran).get("session")
            write = f"open('/mnt/shared/notice-{mode}-{transport}.txt', 'w').write('hi')"
            if mode == MODERN:
                async with client.listen(resources_list_changed=True) as subscription:
                    wrote = await client.call_tool("pyodide_execute", {"code": write, **session_args(handle)})
                    assert not wrote.is_error, text(wrote)
                    with anyio_timeout(30):
                        event = await subscription.__anext__()
                    assert type(event).__name__ == "ResourcesListChanged"
            else:
                wrote = await client.call_tool("pyodide_execute", {"code": write, **session_args(handle)})
                assert not wrote.is_error, text(wrote)
                deadline = time.monotonic() + 30
                while not legacy_notices and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert legacy_notices

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))


@contextlib.contextmanager
def anyio_timeout(seconds: float) -> Iterator[None]:
    import anyio

    with anyio.fail_after(seconds):
        yield


def test_http_sessions_write_to_their_own_output_folder(http_server: HttpServerProcess, folder: Path) -> None:
    async def scenario() -> None:
        async with client_for("http", MODERN, folder, http_server) as client:
            write = "open('/mnt/output/mine-a.txt', 'w').write('a')"
            a = await client.call_tool("pyodide_execute", {"code": write})
            b = await client.call_tool("pyodide_execute", {"code": "import os\nos.listdir('/mnt/output')"})
            assert structured(a)["session"] != structured(b)["session"]  # no handle over HTTP: a new session
            assert "mine-a.txt" not in (structured(b)["result"] or ""), text(b)
            (written,) = structured(a)["files"]
            assert "/.session-" in written and structured(a)["session"] not in written  # not named by the handle
            # Host-side, too: b's file tools see b's own output folder, and resources/list shows neither.
            listed = await client.call_tool(
                "pyodide_list-mounted-directory", {"mountName": "output", "session": structured(b)["session"]}
            )
            assert not listed.is_error and "mine-a.txt" not in text(listed) and ".session-" not in text(listed)
            own = await client.call_tool(
                "pyodide_list-mounted-directory", {"mountName": "output", "session": structured(a)["session"]}
            )
            assert "mine-a.txt" in text(own), text(own)
            resources = await client.list_resources()
            assert not any("mine-a.txt" in str(r.uri) for r in resources.resources)
            # Whoever holds the path from a's result can still read the file as a resource.
            read = await client.read_resource("file:///mnt/output/" + written[written.index(".session-") :])
            assert isinstance(read.contents[0], types.TextResourceContents) and read.contents[0].text == "a"

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))


def test_an_evicted_session_is_told_its_state_was_reset_and_an_expired_handle_runs_nothing(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    server = HttpServerProcess(tmp_path, None, "--max-sessions", "1", "--idle-timeout", "8", "--audit-log", str(audit))
    handles: list[str] = []
    try:

        async def scenario() -> None:
            async with Client(server.url, mode=MODERN) as client:
                first = await client.call_tool("pyodide_execute", {"code": "kept = 1"})
                handle = structured(first)["session"]
                handles.append(handle)
                await asyncio.sleep(1.2)  # idle long enough to be taken for another session
                other = await client.call_tool("pyodide_execute", {"code": "'other'", "session": "new"})
                assert structured(other)["result"] == "'other'", text(other)
                await asyncio.sleep(1.2)
                back = await client.call_tool("pyodide_execute", {"code": "'kept' in globals()", "session": handle})
                assert structured(back)["result"] == "False"
                assert structured(back)["state_reset"] is True
                assert "to make room for another session" in structured(back)["state_reset_reason"]
                assert "[state reset]" in text(back)
                # After --idle-timeout without a call the handle has expired: it runs nothing, and the
                # interpreter it had is reclaimed.
                await asyncio.sleep(8.5)
                expired = await client.call_tool("pyodide_execute", {"code": "kept = 2", "session": handle})
                assert expired.is_error and "nothing was run" in text(expired)
                server_proc = psutil.Process(server.proc.pid)
                deadline = time.monotonic() + 30
                while runtime_nodes(server_proc) and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                assert not runtime_nodes(server_proc)

        asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))
        log = audit.read_text()
        assert log.count("\n") >= 3 and handles[0] not in log  # the audit log names sessions, never their secret
    finally:
        server.stop()


def _post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bare", "version": "0"}},
}


def test_bare_initializes_cannot_exhaust_the_server(http_server: HttpServerProcess, folder: Path) -> None:
    statuses = [_post(http_server.url, INITIALIZE)[0] for _ in range(40)]
    assert statuses == [200] * 40

    async def scenario() -> None:
        async with client_for("http", "legacy", folder, http_server) as client:
            assert structured(await client.call_tool("pyodide_execute", {"code": "6 * 7"}))["result"] == "42"

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2"])
def test_dns_rebinding_is_refused_on_every_loopback_bind(host: str, tmp_path: Path) -> None:
    server = HttpServerProcess(tmp_path, None, host=host)
    try:
        evil = {"Host": "evil.example", "Origin": "http://evil.example"}
        assert _post(server.url, INITIALIZE, evil)[0] == 421
        assert _post(server.url, INITIALIZE, {"Origin": "http://evil.example"})[0] == 403
        assert _post(server.url, INITIALIZE)[0] == 200  # the address we are bound to is fine

        async def scenario() -> None:
            async with Client(server.url, mode=MODERN) as client:
                assert structured(await client.call_tool("pyodide_execute", {"code": "1 + 1"}))["result"] == "2"

        asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))
    finally:
        server.stop()


def test_a_client_that_gives_up_while_the_user_is_asked_gets_its_quota_back(tmp_path: Path) -> None:
    """One approved run a minute: a call abandoned during its approval must not use it up."""
    policy = tmp_path / "policy.json"
    rule = {
        "action": "require_approval",
        "reason": "runs only with your OK",
        "limits": [{"counter": "runs", "window": "minute", "max": 1}],
    }
    policy.write_text(json.dumps({"version": "1", "default": "allow", "tools": {"pyodide_execute": rule}}))
    asked = asyncio.Event()

    async def slow_user(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        if "HANG" in params.message:
            asked.set()
            await asyncio.sleep(3600)  # the user never answers; the client gives up first
        return types.ElicitResult(action="accept")

    args = ["-m", "mcp_pyodide", "--policy", str(policy), "--output-dir", str(tmp_path / "out")]
    target = StdioServerParameters(command=sys.executable, args=args, cwd=str(REPO), env=dict(os.environ))

    async def scenario() -> None:
        async with Client(target, mode="legacy", elicitation_callback=slow_user) as client:
            abandoned = asyncio.ensure_future(client.call_tool("pyodide_execute", {"code": "'HANG'"}))
            await asyncio.wait_for(asked.wait(), 60)
            abandoned.cancel()  # the client cancels the request (notifications/cancelled)
            with contextlib.suppress(asyncio.CancelledError):
                await abandoned
            deadline = time.monotonic() + 30
            while True:  # the server settles the cancelled approval at once; allow it a moment to arrive
                result = await client.call_tool("pyodide_execute", {"code": "6 * 7"})
                if not result.is_error or time.monotonic() > deadline:
                    break
                assert "rate limit" in text(result), text(result)
                await asyncio.sleep(0.2)
            assert not result.is_error, text(result)
            assert structured(result)["result"] == "42"

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))


def test_a_stateless_call_refused_for_want_of_an_interpreter_gets_its_quota_back(tmp_path: Path) -> None:
    """2026-07-28 handles: a call no interpreter could take is refunded, in the session it named."""
    limit = 3
    server = HttpServerProcess(tmp_path, runs_per_session_policy(limit), "--max-sessions", "1")
    try:

        async def scenario() -> None:
            async with Client(server.url, mode=MODERN) as client:

                async def call(code: str, session: str) -> types.CallToolResult:
                    return await client.call_tool("pyodide_execute", {"code": code, "session": session})

                a = structured(await call("kept = 'a'", "new"))["session"]
                await asyncio.sleep(1.2)  # a is idle now: a new session may take its interpreter
                b_first = await call("'b'", "new")
                assert structured(b_first)["result"] == "'b'", text(b_first)
                b = structured(b_first)["session"]  # b has used one run of its quota
                await asyncio.sleep(1.2)
                busy_loop = "import time\nt = time.time()\nwhile time.time() - t < 4: pass\n'a done'"
                long_run = asyncio.ensure_future(call(busy_loop, a))  # a takes the interpreter back
                await asyncio.sleep(2.0)  # a is running, and has been for more than a second
                refused = await call("'b again'", b)
                assert refused.is_error and "in use by other sessions" in text(refused), text(refused)
                assert "this call did not count against the rate limit" in text(refused)
                assert structured(await long_run)["result"] == "'a done'"  # not killed to make room
                await asyncio.sleep(1.2)
                for _ in range(limit - 1):  # b still has the rest of its quota: the refused call was given back
                    again = await call("1", b)
                    assert structured(again)["result"] == "1", text(again)
                over = await call("1", b)
                assert over.is_error and "[POLICY DENIED]" in text(over), text(over)

        asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))
    finally:
        server.stop()
