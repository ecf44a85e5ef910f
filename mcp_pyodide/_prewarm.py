"""Start-up probes run once, in a thread, while the server's modules import.

Finding Node (running each candidate's `--version`), choosing the isolation level (a
namespace probe) and checking the runtime files take a few hundred milliseconds; the
MCP SDK's imports take about as long. Overlapping them, and letting the runtime reuse
the answers instead of probing again, takes that time off every cold start.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from ._isolation import Isolation
from ._isolation import choose as choose_isolation
from ._node import NodeBinary, find_node
from ._runtime_files import RuntimeFiles, ensure_runtime
from .config import RuntimeConfig


@dataclass(frozen=True)
class Probe:
    node: NodeBinary
    isolation: Isolation
    files: RuntimeFiles


_lock = threading.Lock()
_probes: dict[tuple[str, Path | None], Future[Probe]] = {}


def begin(config: RuntimeConfig) -> Future[Probe]:
    """Start probing for `config` in a daemon thread; the future raises what the probes raised."""
    future: Future[Probe] = Future()

    def work() -> None:
        try:
            node = find_node(config.node)
            isolation = choose_isolation(node, config.isolation)
            files = ensure_runtime(node, cache_dir=config.runtime_cache_dir)
            with _lock:
                _probes[(config.isolation, config.runtime_cache_dir)] = future
            future.set_result(Probe(node, isolation, files))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
            future.set_exception(exc)

    threading.Thread(target=work, name="mcp-pyodide-probe", daemon=True).start()
    return future


def done_for(config: RuntimeConfig) -> Probe | None:
    """A finished probe that answers for `config` (same Node path, isolation and runtime folder)."""
    with _lock:
        future = _probes.get((config.isolation, config.runtime_cache_dir))
    if future is None or not future.done() or future.exception() is not None:
        return None
    probe = future.result()
    return probe if config.node in (None, probe.node.path) else None
