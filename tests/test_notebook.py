"""Session history and notebook export: bounds, a valid notebook, re-execution, and a hostile session."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nbformat
import pytest
from support import ALLOW_ALL, ServerHandle, offline_packages_dir, text_of

from mcp_pyodide import RuntimeConfig, SyncSandbox
from mcp_pyodide.history import MAX_FIELD_CHARS, MAX_FIGURE_BYTES, PNG_MAGIC, History, read_figures
from mcp_pyodide.notebook import NotebookError, check_name, export, to_notebook, write_notebook

TINY_PNG = PNG_MAGIC + b"\x00\x00\x00\rIHDR" + b"\x00" * 20


def fake_result(**fields: Any) -> SimpleNamespace:
    base: dict[str, Any] = {
        "stdout": "",
        "stderr": "",
        "result": None,
        "error": None,
        "timed_out": False,
        "state_reset": False,
        "duration_ms": 1.0,
        "figures": [],
        "loaded_packages": [],
    }
    return SimpleNamespace(**{**base, **fields})


# -- fast unit tests ----------------------------------------------------------------------


def test_names_stay_inside_the_output_folder() -> None:
    assert str(check_name("analysis")) == "analysis.ipynb"
    assert str(check_name("reports/run1.ipynb")) == "reports/run1.ipynb"
    assert str(check_name("/mnt/output/x.ipynb")) == "x.ipynb"
    for bad in ("../x.ipynb", "a/../../x", "/etc/cron.d/x", "~/x", "a\\..\\x", "x\0y", "", ".hidden"):
        with pytest.raises(NotebookError):
            check_name(bad)


def test_history_is_bounded_and_says_what_it_dropped() -> None:
    history = History(max_cells=3)
    for n in range(5):
        history.record(f"x = {n}", fake_result(stdout="y" * (MAX_FIELD_CHARS + 10)), started=0.0, output_dir=None)
    assert len(history.entries) == 3 and history.dropped == 2
    assert [e.code for e in history.entries] == ["x = 2", "x = 3", "x = 4"]
    assert history.entries[0].stdout.endswith("[... 10 more characters not kept in the history]")
    nb = to_notebook(history)
    assert nb.cells[0].cell_type == "markdown" and "2 earlier call(s) are not in this notebook" in nb.cells[0].source
    small = History(max_bytes=1_000)
    for _ in range(10):
        small.record("print(1)", fake_result(stdout="z" * 300), started=0.0, output_dir=None)
    assert small.size <= 1_000 and small.dropped == 10 - len(small.entries)


def test_figures_are_embedded_only_from_verified_pngs_in_the_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    host_png = tmp_path / "host-secret.png"  # a PNG outside the output folder
    host_png.write_bytes(TINY_PNG + b"host secret")
    (out / "good.png").write_bytes(TINY_PNG)
    (out / "link.png").symlink_to(host_png)
    (out / "text.png").write_text("not a png")
    (out / "huge.png").write_bytes(PNG_MAGIC + b"\0" * MAX_FIGURE_BYTES)
    figures = read_figures([out / n for n in ("good.png", "link.png", "text.png", "huge.png")] + [host_png], out)
    good, link, text, huge, outside = figures
    assert good.png_base64 == base64.b64encode(TINY_PNG).decode()
    assert link.png_base64 is None and "outside the mount" in str(link.problem)
    assert text.png_base64 is None and "not a PNG" in str(text.problem)
    assert huge.png_base64 is None and "larger than" in str(huge.problem)
    assert outside.png_base64 is None
    history = History()
    history.record("plot()", fake_result(figures=[out / "good.png", out / "link.png"]), started=0.0, output_dir=out)
    text_of_nb = json.dumps(to_notebook(history))
    assert base64.b64encode(b"host secret").decode()[:12] not in text_of_nb


def test_writing_never_follows_a_symlink_out_of_the_output_folder(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    victim = elsewhere / "victim.ipynb"
    victim.write_text("keep me")
    (out / "dir").symlink_to(elsewhere, target_is_directory=True)
    (out / "file.ipynb").symlink_to(victim)
    nb = to_notebook(History())
    with pytest.raises(NotebookError, match="not a folder inside the output folder"):
        write_notebook(out, "dir/victim.ipynb", nb)
    with pytest.raises(NotebookError, match="not a regular file"):
        write_notebook(out, "file.ipynb", nb)
    assert victim.read_text() == "keep me" and sorted(os.listdir(elsewhere)) == ["victim.ipynb"]
    written = write_notebook(out, "sub/ok", nb)
    assert written == out / "sub" / "ok.ipynb" and nbformat.read(written, as_version=4).cells == []
    with pytest.raises(NotebookError, match="exists"):
        write_notebook(out, "sub/ok", nb, overwrite=False)
    assert [p.name for p in (out / "sub").iterdir()] == ["ok.ipynb"]  # no temporary file left behind
    with pytest.raises(NotebookError, match="no output folder"):
        export(History(), None)


# -- through the Python API, with real Node and Pyodide -------------------------------------

DETERMINISTIC = [
    "import numpy as np\nx = np.arange(6).reshape(2, 3)\nprint('shape', x.shape)",
    "total = int(x.sum())\nprint('total', total)\ntotal * 2",
    "import sys\nprint('to stderr', file=sys.stderr)\n[n ** 2 for n in range(5)]",
    "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.show()",
    "def f(n):\n    return n + 1\nf(41)",
    "1 / 0",
]


def outputs_of(cell: Any) -> list[tuple[str, str]]:
    """What a reviewer compares: streams, results and errors (figures by kind only)."""
    found = []
    for output in cell.outputs:
        if output.output_type == "stream":
            # matplotlib says this only on a machine's first figure: the machine's state, not the session's.
            text = output.text.replace("Matplotlib is building the font cache; this may take a moment.\n", "")
            if text:
                found.append((output.name, text))
        elif output.output_type == "execute_result":
            found.append(("result", output.data["text/plain"]))
        elif output.output_type == "error":
            found.append(("error", f"{output.ename}: {output.evalue}"))
        else:
            found.append((output.output_type, ",".join(sorted(output.data))))
    return found


def test_a_session_exports_valid_and_reexecutes_to_the_same_outputs(tmp_path: Path) -> None:
    config = RuntimeConfig(package_source=str(offline_packages_dir()), timeout_ms=180_000)
    with SyncSandbox(output_dir=tmp_path / "out", config=config) as sb:
        for code in DETERMINISTIC:
            sb.execute(code)
        path = sb.export_notebook("review/session")
    assert path == (tmp_path / "out" / "review" / "session.ipynb").resolve()
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.source for c in cells] == DETERMINISTIC
    assert ("stdout", "total 15\n") in outputs_of(cells[1]) and ("result", "30") in outputs_of(cells[1])
    assert ("stderr", "to stderr\n") in outputs_of(cells[2])
    [figure] = [o for o in cells[3].outputs if o.output_type == "display_data"]
    assert base64.b64decode(figure.data["image/png"]).startswith(PNG_MAGIC)
    assert outputs_of(cells[5])[-1][0] == "error" and "ZeroDivisionError" in outputs_of(cells[5])[-1][1]
    assert "numpy" in " ".join(cells[0].metadata["mcp_pyodide"]["loaded_packages"])
    assert cells[0].metadata["mcp_pyodide"]["duration_ms"] > 0

    # Re-run the notebook's code in a fresh sandbox: the same outputs come back.
    with SyncSandbox(output_dir=tmp_path / "again", config=config) as fresh:
        for code in (c.source for c in cells):
            fresh.execute(code)
        again = to_notebook(fresh.history)
    assert [outputs_of(c) for c in again.cells] == [outputs_of(c) for c in cells]


# -- through MCP: the agent's tool, the live notebook, and a hostile session -------------------


def test_the_agent_exports_and_a_hostile_session_cannot_escape(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.png"
    secret.write_bytes(TINY_PNG + b"HOSTSECRET")
    out = tmp_path / "out"
    server = ServerHandle(
        "--policy", ALLOW_ALL, "--output-dir", str(out), "--notebook", "live.ipynb", "--max-output", "2000000"
    ).start()
    try:
        assert "pyodide_export-notebook" in [t.name for t in server.list_tools()]
        server.execute("x = 6 * 7\nx")
        live = nbformat.read(out / "live.ipynb", as_version=4)
        assert [c.source for c in live.cells] == ["x = 6 * 7\nx"]
        # A hostile session: a symlinked "figure", a huge output, names that climb out.
        server.execute(f"import os\nos.symlink({str(secret)!r}, '/mnt/output/fig.png')\nprint('y' * 1_500_000)")
        for bad in ("../escape.ipynb", "/tmp/escape.ipynb", "a/../../escape"):
            refused = server.call("pyodide_export-notebook", {"path": bad})
            assert refused.is_error and "Notebook not written" in text_of(refused)
        done = server.call("pyodide_export-notebook", {"path": "agent"})
        assert not done.is_error, text_of(done)
        assert done.structured_content == {"path": str(out / "agent.ipynb"), "cells": 2, "dropped": 0}
        again = server.call("pyodide_export-notebook", {"path": "agent"})
        assert again.is_error and "exists" in text_of(again)
        assert server.call("pyodide_export-notebook", {"path": "agent", "overwrite": True}).is_error is False
    finally:
        server.close()
    assert not (tmp_path / "escape.ipynb").exists() and not Path("/tmp/escape.ipynb").exists()
    text = (out / "agent.ipynb").read_text()
    assert "HOSTSECRET" not in text and base64.b64encode(b"HOSTSECRET").decode()[:8] not in text
    nb = nbformat.read(out / "agent.ipynb", as_version=4)
    nbformat.validate(nb)
    stdout = next(o.text for o in nb.cells[1].outputs if o.output_type == "stream")
    assert len(stdout) <= MAX_FIELD_CHARS + 100 and "more characters not kept" in stdout
