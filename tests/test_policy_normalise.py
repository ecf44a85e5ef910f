"""Package-name rules apply to what will really be installed: no dodging by case, separators or pins."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from support import ServerHandle, offline_packages_dir, text_of

from mcp_pyodide.policy import PolicyEngine, parse_policy
from mcp_pyodide.server.packages import InstallArgs
from mcp_pyodide.tool_names import ToolName

INSTALL = ToolName.INSTALL_PACKAGES.value
POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "tools": {
        INSTALL: {
            "deny_if": [{"path": "package", "op": "equals", "value": "numpy", "reason": "no numpy"}],
            "require": [
                {"path": "package", "op": "in", "value": ["numpy", "six", "python-dateutil"], "reason": "not listed"}
            ],
        }
    },
}


# -- fast: the normalisation and the per-name conditions --------------------------------------


@pytest.mark.parametrize(
    ("given", "names"),
    [
        ("NumPy", ["numpy"]),
        ("numpy, requests", ["numpy", "requests"]),
        ("numpy requests", ["numpy", "requests"]),
        ("six\tNUMPY\n", ["six", "numpy"]),
        ("numpy,,numpy Numpy", ["numpy"]),
        ("Prompt.Toolkit prompt_toolkit", ["prompt-toolkit"]),
        ("python_dateutil", ["python-dateutil"]),
    ],
)
def test_package_argument_is_split_and_normalised(given: str, names: list[str]) -> None:
    assert InstallArgs.model_validate({"package": given}).package == names


@pytest.mark.parametrize(
    "given", ["", " , ", "numpy==2.0.2", "numpy>=1", "requests[socks]", "https://example.org/x.whl", "x;y", "a\u202eb"]
)
def test_anything_but_bare_names_is_refused(given: str) -> None:
    with pytest.raises(ValueError):
        InstallArgs.model_validate({"package": given})


def test_input_schema_still_asks_for_one_string() -> None:
    schema = InstallArgs.model_json_schema()
    assert schema["properties"]["package"]["type"] == "string"


def decide(engine: PolicyEngine, package: str) -> str:
    args = InstallArgs.model_validate({"package": package}).model_dump(mode="json")
    decision = engine.decide_now(INSTALL, args, "s")
    return "allow" if decision.allowed else decision.message


def test_rules_see_every_name_one_at_a_time() -> None:
    engine = PolicyEngine(parse_policy(POLICY, "p.json"), clock=lambda: 0.0)
    for dodge in ("NumPy", "six, numpy", "six numpy", "SIX\tNUMPY", "numpy,numpy"):
        assert "no numpy" in decide(engine, dodge), dodge
    assert "not listed" in decide(engine, "six requests")
    assert decide(engine, "SIX python_dateutil") == "allow"


def test_whole_list_operators_still_see_the_list() -> None:
    policy = {
        "version": "1",
        "tools": {
            INSTALL: {
                "require": [{"path": "package", "op": "max_length", "value": 2, "reason": "two at most"}],
                "deny_if": [{"path": "package", "op": "contains", "value": "requests", "reason": "no requests"}],
            }
        },
    }
    engine = PolicyEngine(parse_policy(policy, "p.json"), clock=lambda: 0.0)
    assert decide(engine, "six numpy") == "allow"
    assert "two at most" in decide(engine, "six numpy pandas")
    assert "no requests" in decide(engine, "Requests")


# -- through the real MCP client --------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    base = tmp_path_factory.mktemp("normalise")
    policy = base / "policy.json"
    policy.write_text(json.dumps(POLICY))
    handle = ServerHandle(
        "--policy",
        str(policy),
        "--package-source",
        str(offline_packages_dir()),
        "--cache-dir",
        str(base / "cache"),
    ).start()
    try:
        yield handle
    finally:
        handle.close()


@pytest.mark.parametrize("dodge", ["NumPy", "numpy, six", "six numpy", "six\tNUMPY", "nUmPy,"])
def test_a_rule_on_numpy_cannot_be_dodged(server: ServerHandle, dodge: str) -> None:
    result = server.call(INSTALL, {"package": dodge})
    assert result.is_error
    assert text_of(result).startswith(f"[POLICY DENIED] {INSTALL}: no numpy"), text_of(result)


def test_an_allowlist_applies_to_every_name(server: ServerHandle) -> None:
    result = server.call(INSTALL, {"package": "six requests"})
    assert result.is_error and "not listed" in text_of(result), text_of(result)


def test_a_version_pin_or_url_is_refused_as_an_invalid_argument(server: ServerHandle) -> None:
    for given in ("numpy==2.0.2", "https://files.pythonhosted.org/numpy.whl"):
        result = server.call(INSTALL, {"package": given})
        assert result.is_error and "is not a package name" in text_of(result), text_of(result)


def test_refused_names_were_never_installed_and_allowed_ones_are(server: ServerHandle) -> None:
    result = server.call(INSTALL, {"package": "SIX, six"})
    assert not result.is_error, text_of(result)
    assert [p["name"] for p in result.structured_content["packages"]] == ["six"]  # type: ignore[index]
    loaded = server.execute("import importlib.util\n[m for m in ('numpy', 'six') if importlib.util.find_spec(m)]")
    assert loaded.structured_content["result"] == "['six']", text_of(loaded)  # type: ignore[index]


def test_normalised_names_still_get_import_name_hints() -> None:
    from mcp_pyodide.packages import UnknownPackageError, load_lock

    lock = load_lock(offline_packages_dir() / "pyodide-lock.json")
    for given, hint in (("PIL", "pillow"), ("Prompt_Toolkit", None), ("sklearn", "scikit-learn")):
        (name,) = InstallArgs.model_validate({"package": given}).package
        try:
            lock.resolve([name])
        except UnknownPackageError as exc:
            assert exc.hints == {name: hint}
        else:
            assert hint is None, given
