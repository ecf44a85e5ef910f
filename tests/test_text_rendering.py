"""A result's text part repeats each stream only up to --max-text-output; the structured part keeps it all."""

from __future__ import annotations

import asyncio
import os
import sys

import mcp_types as types
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from support import ALLOW_ALL, REPO, ServerHandle, text_of

from mcp_pyodide.result import Result
from mcp_pyodide.server.execute import format_result


def test_a_stream_past_the_text_limit_is_shown_in_part_and_says_where_the_rest_is() -> None:
    result = Result(stdout="a" * 250, stderr="b" * 40, stdout_truncated_chars=7)
    text = format_result(result, text_limit=100)
    assert "--- stdout ---\n" + "a" * 100 + "\n[... 150 more characters of stdout in the structured result's" in text
    assert "a" * 101 not in text
    assert "[... 7 more characters cut]" in text  # what the output limit dropped is still said
    assert "--- stderr ---\n" + "b" * 40 + "\n" in text + "\n" and "more characters of stderr" not in text


def test_within_the_text_limit_the_text_shows_everything() -> None:
    assert format_result(Result(stdout="abc\n"), text_limit=4) == "--- stdout ---\nabc\n"


def test_a_big_output_is_sent_once_in_full_and_the_text_points_to_it() -> None:
    server = ServerHandle("--policy", str(ALLOW_ALL), "--max-output", "3000000", "--max-text-output", "1000").start()
    try:
        result = server.execute(
            "print('y' * 2_500_000, end='')\nprint('E' * 1500, end='', file=__import__('sys').stderr)"
        )
        sc = result.structured_content
        assert sc is not None and sc["stdout"] == "y" * 2_500_000 and sc["stdout_truncated_chars"] == 0
        assert sc["stderr"] == "E" * 1500
        text = text_of(result)
        assert len(text) < 3000
        assert "2,499,000 more characters of stdout in the structured result's 'stdout' field" in text
        assert "500 more characters of stderr in the structured result's 'stderr' field" in text
        tool = next(t for t in server.list_tools() if t.name == "pyodide_execute")
        assert "past 1,000 characters the text part of the result says how much more" in (tool.description or "")
    finally:
        server.close()


def test_both_streams_past_the_limit_are_cut_in_characters_with_each_note() -> None:
    result = Result(stdout="é🐍" * 60, stderr="ж" * 130, stderr_truncated_chars=5)
    text = format_result(result, text_limit=100)
    assert "--- stdout ---\n" + ("é🐍" * 50) + "\n[... 20 more characters of stdout in" in text
    assert "--- stderr ---\n" + "ж" * 100 + "\n[... 30 more characters of stderr in" in text
    assert text.endswith("'stderr' field]\n[... 5 more characters cut]")


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_both_protocol_eras_get_the_output_once_in_full_and_the_text_cut(mode: str) -> None:
    args = ["-m", "mcp_pyodide", "--policy", ALLOW_ALL, "--max-output", "300000", "--max-text-output", "1000"]
    target = StdioServerParameters(command=sys.executable, args=args, cwd=str(REPO), env=dict(os.environ))

    async def scenario() -> types.CallToolResult:
        async with Client(target, mode=mode) as client:  # type: ignore[arg-type]
            assert client.protocol_version == ("2025-11-25" if mode == "legacy" else mode)
            return await client.call_tool("pyodide_execute", {"code": "print('z' * 250_000, end='')"})

    result = asyncio.run(asyncio.wait_for(scenario(), 240))
    assert isinstance(result.structured_content, dict) and result.structured_content["stdout"] == "z" * 250_000
    text = "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))
    assert "z" * 1000 + "\n[... 249,000 more characters of stdout in the structured result's 'stdout' field]" in text
    assert "z" * 1001 not in text
