"""`mcp-pyodide doctor`: check, one line each, everything the server needs, then run `1 + 1` for real.

Most set-up problems (no Node, an old Node, a broken runtime install, an
unwritable folder, a typo in a policy file) otherwise show up as a client
saying "server disconnected". Each check prints a mark, a name and what it
found; a failure adds how to fix it. Network problems reaching the package
source are warnings: the server runs without them until code imports a
package that is not cached yet. Exit status 0 when the server can serve.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TextIO

from .. import __version__
from ..config import RuntimeConfig
from ..mounts import MountError
from .doctor_checks import (
    Check,
    check_folders,
    check_isolation,
    check_node,
    check_package_cache,
    check_package_source,
    check_policy,
    check_runtime,
    check_smoke,
)

MARKS = {"ok": "✓", "warn": "!", "fail": "✗"}
ASCII_MARKS = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


class Report:
    """Prints each check as it finishes, so a slow step is visible while it runs."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "")
        self.marks = MARKS if encoding in ("utf8", "utf8sig") else ASCII_MARKS
        self.checks: list[Check] = []

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        print(f"{self.marks[check.status]} {check.name}: {check.detail}", file=self.out)
        for note in check.notes:
            print(f"    {note}", file=self.out)
        if check.fix and check.status != "ok":
            print(f"    how to fix: {check.fix}", file=self.out)
        self.out.flush()
        return check

    @property
    def failed(self) -> bool:
        return any(c.status == "fail" for c in self.checks)


def add_parser(sub: Any, add_options: Callable[[argparse.ArgumentParser], None]) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check Node, the runtime, folders, policy and isolation, then run 1+1 in a sandbox",
        description="Check everything the server needs with the same options it would get; exit 0 when it can serve.",
    )
    add_options(doctor)


def run(
    args: argparse.Namespace,
    runtime_config: Callable[[argparse.Namespace], RuntimeConfig],
    mount_config: Callable[[argparse.Namespace], Any],
    out: TextIO | None = None,
) -> int:
    report = Report(out or sys.stdout)
    print(f"mcp-pyodide {__version__} doctor (Python {sys.version.split()[0]} at {sys.executable})", file=report.out)
    node_check, node = check_node(args.node)
    report.add(node_check)
    try:
        config: RuntimeConfig | None = runtime_config(args)
    except (MountError, ValueError):
        config = None  # the folder checks below say what is wrong
    base = config or RuntimeConfig(
        node=args.node, package_source=args.package_source, package_cache_dir=args.cache_dir, isolation=args.isolation
    )
    runtime_ok = False
    if node is not None:
        runtime_check, _files = check_runtime(node, base)
        runtime_ok = report.add(runtime_check).status == "ok"
    report.add(check_package_cache(base))
    report.add(check_package_source(base))
    for check in check_folders(args, mount_config):
        report.add(check)
    report.add(check_policy(args))
    if node is not None:
        report.add(check_isolation(node, base))
    if node is not None and runtime_ok and config is not None and not report.failed:
        report.add(check_smoke(replace(config, node=node.path)))
    else:
        report.add(Check("smoke test", "fail", "skipped: fix the failures above first"))
    if report.failed:
        print("\nSome checks failed; the server cannot serve until they are fixed.", file=report.out)
        return 1
    print("\nAll set: the server can serve.", file=report.out)
    return 0
