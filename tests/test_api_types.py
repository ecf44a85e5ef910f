"""The public API's types: one exception tree, typed return values, no broker residue in user globals."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import mcp_pyodide
from mcp_pyodide import InterpreterInfo, SyncSandbox
from mcp_pyodide.sandbox import private_cell


def test_every_exported_exception_derives_from_the_base() -> None:
    exported = [getattr(mcp_pyodide, name) for name in mcp_pyodide.__all__ if not name.startswith("_")]
    errors = [v for v in exported if isinstance(v, type) and issubclass(v, BaseException)]
    assert len(errors) >= 10
    assert all(issubclass(e, mcp_pyodide.MCPPyodideError) for e in errors), errors
    # ErrorInfo is data about the user's exception, not something to raise.
    assert not issubclass(mcp_pyodide.ErrorInfo, BaseException)
    assert "ExecutionError" not in mcp_pyodide.__all__


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SyncSandbox]:
    with SyncSandbox() as sb:
        yield sb


def user_names(sb: SyncSandbox) -> list[str]:
    result = sb.execute("sorted(k for k in globals() if not k.startswith('__'))")
    assert result.ok, result.error
    return list(json.loads(str(result.value).replace("'", '"')))


def test_a_private_cell_leaves_nothing_in_the_users_globals(sandbox: SyncSandbox) -> None:
    sandbox.execute("mine = 41")
    before = user_names(sandbox)
    sandbox.execute("mine + 1")  # `_` is now 42
    source = (
        "async def main():\n"
        "    import json\n"
        "    _names, _errors, _have = ['a'], {}, {}\n"
        "    print(json.dumps({'errors': _errors, 'have': _have}))\n"
    )
    result = sandbox.execute(private_cell(source))
    assert result.ok, result.error
    assert json.loads(result.stdout.strip()) == {"errors": {}, "have": {}}
    assert result.value is None
    assert sandbox.execute("(mine, _)").value == "(41, 42)"
    assert user_names(sandbox) == sorted([*before, "_"])  # `_` is the user's own, from `mine + 1`


def test_reset_returns_a_typed_value(sandbox: SyncSandbox) -> None:
    info = sandbox.reset()
    assert isinstance(info, InterpreterInfo)
    assert info.pyodide_version == "0.27.7" and info.generation >= 2
    assert sandbox.execute("'mine' in globals()").value == "False"
