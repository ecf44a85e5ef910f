"""The pytest plugin, as a user meets it: a small test file in a fresh pytest run (pytester)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
def test_sandbox(pyodide_sandbox):
    assert pyodide_sandbox.execute("sum(range(5))").value == "10"

def test_mcp(pyodide_mcp):
    assert pyodide_mcp.execute("6 * 7").structured_content["result"] == "42"
"""


def test_fixtures_work_in_a_user_test_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_options_fixtures_can_be_overridden(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
import pytest

@pytest.fixture
def pyodide_sandbox_options(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("hello")
    from mcp_pyodide import Mount, RuntimeConfig
    return {"mounts": [Mount.create("data", tmp_path / "data", read_only=True)],
            "output_dir": tmp_path / "out", "config": RuntimeConfig(timeout_ms=2000)}

@pytest.fixture
def pyodide_server_args(tmp_path):
    return ["--output-dir", str(tmp_path / "out"), "--policy", "deny.json"]
"""
    )
    pytester.makefile(".json", deny='{"version": "1", "default": "deny", "tools": {}}')
    pytester.makepyfile(
        test_user="""
def test_mount(pyodide_sandbox):
    assert pyodide_sandbox.execute("open('/mnt/data/x.txt').read()").value == "'hello'"
    assert pyodide_sandbox.execute("while True: pass").timed_out

def test_policy(pyodide_mcp):
    result = pyodide_mcp.execute("1")
    assert result.is_error and "[POLICY DENIED]" in pyodide_mcp.text(result)
    assert "pyodide_execute" in [tool.name for tool in pyodide_mcp.list_tools()]
"""
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
