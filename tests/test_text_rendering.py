"""A result's text part repeats each stream only up to --max-text-output; the structured part keeps it all."""

from __future__ import annotations

from support import ALLOW_ALL, ServerHandle, text_of

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
