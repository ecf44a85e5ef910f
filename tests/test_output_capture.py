"""How the worker captures a run's output: many small writes, split characters, invalid UTF-8, order.

The worker gathers the bytes of small writes and decodes them in blocks (unbuffered `print` makes
two writes per line). These are the cases where gathering could go wrong: the cap (100,000 UTF-16
units here) must stay exact, a character split over writes must survive, and stdout and stderr
must reach the client in the order they were written.
"""

from __future__ import annotations

import time

from support import ServerHandle

CAP = 100_000


def test_many_small_writes_of_a_multibyte_character_stop_exactly_at_the_cap(server: ServerHandle) -> None:
    sc = server.execute("for _ in range(150_000): print('€', end='')").structured_content
    assert sc is not None
    assert sc["stdout"] == "€" * CAP
    assert sc["stdout_truncated_chars"] == 50_000


def test_the_cap_counts_utf16_units_for_characters_outside_the_bmp(server: ServerHandle) -> None:
    sc = server.execute("for _ in range(60_000): print('😀', end='')").structured_content
    assert sc is not None
    assert sc["stdout"] == "😀" * (CAP // 2)
    assert sc["stdout_truncated_chars"] == 20_000


def test_stray_continuation_bytes_cannot_push_the_output_past_the_cap(server: ServerHandle) -> None:
    # Each byte counts 0 before decoding but decodes to one U+FFFD: the estimate is settled on decoding.
    sc = server.execute("import os\nfor _ in range(150_000): os.write(1, b'\\x80')").structured_content
    assert sc is not None
    assert len(sc["stdout"]) == CAP
    assert set(sc["stdout"]) == {"\ufffd"}
    assert sc["stdout_truncated_chars"] > 0


def test_a_character_split_over_writes_is_decoded_whole(server: ServerHandle) -> None:
    code = "import os\ndata = 'é€😀!'.encode()\nfor i in range(len(data)): os.write(1, data[i:i + 1])"
    sc = server.execute(code).structured_content
    assert sc is not None
    assert sc["stdout"] == "é€😀!"
    assert sc["stdout_truncated_chars"] == 0


def test_a_truncated_character_at_the_end_of_a_run_becomes_a_replacement_character(server: ServerHandle) -> None:
    sc = server.execute("import os\nos.write(1, b'ok ' + '€'.encode()[:2])").structured_content
    assert sc is not None
    assert sc["stdout"] == "ok \ufffd"


def test_interleaved_streams_reach_the_client_in_the_order_written(server: ServerHandle) -> None:
    seen: list[str] = []  # os.write, not sys.stdout.write: Python's text layer holds a partial line

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message or "")

    assert server.session is not None
    code = (
        "import os, time\nos.write(1, b'start\\n')\n"
        "os.write(1, b'o1'); os.write(2, b'e1'); os.write(1, b'o2'); os.write(2, b'e2'); os.write(1, b'o3')\n"
        "time.sleep(0.3)"
    )
    started = time.monotonic()
    result = server.run(server.session.call_tool("pyodide_execute", {"code": code}, progress_callback=on_progress))
    assert time.monotonic() - started < 10
    assert result.structured_content is not None
    assert result.structured_content["stdout"] == "start\no1o2o3"
    assert result.structured_content["stderr"] == "e1e2"
    assert "start\no1[stderr] e1o2[stderr] e2o3" in "".join(seen)


def test_output_after_a_quiet_spell_still_streams_before_the_run_ends(server: ServerHandle) -> None:
    seen: list[tuple[float, str]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((time.monotonic(), message or ""))

    assert server.session is not None
    # Small writes gathered within one batch interval, then a long pause: the gathered bytes must
    # not wait for the end of the run.
    code = "import os, time\nfor c in b'gathered': os.write(1, bytes([c]))\ntime.sleep(0.1)\nos.write(1, b'!')\ntime.sleep(1)"
    result = server.run(server.session.call_tool("pyodide_execute", {"code": code}, progress_callback=on_progress))
    finished = time.monotonic()
    assert result.structured_content is not None and result.structured_content["stdout"] == "gathered!"
    so_far = ""
    arrivals = []
    for at, message in seen:
        so_far += message
        arrivals.append((at, so_far))
    first_at = next(at for at, text in arrivals if "gathered" in text)
    assert finished - first_at > 0.7, "the gathered output arrived only with the result"
