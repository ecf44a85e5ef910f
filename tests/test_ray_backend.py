"""`--backend ray` on a real two-node local Ray cluster, in a network namespace of the test's own.

Ray binds its cluster services to the machine's own address, not loopback, and a
driver given 127.0.0.1 still dials that address. So the cases (tests/ray_cases.py)
run in a fresh user + network namespace made here with `unshare -rn`, where the only
interface is loopback: every connection the cluster makes stays on 127.0.0.1.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def loopback_only() -> bool:
    return {name for _, name in socket.if_nameindex()} <= {"lo"}


def test_the_ray_backend_cases_pass_in_a_loopback_only_namespace() -> None:
    cases = ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "ray_cases.py")]
    if loopback_only():
        command = [sys.executable, *cases]
    else:
        inner = " ".join([sys.executable, *cases])
        command = ["unshare", "-rn", "sh", "-c", f"ip link set lo up && exec {inner}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"ray cases failed:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    assert " passed" in done.stdout and " failed" not in done.stdout, done.stdout[-2000:]
