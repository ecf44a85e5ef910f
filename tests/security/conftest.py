"""Fixtures for the red-team suite; see sec_support.py for what is checked after every test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from sec_support import ALLOW_ALL, SECRET, SECRET_NAME, Host, Sandbox, ServerHandle


@pytest.fixture(scope="session")
def host() -> Iterator[Host]:
    h = Host()
    try:
        yield h
    finally:
        h.listener.close()
        shutil.rmtree(h.dir, ignore_errors=True)


def _start(host: Host, *extra: str) -> ServerHandle:
    return ServerHandle("--policy", ALLOW_ALL, "--grace", "500", *extra, env={SECRET_NAME: SECRET}).start()


@pytest.fixture(scope="module")
def sandbox(request: pytest.FixtureRequest, host: Host) -> Iterator[Sandbox]:
    """One server per module; a module may set SERVER_ARGS (e.g. a smaller memory cap)."""
    handle = _start(host, *getattr(request.module, "SERVER_ARGS", ()))
    try:
        yield Sandbox(handle, host)
    finally:
        handle.close()


@pytest.fixture
def fresh_sandbox(request: pytest.FixtureRequest, host: Host) -> Iterator[Sandbox]:
    handle = _start(host, *getattr(request.module, "SERVER_ARGS", ()))
    try:
        yield Sandbox(handle, host)
    finally:
        handle.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"_sec_rep_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def _host_untouched(request: pytest.FixtureRequest, host: Host) -> Iterator[None]:
    host.assert_untouched()
    yield
    host.assert_untouched()
    # A vector that broke the shared interpreter must not cascade into the next vectors.
    report = getattr(request.node, "_sec_rep_call", None)
    if report is not None and report.failed and "sandbox" in request.fixturenames:
        sandbox: Sandbox = request.getfixturevalue("sandbox")
        try:
            sandbox.reset()
        except Exception:  # noqa: BLE001 - the next test will show what is wrong
            pass
