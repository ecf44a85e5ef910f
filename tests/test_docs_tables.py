"""Tables in the docs that list tools or options are checked against the code, so they cannot drift.

- Every table whose first column is headed `Tool` (README.md, docs/*.md) lists exactly the tools
  the server defines, each once.
- The table in docs/tools.md is generated from the tool definitions; on a mismatch this test
  prints the table to paste.
- Every `--option` in a table whose first column is headed `Option` exists in the program it
  documents (mcp-pyodide's parsers; for docs/benchmarks.md, benchmarks/run.py), and every
  environment variable named there is read somewhere in mcp_pyodide.
- A table marked `<!-- complete: mcp-pyodide serve options -->` lists every serve option.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from mcp_pyodide.cli import build_parser
from mcp_pyodide.config import RuntimeConfig
from mcp_pyodide.server.run import build_tools
from mcp_pyodide.tool_names import ToolName

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMPLETE_SERVE = "<!-- complete: mcp-pyodide serve options -->"
TOOLS_MARKER = "<!-- generated from the tool definitions: tests/test_docs_tables.py checks it -->"
OTHER_PROGRAMS = {"docs/benchmarks.md": REPO / "benchmarks" / "run.py"}
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
_ENV = re.compile(r"\b((?:MCP_)?PYODIDE_[A-Z_]+)\b")


@dataclass
class Table:
    path: Path
    line: int
    marker: str  # the line just before the table (blank lines skipped), e.g. an HTML comment
    header: list[str]
    rows: list[list[str]]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in _CELL_SPLIT.split(line.strip().strip("|"))]


def tables(path: Path) -> list[Table]:
    found: list[Table] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|[\s:|-]+\|?", lines[i + 1].strip()):
            before = next((text.strip() for text in reversed(lines[:i]) if text.strip()), "")
            start, header, i = i, cells(lines[i]), i + 2
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(cells(lines[i]))
                i += 1
            found.append(Table(path, start + 1, before, header, rows))
        else:
            i += 1
    return found


def all_tables(first_header: str) -> list[Table]:
    return [t for path in DOCS for t in tables(path) if t.header and t.header[0] == first_header]


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of a parser and of all its subcommands."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= option_strings(sub)
    return found


def serve_parser() -> argparse.ArgumentParser:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices["serve"]
    raise AssertionError("no serve subcommand")


# -- tools ------------------------------------------------------------------------------------


def test_every_tool_name_has_exactly_one_definition() -> None:
    names = [spec.name for spec in build_tools(RuntimeConfig(), ())]
    assert sorted(names) == sorted(ToolName) and len(names) == len(set(names))


def test_every_tools_table_lists_exactly_the_tools() -> None:
    found = all_tables("Tool")
    assert found, "no docs table lists the tools"
    for table in found:
        names = [name for row in table.rows for name in re.findall(r"`([^`]+)`", row[0])]
        assert sorted(names) == sorted(ToolName), f"{table.where}: {names}"


def render_tools_table() -> str:
    rows = ["| Tool | Arguments | Read-only | What it does |", "| --- | --- | --- | --- |"]
    for spec in build_tools(RuntimeConfig(), ()):
        fields = spec.arguments.model_fields
        arguments = ", ".join(
            f"`{name}`" + ("" if field.is_required() else " (optional)") for name, field in fields.items()
        )
        read_only = "yes" if spec.annotations.read_only_hint else "no"
        rows.append(f"| `{spec.name}` | {arguments or 'none'} | {read_only} | {spec.title} |")
    return "\n".join(rows)


def test_docs_tools_table_is_generated_from_the_definitions() -> None:
    text = (REPO / "docs" / "tools.md").read_text(encoding="utf-8")
    assert TOOLS_MARKER in text
    table = text.split(TOOLS_MARKER, 1)[1].strip().split("\n\n", 1)[0].strip()
    expected = render_tools_table()
    assert table == expected, f"docs/tools.md is out of date; the table should read:\n\n{expected}\n"


# -- options ----------------------------------------------------------------------------------


def documented_flags(table: Table) -> list[str]:
    return [flag for row in table.rows for flag in _FLAG.findall(row[0])]


@pytest.mark.parametrize("table", all_tables("Option"), ids=lambda t: t.where)
def test_every_documented_option_exists(table: Table) -> None:
    other = OTHER_PROGRAMS.get(str(table.path.relative_to(REPO)))
    if other is not None:
        source = other.read_text(encoding="utf-8")
        missing = [flag for flag in documented_flags(table) if f'"{flag}"' not in source]
    else:
        known = option_strings(build_parser())
        missing = [flag for flag in documented_flags(table) if flag not in known]
        source = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "mcp_pyodide").rglob("*.py"))
        missing += [name for row in table.rows for name in _ENV.findall(row[0]) if f'"{name}"' not in source]
    assert not missing, f"{table.where} documents options the program does not have: {missing}"


def test_the_complete_serve_options_table_lists_every_option() -> None:
    complete = [t for t in all_tables("Option") if t.marker == COMPLETE_SERVE]
    assert complete, f"no options table is marked {COMPLETE_SERVE}"
    actual = option_strings(serve_parser()) - {"--help"}
    for table in complete:
        documented = set(documented_flags(table))
        assert documented == actual, (
            f"{table.where}: missing {sorted(actual - documented)}, not options {sorted(documented - actual)}"
        )
