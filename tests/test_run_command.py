"""`mcp-pyodide run`: code from -c, a file or stdin, streams kept apart, value, files, exit status and policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support import fresh_cache_root, offline_packages_dir

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "tests" / "policies"


def run(*args: str, stdin: str | None = None, out: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--output-dir", str(out)] if out is not None else []
    return subprocess.run(
        [sys.executable, "-m", "mcp_pyodide", "run", *args, *extra],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=dict(os.environ),
    )


def test_dash_c_prints_stdout_stderr_and_value(tmp_path: Path) -> None:
    proc = run("-c", "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\n6 * 7", out=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "to out\n42\n"
    assert proc.stderr == "to err\n"


def test_a_file_runs_and_none_prints_nothing(tmp_path: Path) -> None:
    script = tmp_path / "hello.py"
    script.write_text("def greet(n):\n    return f'hello {n}'\n\nprint(greet('file'))\nNone\n")
    proc = run(str(script), out=tmp_path / "out")
    assert (proc.returncode, proc.stdout) == (0, "hello file\n"), proc.stderr


def test_stdin_and_a_partial_last_line_is_kept_as_is(tmp_path: Path) -> None:
    proc = run("-", stdin="print('no newline', end='')\n", out=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "no newline")


def test_an_exception_exits_1_with_the_traceback_on_stderr(tmp_path: Path) -> None:
    proc = run("-c", "print('before')\ndef f():\n    raise ValueError('bad value')\nf()", out=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == "before\n"
    assert proc.stderr.startswith("Traceback (most recent call last):")
    assert "ValueError: bad value" in proc.stderr and "line 4" in proc.stderr


def test_a_timeout_exits_1(tmp_path: Path) -> None:
    proc = run("-c", "while True: pass", "--timeout", "1000", out=tmp_path)
    assert proc.returncode == 1
    assert "TimeoutError" in proc.stderr or "timed out" in proc.stderr.lower()


def test_files_written_to_the_output_folder_are_listed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run("-c", "open('/mnt/output/report.txt', 'w').write('done')", out=out)
    assert proc.returncode == 0, proc.stderr
    assert f"saved file: {(out / 'report.txt').resolve()}" in proc.stderr
    assert (out / "report.txt").read_text() == "done"


def test_mounts_and_packages_work_like_the_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "numbers.txt").write_text("1 2 3 4")
    code = "import numpy as np\nint(np.loadtxt('/mnt/data/numbers.txt').sum())"
    proc = run(
        "-c",
        code,
        "--mount",
        f"data={data}:ro",
        "--package-source",
        str(offline_packages_dir()),
        "--cache-dir",
        str(tmp_path / "cache"),
        out=tmp_path / "out",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "10\n"


def test_a_figure_is_saved_and_its_path_printed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"
    proc = run(
        "-c", code, "--package-source", str(offline_packages_dir()), "--cache-dir", str(tmp_path / "cache"), out=out
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("saved figure: ")]
    assert len(lines) == 1
    figure = Path(lines[0].removeprefix("saved figure: "))
    assert figure.is_relative_to(out.resolve()) and figure.read_bytes().startswith(b"\x89PNG")


def test_the_policy_applies_as_a_pyodide_execute_call(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "version": "1",
                "default": "allow",
                "tools": {
                    "pyodide_execute": {
                        "deny_if": [
                            {"path": "code", "op": "contains", "value": "forbidden", "reason": "no forbidden words"}
                        ],
                        "require": [{"path": "timeout", "op": "lte", "value": 10000, "reason": "short runs only"}],
                    }
                },
            }
        )
    )
    denied = run("-c", "print('forbidden')", "--policy", str(policy), out=tmp_path)
    assert denied.returncode == 2 and denied.stdout == ""
    assert "[POLICY DENIED]" in denied.stderr and "no forbidden words" in denied.stderr
    too_long = run("-c", "1", "--policy", str(policy), "--timeout", "60000", out=tmp_path)
    assert too_long.returncode == 2 and "short runs only" in too_long.stderr
    allowed = run("-c", "'fine'", "--policy", str(policy), "--timeout", "5000", out=tmp_path)
    assert (allowed.returncode, allowed.stdout) == (0, "'fine'\n"), allowed.stderr
    deny_all = run("-c", "1", "--policy", str(POLICIES / "deny-all.json"), out=tmp_path)
    assert deny_all.returncode == 2 and "[POLICY DENIED]" in deny_all.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run(out=tmp_path).returncode == 2
    missing = run(str(tmp_path / "nope.py"), out=tmp_path)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    assert run(str(tmp_path / "x.py"), "-c", "1", out=tmp_path).returncode == 2


def test_the_first_run_on_a_machine_leaves_a_snapshot_the_next_run_restores(tmp_path: Path) -> None:
    """A one-shot run must not end the snapshot maker at exit, or no run would ever start fast."""
    root = fresh_cache_root(tmp_path)
    env = {**os.environ, "MCP_PYODIDE_CACHE_ROOT": str(root)}
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "mcp_pyodide", "run", "-c", "6 * 7", "--output-dir", str(tmp_path / "out")],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
            env=env,
        )
        assert proc.returncode == 0 and proc.stdout == "42\n", proc.stderr
        assert len(list((root / "snapshots").glob("*.bin"))) == 1
