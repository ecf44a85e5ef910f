"""`mcp-pyodide doctor`: real checks against this machine, then a real sandbox running 1+1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "tests" / "policies"


def doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_pyodide", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})},
    )


def line(output: str, name: str) -> str:
    return next(row for row in output.splitlines() if row[2:].startswith(name + ":") or row[5:].startswith(name + ":"))


def test_all_good_exits_0_and_runs_the_smoke_test(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    proc = doctor(
        "--output-dir",
        str(tmp_path / "out"),
        "--mount",
        f"data={data}:ro",
        "--policy",
        str(POLICIES / "example.json"),
        "--package-source",
        str(tmp_path),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert line(out, "Node.js").startswith("✓") and "node" in line(out, "Node.js")
    assert "Pyodide 0.27.7 installed and verified" in line(out, "runtime")
    assert "is writable" in line(out, "package cache")
    assert f"folder {tmp_path}" in line(out, "package source")
    assert "read-only" in line(out, "mount data") and line(out, "output folder").startswith("✓")
    assert "example.json is valid" in line(out, "policy")
    assert line(out, "isolation").startswith("✓") or line(out, "isolation").startswith("!")
    smoke = line(out, "smoke test")
    assert smoke.startswith("✓") and "1+1 = 2" in smoke and " ms" in smoke
    assert "All set" in out


def test_failures_exit_1_with_a_fix_each_and_ascii_marks(tmp_path: Path) -> None:
    bad_policy = tmp_path / "policy.json"
    bad_policy.write_text('{"version": "1", "default": "maybe"}')
    proc = doctor(
        "--output-dir",
        str(tmp_path / "out"),
        "--mount",
        f"gone={tmp_path / 'missing'}:ro",
        "--policy",
        str(bad_policy),
        "--package-source",
        str(tmp_path / "no-mirror"),
        env={"PYTHONIOENCODING": "ascii"},
    )
    assert proc.returncode == 1
    out = proc.stdout
    assert "✓" not in out and "✗" not in out
    assert line(out, "Node.js").startswith("ok")
    for name in ("mounts", "policy", "package source", "smoke test"):
        assert line(out, name).startswith("FAIL"), out
    assert out.count("how to fix:") >= 3
    assert "skipped" in line(out, "smoke test")


def test_an_unreachable_package_url_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    proc = doctor("--output-dir", str(tmp_path / "out"), "--package-source", "http://127.0.0.1:9/pyodide/")
    assert proc.returncode == 0, proc.stdout
    assert line(proc.stdout, "package source").startswith("!")
    assert "not reachable" in line(proc.stdout, "package source")


def test_a_missing_node_fails_with_the_install_hint(tmp_path: Path) -> None:
    proc = doctor("--output-dir", str(tmp_path / "out"), "--node", str(tmp_path / "no-node"))
    assert proc.returncode == 1
    assert line(proc.stdout, "Node.js").startswith("✗")
    assert "nodejs.org" in proc.stdout


def test_strict_isolation_reports_what_is_in_force(tmp_path: Path) -> None:
    proc = doctor("--output-dir", str(tmp_path / "out"), "--isolation", "standard")
    assert proc.returncode == 0, proc.stdout
    assert "standard: Node permission model" in line(proc.stdout, "isolation")
