"""stdio on the event loop's pipe transports: what the SDK's transport promised, kept, and the fallback."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
from support import REPO, spawn_stdio_server, wait_for_nodes

from mcp_pyodide.server.fast_stdio import LineTooLong
from mcp_pyodide.server.stdin_guard import describe

ECHO = textwrap.dedent(
    """
    import sys
    import anyio
    from mcp_pyodide.server.fast_stdio import pipes_available, stdio_streams

    async def main():
        sys.stderr.write(f"pipes {pipes_available()}\\n")
        async with stdio_streams(max_line_bytes=64) as (read, write):
            print("stray print", flush=True)  # fd 1 is stderr while serving, not the wire
            async for item in read:
                if isinstance(item, Exception):
                    sys.stderr.write(f"ERR {type(item).__name__}: {item}\\n")
                else:
                    await write.send(item)
        print("after serving", flush=True)  # fd 1 is the wire again

    anyio.run(main)
    """
)


def ping(n: int) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": n, "method": "ping"}).encode()


def test_lines_are_served_over_pipes_and_a_too_long_one_is_skipped_not_buffered() -> None:
    lines = [ping(1), b'{"pad": "' + b"x" * 300 + b'"}', b"\xff\xfe not utf-8", ping(2), b"x" * 65, ping(3)]
    stdin = b"\n".join(lines) + b"\n" + ping(4)  # the last line has no newline: still served at EOF
    proc = subprocess.run(
        [sys.executable, "-c", ECHO], input=stdin, capture_output=True, cwd=REPO, timeout=60, check=True
    )
    out = proc.stdout.decode().splitlines()
    assert [json.loads(line)["id"] for line in out[:-1]] == [1, 2, 3, 4]
    assert out[-1] == "after serving"
    err = proc.stderr.decode()
    assert "pipes True" in err and "stray print" in err
    assert err.count("ERR LineTooLong: the line is longer than 64 bytes") == 2
    assert "ERR ValidationError" in err  # invalid UTF-8 is replaced, then refused as JSON, as before


def test_a_too_long_line_is_answered_as_a_parse_error() -> None:
    code, message = describe(LineTooLong("the line is longer than 64 bytes"))
    assert code == -32700 and message == "Parse error: the line is longer than 64 bytes; it was skipped"


def test_stdin_and_stdout_that_are_files_get_the_sdks_transport(tmp_path: Path) -> None:
    requests, replies = tmp_path / "requests.jsonl", tmp_path / "replies.jsonl"
    requests.write_bytes(ping(5) + b"\n")
    with requests.open("rb") as stdin, replies.open("wb") as stdout:
        subprocess.run(
            [sys.executable, "-m", "mcp_pyodide", "--output-dir", str(tmp_path / "out")],
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            cwd=REPO,
            timeout=120,
            check=True,
        )
    assert [json.loads(line) for line in replies.read_text().splitlines()] == [
        {"jsonrpc": "2.0", "id": 5, "result": {}}
    ]


def test_a_client_that_closes_our_stdout_ends_the_server_cleanly(tmp_path: Path) -> None:
    proc = spawn_stdio_server("--output-dir", str(tmp_path / "out"))
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(ping(1) + b"\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["id"] == 1
        nodes = wait_for_nodes(proc)
        assert nodes, "no Node process was started"
        proc.stdout.close()  # the client stops reading: the next answer has nowhere to go
        proc.stdin.write(ping(2) + b"\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
        _, alive = psutil.wait_procs(nodes, timeout=10)
        assert alive == []
        stderr = proc.stderr.read().decode()
        assert "the client closed our stdout; shutting down" in stderr and "Traceback" not in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
