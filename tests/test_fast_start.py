"""The first start on a machine saves a memory snapshot; later starts restore it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from support import ALLOW_ALL, ServerHandle, fresh_cache_root


def test_first_start_answers_before_a_process_of_its_own_saves_the_snapshot_the_next_start_restores(
    tmp_path: Path,
) -> None:
    root = fresh_cache_root(tmp_path)
    env = {**os.environ, "MCP_PYODIDE_CACHE_ROOT": str(root)}
    first = ServerHandle("--policy", str(ALLOW_ALL), env=env).start()
    try:
        result = first.execute("import json, ast\n1+1")
        assert result.structured_content["result"] == "2"  # type: ignore[index]
        assert "memory snapshot for fast starts" not in first.stderr_text()  # nobody waited for it
        # A second Node process makes it (the serving one ran user code: it may not).
        assert len(first.node_processes()) == 2
        log = first.wait_for_log("memory snapshot for fast starts")
        assert "worker 1 booted from scratch" in log and "ignored a memory snapshot" not in log
        deadline = time.monotonic() + 10
        while len(first.node_processes()) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(first.node_processes()) == 1  # and it is gone once the image is saved
        assert first.execute("x = 1\nx + 1").structured_content["result"] == "2"  # type: ignore[index]
        assert first.call("pyodide_reset", {}).is_error is False
        assert first.execute("'x' in globals()").structured_content["result"] == "False"  # type: ignore[index]
        assert "booted from snapshot" in first.wait_for_log("booted from snapshot")  # the reset used it
    finally:
        first.close()
    snapshots = list((root / "snapshots").glob("*.bin"))
    assert len(snapshots) == 1 and snapshots[0].stat().st_size > 1_000_000
    second = ServerHandle("--policy", str(ALLOW_ALL), env=env).start()
    try:
        assert second.execute("x = 20\nx * 2 + 2").structured_content["result"] == "42"  # type: ignore[index]
        assert "booted from snapshot" in second.stderr_text()
        assert "snapshot unusable" not in second.stderr_text()
        assert len(second.node_processes()) == 1  # nothing more to make
    finally:
        second.close()


DRAW = "import random\nrandom.getrandbits(128)"


def test_interpreters_restored_from_one_snapshot_draw_different_random_numbers() -> None:
    """`random`'s state is in the snapshot's memory: each interpreter must be seeded afresh."""
    draws: list[str] = []
    for _ in range(2):
        handle = ServerHandle("--policy", str(ALLOW_ALL)).start()
        try:
            draws.append(handle.execute(DRAW).structured_content["result"])  # type: ignore[index]
            if "booted from scratch" in handle.stderr_text():  # a fresh cache: the maker is still at work
                handle.wait_for_log("memory snapshot for fast starts")
            assert not handle.call("pyodide_reset", {}).is_error
            draws.append(handle.execute(DRAW).structured_content["result"])  # type: ignore[index]
            assert "booted from snapshot" in handle.stderr_text()
        finally:
            handle.close()
    assert len(set(draws)) == 4, draws


def test_what_runs_before_node_is_spawned_imports_neither_the_mcp_sdk_nor_pydantic() -> None:
    """The SDK (and pydantic under it) loads in a thread while Node boots: an option check or a
    runtime module that imported either would put that time back before the spawn."""
    code = (
        "import sys\n"
        "from mcp_pyodide.cli import build_parser, runtime_config\n"
        "from mcp_pyodide.commands import scale\n"
        "import mcp_pyodide._prewarm, mcp_pyodide.sandbox\n"
        "args = build_parser().parse_args(['serve'])\n"
        "runtime_config(args); scale.http_auth(args)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'mcp_types', 'pydantic')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout


def test_node_is_started_before_the_mcp_sdk_has_finished_importing() -> None:
    handle = ServerHandle("--policy", str(ALLOW_ALL)).start()
    try:
        handle.execute("1")
        log = handle.stderr_text()
    finally:
        handle.close()
    spawned = log.index("mcp_pyodide.runtime: isolation")  # logged as Node is spawned
    assert spawned < log.index("serving on stdio"), log[:2000]


def test_a_restored_interpreter_does_not_keep_the_snapshot_it_was_restored_from() -> None:
    """Pyodide keeps its options for the interpreter's life: the 20 MB snapshot among them
    would cost every interpreter (each HTTP session's, the spare) 20 MiB for nothing."""
    handle = ServerHandle("--policy", str(ALLOW_ALL)).start()
    try:
        result = handle.execute("import pyodide_js\nsorted(pyodide_js._api.config.object_keys())")
        log = handle.stderr_text()
    finally:
        handle.close()
    assert "booted from snapshot" in log, log[-2000:]
    assert result.structured_content is not None
    keys = result.structured_content["result"]
    assert "'indexURL'" in keys and "_loadSnapshot" not in keys, keys


def test_a_booted_interpreter_holds_neither_the_snapshot_nor_the_wasm_bytes_in_array_buffers() -> None:
    """Both were kept for the interpreter's life (20 MB and 10 MB): freed once it has booted."""
    handle = ServerHandle("--policy", str(ALLOW_ALL)).start()
    try:
        handle.execute("1")
        log = handle.stderr_text()
    finally:
        handle.close()
    held = re.search(r"booted from snapshot \(\d+ ms after start; ([\d.]+) MiB of array buffers\)", log)
    assert held is not None, log[-2000:]
    assert float(held.group(1)) < 8, held.group(0)  # about 35 with both kept, 5 without


def test_the_collector_paused_for_start_up_is_back_once_the_sdk_has_imported() -> None:
    """The entry point pauses the cyclic collector while the server imports (a tenth of the start);
    it must be running again, with the start-up objects frozen, before the first call is served."""
    handle = ServerHandle("--policy", str(ALLOW_ALL), "--log-level", "debug").start()
    try:
        assert handle.execute("1 + 1").structured_content["result"] == "2"  # type: ignore[index]
        log = handle.stderr_text()
    finally:
        handle.close()
    resumed = re.search(r"garbage collector resumed; (\d+) start-up objects frozen", log)
    assert resumed is not None and int(resumed.group(1)) > 10_000, log[:3000]
    assert log.index("garbage collector resumed") < log.index("serving on stdio")


def test_the_start_up_pause_hands_the_collector_back_once_and_only_if_it_took_it() -> None:
    code = (
        "import gc\n"
        "from mcp_pyodide import _startup_gc as s\n"
        "s.resume(); untouched = gc.isenabled() and gc.get_freeze_count() == 0\n"
        "s.pause(); paused = not gc.isenabled()\n"
        "s.resume(); s.resume(); back = gc.isenabled() and gc.get_freeze_count() > 0\n"
        "gc.disable(); s.pause(); s.resume(); left_alone = not gc.isenabled()\n"
        "print(untouched, paused, back, left_alone)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.split() == ["True", "True", "True", "True"], proc.stdout + proc.stderr
    # The other commands get it back at once.
    version = subprocess.run(
        [sys.executable, "-m", "mcp_pyodide", "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and version.stdout.strip(), version.stderr
