"""The docs say each thing once and agree with the code: tool and option tables are checked here."""

from __future__ import annotations

import re
from pathlib import Path

from support import REPO

from mcp_pyodide._node import SUPPORTED
from mcp_pyodide.cli import add_serve_options, add_transport_options
from mcp_pyodide.config import RuntimeConfig
from mcp_pyodide.server import make_state
from mcp_pyodide.tool_names import ToolName

README = (REPO / "README.md").read_text()
DOCS = {path.name: path.read_text() for path in (REPO / "docs").glob("*.md")}


def table_rows(text: str, heading: str) -> list[str]:
    """The first cell of each row of the first table after `heading`."""
    section = text[text.index(heading) + len(heading) :]
    end = section.find("\n## ")
    rows = re.findall(r"^\| (.+?) \|", section if end == -1 else section[:end], re.M)
    return [row for row in rows if not set(row) <= {"-", " "} and row not in ("Tool", "Option", "Measure")]


def serve_options() -> set[str]:
    import argparse

    parser = argparse.ArgumentParser()
    add_serve_options(parser)
    add_transport_options(parser)
    return {s for action in parser._actions for s in action.option_strings if s.startswith("--") and s != "--help"}


def test_the_readme_tools_table_is_every_tool_the_server_offers(tmp_path: Path) -> None:
    listed = [re.sub(r"`", "", row) for row in table_rows(README, "## Tools")]
    served = list(make_state(RuntimeConfig(output_dir=tmp_path)).tools)
    assert sorted(listed) == sorted(served) == sorted(ToolName)


def test_the_readme_top_options_are_real_options() -> None:
    """The complete table lives in docs/options.md (tests/test_docs_tables.py checks it)."""
    known = serve_options()
    top = {re.findall(r"`(--[a-z-]+)", row)[0] for row in table_rows(README, "## Top options")}
    assert top <= known, top - known


def test_the_readme_says_which_node_the_code_accepts() -> None:
    assert SUPPORTED in README
    for name, text in DOCS.items():
        assert "Node.js 22 or 24" not in text, name


def test_nothing_is_said_twice_and_no_machine_paths() -> None:
    long_lines = {line.strip() for line in README.splitlines() if len(line.strip()) > 70 and not line.startswith("|")}
    for name, text in DOCS.items():
        repeated = long_lines & {line.strip() for line in text.splitlines()}
        assert not repeated, f"README lines repeated in docs/{name}: {sorted(repeated)[:3]}"
    assert not re.search(r"(/work|/home|/root|/usr)/\S*bin/python", DOCS["benchmarks.md"])
    assert len(README.splitlines()) < 200
