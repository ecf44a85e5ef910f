"""pyodide_execute through the real MCP client: values, streams, tracebacks, state, limits."""

from __future__ import annotations

from support import ServerHandle, text_of


def test_value_of_last_expression_and_stdout(server: ServerHandle) -> None:
    result = server.execute("print('hello')\n21 * 2")
    assert not result.is_error
    assert result.structured_content is not None
    assert result.structured_content["stdout"] == "hello\n"
    assert result.structured_content["result"] == "42"
    text = text_of(result)
    assert "--- stdout ---\nhello" in text and "--- result ---\n42" in text


def test_none_value_is_not_shown_and_semicolon_hides_value(server: ServerHandle) -> None:
    assert server.execute("None").structured_content["result"] is None  # type: ignore[index]
    assert server.execute("1 + 1;").structured_content["result"] is None  # type: ignore[index]
    assert text_of(server.execute("x_unused = 3")) == "(no output)"


def test_stdout_and_stderr_are_kept_apart_with_partial_lines(server: ServerHandle) -> None:
    code = (
        "import sys\n"
        "print('out1')\nprint('err1', file=sys.stderr)\n"
        "sys.stdout.write('partial')\nsys.stderr.write('e-partial')\nprint('out2')"
    )
    sc = server.execute(code).structured_content
    assert sc is not None
    assert sc["stdout"] == "out1\npartialout2\n"
    assert sc["stderr"] == "err1\ne-partial"


def test_a_partial_line_before_a_timeout_is_kept(server: ServerHandle) -> None:
    code = "import sys\nsys.stdout.write('no newline yet')\nwhile True: pass"
    sc = server.execute(code, timeout_ms=500).structured_content
    assert sc is not None and sc["timed_out"] is True
    assert sc["stdout"] == "no newline yet"


def test_exception_gives_is_error_and_trimmed_traceback(server: ServerHandle) -> None:
    result = server.execute("def f():\n    return 1 / 0\n\nf()")
    assert result.is_error
    sc = result.structured_content
    assert sc is not None and sc["error"]["type"] == "ZeroDivisionError"
    tb = sc["error"]["traceback"]
    assert tb.startswith("Traceback (most recent call last):")
    assert "line 4, in <module>" in tb and "return 1 / 0" in tb
    assert "_pyodide" not in tb and "executor.py" not in tb and "mcp_pyodide" not in tb


def test_syntax_error_is_reported(server: ServerHandle) -> None:
    result = server.execute("def broken(:\n  pass")
    assert result.is_error
    assert "SyntaxError" in text_of(result)


def test_globals_persist_between_calls(server: ServerHandle) -> None:
    server.execute("counter = 10\ndef bump():\n    global counter\n    counter += 1\n    return counter")
    server.execute("bump()")
    assert server.execute("bump()").structured_content["result"] == "12"  # type: ignore[index]


def test_top_level_await(server: ServerHandle) -> None:
    result = server.execute("import asyncio\nawait asyncio.sleep(0.01)\n'awaited'")
    assert not result.is_error, text_of(result)
    assert result.structured_content["result"] == "'awaited'"  # type: ignore[index]


def test_system_exit_does_not_end_anything(server: ServerHandle) -> None:
    result = server.execute("import sys\nsys.exit(3)")
    assert result.is_error and "SystemExit" in text_of(result)
    assert server.execute("'still here'").structured_content["result"] == "'still here'"  # type: ignore[index]


def test_output_beyond_the_bound_is_cut_and_counted(server: ServerHandle) -> None:
    result = server.execute("print('x' * 250_000, end='')")
    sc = result.structured_content
    assert sc is not None
    assert len(sc["stdout"]) == 100_000
    assert sc["stdout_truncated_chars"] == 150_000
    assert "150,000 more characters cut" in text_of(result)


def test_code_over_the_size_bound_is_refused_before_running(server: ServerHandle) -> None:
    big = "x_big = 1\n" + "#" * 1_000_001
    result = server.execute(big)
    assert result.is_error
    assert "over the limit of 1,000,000 bytes" in text_of(result)
    assert server.execute("'x_big' in globals()").structured_content["result"] == "False"  # type: ignore[index]


def test_bad_arguments_get_a_clear_error(server: ServerHandle) -> None:
    result = server.call("pyodide_execute", {"code": "1", "timeout": -5})
    assert result.is_error and "timeout" in text_of(result)
    result = server.call("pyodide_execute", {})
    assert result.is_error and "code" in text_of(result)
    result = server.call("pyodide_execute", {"code": "1", "bogus": True})
    assert result.is_error and "bogus" in text_of(result)


def test_unknown_tool_is_an_error_not_a_crash(server: ServerHandle) -> None:
    result = server.call("no_such_tool", {})
    assert result.is_error and "Unknown tool" in text_of(result)
    assert not server.execute("1").is_error


def test_tools_are_listed_with_schemas_and_honest_annotations(server: ServerHandle) -> None:
    tools = {tool.name: tool for tool in server.list_tools()}
    execute = tools["pyodide_execute"]
    assert execute.input_schema["required"] == ["code"]
    assert execute.output_schema is not None and "stdout" in execute.output_schema["properties"]
    assert execute.annotations is not None and execute.annotations.read_only_hint is False
    assert execute.annotations.idempotent_hint is False
    assert "persist" in (execute.description or "") and "timeout" in (execute.description or "")


def test_stdin_is_not_available(server: ServerHandle) -> None:
    result = server.execute("import sys\nsys.stdin.readline()")
    assert result.is_error
    assert not server.execute("1").is_error


def test_output_streams_to_the_client_while_the_code_runs(server: ServerHandle) -> None:
    import time

    seen: list[tuple[float, str]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((time.monotonic(), message or ""))

    assert server.session is not None
    # No flush=True: stdout is line-buffered, so each printed line streams as it is printed.
    code = "import time\nfor i in range(3):\n    print(f'step {i}')\n    time.sleep(0.4)\n'done'"
    result = server.run(server.session.call_tool("pyodide_execute", {"code": code}, progress_callback=on_progress))
    finished = time.monotonic()
    assert result.structured_content["stdout"] == "step 0\nstep 1\nstep 2\n"  # type: ignore[index]
    streamed = "".join(message for _, message in seen)
    assert "step 0" in streamed and "step 2" in streamed
    first_at = next(at for at, message in seen if "step 0" in message)
    assert finished - first_at > 0.5, "the first line arrived only with the result"


def test_structured_results_match_the_served_output_schema(server: ServerHandle) -> None:
    import jsonschema

    schema = {tool.name: tool for tool in server.list_tools()}["pyodide_execute"].output_schema
    assert schema is not None and set(schema["required"]) >= {"stdout", "error", "state_reset", "figures"}
    for code in ("print('x')\n1 + 1", "1 / 0", "import sys; sys.stderr.write('e' * 10)"):
        result = server.execute(code)
        jsonschema.validate(result.structured_content, schema)
