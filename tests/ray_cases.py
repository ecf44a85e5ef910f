"""`--backend ray` cases: run by tests/test_ray_backend.py inside a private network namespace (loopback only).

The cluster (`ray.cluster_utils.Cluster`, loopback, 100 MB object stores) has a
head that runs no sandbox (`num_cpus=0`) and worker nodes that do, so the test
can remove the node hosting a session and add a fresh one, as a cluster
autoscaler would. Front-end B is a separate process (tests/ray_frontend.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from mcp_pyodide._outputs import MAX_RETURNED
from mcp_pyodide.backends.ray_actor import (
    KV_NAMESPACE,
    MARKER_MARGIN_S,
    MAX_FILE_BYTES,
    MAX_RESULT_BYTES,
    kv_key,
    marker_fresh,
    marker_value,
)
from mcp_pyodide.backends.ray_provider import (
    RaySandboxes,
    RemoteSandbox,
    _read_notebook,
    actor_name,
    result_from_wire,
)
from mcp_pyodide.config import RuntimeConfig
from mcp_pyodide.errors import RuntimeUnavailable
from mcp_pyodide.notebook import NotebookError
from mcp_pyodide.server.handles import ANONYMOUS, Handle, folder_of

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "mcp-pyodide-test"
NODE = {"object_store_memory": 100 * 1024 * 1024}
SANDBOX = {"num_cpus": 0.5, "memory_bytes": 200 * 1024 * 1024}


def handle(handle_id: str | None = None) -> Handle:
    handle_id = handle_id or secrets.token_urlsafe(24)
    return Handle(id=handle_id, label="t", principal=ANONYMOUS, created=0.0, last_used=0.0, folder=folder_of(handle_id))


# -- what an actor sends is hostile: checked without any Ray ----------------------------------------------


def test_a_hostile_payload_becomes_a_bounded_result() -> None:
    result = result_from_wire(
        {
            "stdout": "x" * 500,
            "stderr": 7,
            "result": ["not", "text"],
            "error": {"type": "E" * 1000, "message": None},
            "timed_out": "yes",
            "state_reset": True,
            "duration_ms": float("inf"),
            "files_not_returned": -5,
            "loaded_packages": [{"name": "numpy", "installed": 1, "dependencies": ["a", 2]}, "junk"],
        },
        max_chars=100,
    )
    assert result.stdout.startswith("x" * 100) and len(result.stdout) < 150
    assert result.stderr == "" and result.result is None
    assert result.error is not None and len(result.error.type) < 250 and result.error.message == ""
    assert result.timed_out is False and result.state_reset is True
    assert result.duration_ms == 0.0 and result.files_not_returned == 0
    assert [(o.name, o.installed, o.dependencies) for o in result.loaded_packages] == [("numpy", False, ["a"])]
    assert result_from_wire("not a dict", 100).ok


def test_only_safe_capped_outputs_are_written_and_only_pngs_count_as_figures(tmp_path: Path) -> None:
    class Provider:
        config = RuntimeConfig(output_dir=tmp_path)

        def output_dir_for(self, h: Handle) -> Path:
            return tmp_path / "session"

    remote = RemoteSandbox(Provider(), handle())  # type: ignore[arg-type]
    png = b"\x89PNG\r\n\x1a\nrest"
    (tmp_path / "session").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "session" / "link").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "session" / "dir.csv").mkdir()
    os.mkfifo(tmp_path / "session" / "pipe.txt")  # would block an open for writing without O_NONBLOCK
    figures, files, dropped = remote._store_outputs(
        [
            ["fig.png", png, "figure"],
            ["fake.png", b"GIF89a", "figure"],  # called a figure, is not a PNG: a file
            ["data/table.csv", b"a,b\n1,2\n", "file"],
            ["../escape.png", png, "figure"],
            [".hidden", png, "file"],
            ["/abs.png", png, "figure"],
            ["link/through.txt", b"x", "file"],  # a link on the way: refused
            ["dir.csv", b"x", "file"],  # not a regular file: refused
            ["pipe.txt", b"x", "file"],  # a FIFO: refused at once
            ["big.bin", b"0" * (MAX_FILE_BYTES + 1), "file"],
            ["ok/sub.png", "not bytes", "figure"],
            ["two", b"fields"],
            "junk",
        ]
    )
    session = tmp_path / "session"
    assert figures == [session / "fig.png"]
    assert files == [session / "fake.png", session / "data" / "table.csv"]
    assert dropped == 10
    assert (session / "data" / "table.csv").read_bytes() == b"a,b\n1,2\n"
    assert not (tmp_path / "escape.png").exists() and not list((tmp_path / "elsewhere").iterdir())
    _, many, over = remote._store_outputs([[f"f{i}.txt", b"x", "file"] for i in range(MAX_RETURNED + 5)])
    assert len(many) == MAX_RETURNED and over == 5
    chunk = b"0" * MAX_FILE_BYTES
    _, fits, past = remote._store_outputs([[f"c{i}", chunk, "file"] for i in range(3)])  # 24 MiB > 16 MiB in all
    assert len(fits) == MAX_RESULT_BYTES // MAX_FILE_BYTES and past == 1


def test_a_notebook_from_an_actor_is_parsed_and_validated_before_it_is_written() -> None:
    for junk in ("not json", "[]", '{"cells": "no"}', '{"nbformat": 4, "nbformat_minor": 5, "cells": [{"x": 1}]}'):
        with pytest.raises(NotebookError, match="no valid notebook"):
            _read_notebook(junk)


def test_a_marker_is_fresh_only_while_its_handle_can_be_alive() -> None:
    now = 1_000_000.0
    assert marker_fresh(marker_value(now - 900), now, idle_timeout_s=900)  # idle for exactly the timeout
    assert marker_fresh(marker_value(now - 900 - MARKER_MARGIN_S + 1), now, idle_timeout_s=900)
    assert not marker_fresh(marker_value(now - 900 - MARKER_MARGIN_S - 1), now, idle_timeout_s=900)
    assert not marker_fresh(marker_value(now + 10 * MARKER_MARGIN_S), now, idle_timeout_s=900)  # from the future
    for junk in (b"1", b"", b"nan", b"inf", None, "1.0", b"\xff"):
        assert not marker_fresh(junk, now, idle_timeout_s=900)


# -- a real cluster ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    # Ray listens on the machine's own address; only in a loopback-only namespace does it stay local.
    assert {name for _, name in socket.if_nameindex()} <= {"lo"}, "run these cases through tests/test_ray_backend.py"

    # The workers must import this checkout (the shared venv's editable install points elsewhere).
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **NODE})
    made.add_node(num_cpus=1, **NODE)
    made.wait_for_nodes()
    ray.init(address=made.address, namespace=NAMESPACE, log_to_driver=False)
    try:
        yield made
    finally:
        ray.shutdown()
        made.shutdown()


def front_end_b(cluster: Any, h: Handle, output: Path, code: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "ray_frontend.py"), cluster.address, NAMESPACE, h.id, str(output), code],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_session_keeps_its_variables_across_front_ends_and_survives_losing_its_node(
    cluster: Any, tmp_path: Path
) -> None:
    a = RaySandboxes(RuntimeConfig(output_dir=tmp_path / "a"), namespace=NAMESPACE, **SANDBOX)  # type: ignore[arg-type]
    h = handle()

    async def through_a(code: str) -> Any:
        return await (await a.get(h)).execute(code, timeout_ms=30_000)

    first = asyncio.run(through_a("x = 41\nx"))
    assert first.result == "41" and a.take_reset_note(h.id) is None

    # Files the run wrote on the actor's node come back to this front-end; one over the cap is counted.
    write = (
        "import os\nos.makedirs('/mnt/output/sub', exist_ok=True)\n"
        "open('/mnt/output/table.csv', 'w').write('a,b\\n1,2\\n')\n"
        "open('/mnt/output/sub/blob.bin', 'wb').write(bytes(range(256)) * 4)\n"
        f"open('/mnt/output/huge.bin', 'wb').write(b'0' * {MAX_FILE_BYTES + 1})"
    )
    wrote = asyncio.run(through_a(write))
    assert wrote.error is None, wrote.error
    session = a.output_dir_for(h)
    assert session is not None
    assert sorted(wrote.files) == [session / "sub" / "blob.bin", session / "table.csv"], wrote
    assert (session / "table.csv").read_text() == "a,b\n1,2\n"
    assert (session / "sub" / "blob.bin").read_bytes() == bytes(range(256)) * 4
    assert wrote.files_not_returned == 1 and not (session / "huge.bin").exists()

    async def export() -> tuple[Path, tuple[int, int]]:
        remote = await a.get(h)
        return await remote.export_notebook("reports/run.ipynb", overwrite=False), remote.history_counts()

    exported, counts = asyncio.run(export())  # the actor holds the history; the notebook is written here
    assert exported == session / "reports" / "run.ipynb" and counts == (2, 0)
    cells = json.loads(exported.read_text())["cells"]
    assert any("x = 41" in "".join(cell["source"]) for cell in cells)
    with pytest.raises(NotebookError, match="exists"):
        asyncio.run(export())
    assert actor_name(h.id) != h.id and h.id not in actor_name(h.id)

    seen_by_b = front_end_b(cluster, h, tmp_path / "b", "x + 1")
    assert seen_by_b == {"result": "42", "error": None, "note": None}

    actor = ray.get_actor(actor_name(h.id), namespace=NAMESPACE)
    host = ray.get(actor.where.remote(), timeout=30)
    node = next(n for n in cluster.worker_nodes if n.node_id == host)
    cluster.remove_node(node)
    cluster.add_node(num_cpus=1, **NODE)  # what an autoscaler would do

    started = time.monotonic()
    try:
        after = asyncio.run(through_a("x"))
    except RuntimeUnavailable as exc:  # the call raced the node's death: reported, and the next one resets
        assert "died" in str(exc) or "did not answer" in str(exc)
        after = asyncio.run(through_a("x"))
    note = a.take_reset_note(h.id)
    assert note is not None and "variables and imports are gone" in note
    assert after.error is not None and after.error.type == "NameError"
    assert time.monotonic() - started < 200


def test_markers_of_expired_sessions_are_swept(cluster: Any, tmp_path: Path) -> None:
    from ray.experimental import internal_kv

    stale, fresh = kv_key("mcp-pyodide-stale-test"), kv_key("mcp-pyodide-fresh-test")
    internal_kv._internal_kv_put(stale, marker_value(time.time() - 5000), namespace=KV_NAMESPACE)
    internal_kv._internal_kv_put(fresh, marker_value(time.time()), namespace=KV_NAMESPACE)
    provider = RaySandboxes(RuntimeConfig(output_dir=tmp_path), namespace=NAMESPACE, idle_timeout_s=60, **SANDBOX)  # type: ignore[arg-type]
    h = handle()
    assert asyncio.run(_run(provider, h, "1 + 1")).result == "2"  # creating its actor sweeps
    assert not internal_kv._internal_kv_exists(stale, namespace=KV_NAMESPACE)
    assert internal_kv._internal_kv_exists(fresh, namespace=KV_NAMESPACE)
    assert marker_fresh(internal_kv._internal_kv_get(kv_key(actor_name(h.id)), namespace=KV_NAMESPACE), time.time(), 60)
    asyncio.run(provider.release(h.id))  # the session ended: its marker goes with it
    assert not internal_kv._internal_kv_exists(kv_key(actor_name(h.id)), namespace=KV_NAMESPACE)


def test_a_runaway_run_times_out_in_its_actor_and_the_session_goes_on(cluster: Any, tmp_path: Path) -> None:
    provider = RaySandboxes(RuntimeConfig(output_dir=tmp_path), namespace=NAMESPACE, **SANDBOX)  # type: ignore[arg-type]
    h = handle()

    async def scenario() -> tuple[Any, Any, float]:
        remote = await provider.get(h)
        await remote.execute("kept = 7", timeout_ms=30_000)  # boots the interpreter
        started = time.monotonic()
        runaway = await remote.execute("while True: pass", timeout_ms=1000)
        took = time.monotonic() - started
        return runaway, await remote.execute("kept", timeout_ms=30_000), took

    runaway, after, took = asyncio.run(scenario())
    assert runaway.timed_out and runaway.error is not None and took < 10
    assert after.result == "7" and not after.state_reset  # interrupted, not restarted: the variables are kept
    asyncio.run(provider.release(h.id))


def test_an_idle_actor_ends_itself(cluster: Any, tmp_path: Path) -> None:
    provider = RaySandboxes(
        RuntimeConfig(output_dir=tmp_path),
        namespace=NAMESPACE,
        idle_timeout_s=1.0,
        **SANDBOX,  # type: ignore[arg-type]
    )
    h = handle()
    assert asyncio.run(_run(provider, h, "1 + 1")).result == "2"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ray.get_actor(actor_name(h.id), namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.5)
    pytest.fail("the idle actor was still there after 60 s")


async def _run(provider: RaySandboxes, h: Handle, code: str) -> Any:
    return await (await provider.get(h)).execute(code, timeout_ms=30_000)


# -- the real server: two replicas over HTTP sharing handles in Redis --------------------------------------


def test_two_http_replicas_serve_one_session_and_report_its_lost_node(cluster: Any, tmp_path: Path) -> None:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from scale_support import HttpServerProcess, RedisServer

    store = RedisServer(tmp_path)
    extra = [
        "--backend",
        "ray",
        "--ray-address",
        cluster.address,
        "--ray-namespace",
        NAMESPACE,
        "--ray-cpus",
        "0.5",
        "--ray-memory-mb",
        "200",
        "--state",
        store.url,
    ]
    replicas = [HttpServerProcess(tmp_path, {"version": "1", "default": "allow"}, *extra, name=n) for n in "ab"]

    async def call(url: str, code: str, session: str) -> dict[str, Any]:
        async with Client(streamable_http_client(url), mode="2026-07-28") as connected:  # type: ignore[arg-type]
            result = await connected.call_tool("pyodide_execute", {"code": code, "session": session})
        text = " ".join(getattr(block, "text", "") for block in result.content)
        return {**(result.structured_content or {}), "is_error": result.is_error, "text": text}

    async def scenario() -> None:
        a, b = (r.url for r in replicas)
        made = await call(a, "x = 41\nx", "new")
        handle = made["session"]
        assert made["result"] == "41", made
        on_b = await call(b, "x + 1", handle)
        assert on_b["result"] == "42" and not on_b.get("state_reset"), on_b

        host = ray.get(ray.get_actor(actor_name(handle), namespace=NAMESPACE).where.remote(), timeout=30)
        cluster.remove_node(next(n for n in cluster.worker_nodes if n.node_id == host))
        cluster.add_node(num_cpus=1, **NODE)
        after = await call(b, "x", handle)
        if not after.get("state_reset") and "Ray actor" in after["text"]:  # the call raced the node's death: said so
            after = await call(a, "x", handle)
        assert after.get("state_reset") is True and "gone" in after["state_reset_reason"], after
        assert "NameError" in after["text"]
        again = await call(a, "x = 1\nx", handle)
        assert again["result"] == "1" and not again.get("state_reset"), again

    try:
        asyncio.run(asyncio.wait_for(scenario(), 300))
    finally:
        for replica in replicas:
            replica.stop()
        store.stop()
    for replica in replicas:
        assert "Traceback" not in replica.log_text(), replica.log_text()[-3000:]
