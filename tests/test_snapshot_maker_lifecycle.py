"""The Node process that makes the first memory snapshot never outlives the server, however it ends."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from support import ALLOW_ALL, REPO, runtime_nodes

from mcp_pyodide._paths import cache_root


def _fresh_server(tmp_path: Path) -> tuple[subprocess.Popen[bytes], list[psutil.Process], Path]:
    """A server on a cache without a snapshot, once both its Node processes (serving, maker) run."""
    root = tmp_path / "cache"
    shutil.copytree(cache_root() / "node-runtime", root / "node-runtime", symlinks=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_pyodide", "--policy", str(ALLOW_ALL)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env={**os.environ, "MCP_PYODIDE_CACHE_ROOT": str(root)},
    )
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(runtime_nodes(parent)) < 2:
        time.sleep(0.02)
    nodes = runtime_nodes(parent)
    assert len(nodes) == 2, "the server did not start the snapshot maker"
    return proc, nodes, root / "snapshots"


def _assert_all_gone(nodes: list[psutil.Process], within: float = 10) -> None:
    deadline = time.monotonic() + within
    alive = nodes
    while time.monotonic() < deadline:
        alive = [n for n in nodes if n.is_running() and n.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return
        time.sleep(0.05)
    for node in alive:
        node.kill()
    pytest.fail(f"Node process(es) {[n.pid for n in alive]} outlived the server")


@pytest.mark.parametrize("how", ["stdin", "sigterm", "sigkill"])
def test_a_server_ended_while_the_maker_boots_leaves_no_node_and_no_partial_image(tmp_path: Path, how: str) -> None:
    proc, nodes, snapshots = _fresh_server(tmp_path)
    started = time.monotonic()
    if how == "stdin":
        assert proc.stdin is not None
        proc.stdin.close()
    else:
        os.kill(proc.pid, signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    code = proc.wait(20)
    took = time.monotonic() - started
    _assert_all_gone(nodes)
    if how == "stdin":
        assert code == 0
    if how != "sigkill":
        assert took < 5, f"shutdown took {took:.1f} s with the maker still booting"
    assert not list(snapshots.glob("*.tmp"))
