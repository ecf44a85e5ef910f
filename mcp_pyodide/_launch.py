"""How the Node process is started: which Node, which files it may touch, its flags and fences.

Every file grant is decided in `grants()` and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import _bytecode, _caches, _prewarm
from ._isolation import Isolation, child_setup
from ._isolation import choose as choose_isolation
from ._node import NodeBinary, find_node
from ._paths import cache_root
from ._protocol import PROTOCOL_VERSION, GuestOptions, InitRequest, MountSpec
from ._runtime_files import RuntimeFiles, ensure_runtime
from .config import RuntimeConfig
from .mounts import GUEST_ROOT, OUTPUT_NAME, MountError
from .packages.cache import default_cache_dir
from .packages.trees import trees_dir

OUTPUT_GUEST_PATH = f"{GUEST_ROOT}/{OUTPUT_NAME}"
node_log = logging.getLogger("mcp_pyodide.node")


async def pump_stderr(stream: asyncio.StreamReader, level: int = logging.INFO, prefix: str = "") -> None:
    """A Node process's stderr, line by line, into the log (the process's own messages)."""
    while line := await stream.readline():
        node_log.log(level, "%s%s", prefix, line.decode("utf-8", "replace").rstrip())


def _outermost(paths: list[Path]) -> list[Path]:
    """`paths` without repeats and without those inside another one: a grant covers everything
    below it, and Node's permission model refused reads below a folder granted after a path
    inside it (a read-only mount of `~/.cache` crashed the interpreter at boot)."""
    kept: list[Path] = []
    for path in sorted(paths, key=lambda p: len(Path(os.path.abspath(p)).parts)):
        absolute = Path(os.path.abspath(path))
        if not any(absolute.is_relative_to(os.path.abspath(outer)) for outer in kept):
            kept.append(path)
    return kept


@dataclass(frozen=True)
class Launch:
    """Everything needed to start one Node process for `config`."""

    config: RuntimeConfig
    node: NodeBinary
    isolation: Isolation
    files: RuntimeFiles
    snapshot_file: Path
    helper: bool = False  # one of the broker's own runtimes: it may write its bytecode staging folder

    @property
    def package_cache_dir(self) -> Path:
        return self.config.package_cache_dir or default_cache_dir()

    def shared(self) -> list[Path]:
        """What every server on the machine reads: the runtime's files and the caches."""
        paths = [*self.files.readable_paths(), self.package_cache_dir, self.snapshot_file.parent]
        paths.append(_caches.mpl_config_dir())
        if self.config.use_bytecode_cache:
            paths.append(_bytecode.tree_dir())
        if self.config.use_package_trees:
            paths.append(trees_dir())
        return paths

    def grants(self) -> tuple[list[Path], list[Path]]:
        """(readable, writable) host paths."""
        readable = self.shared()
        writable: list[Path] = []
        for mount in self.config.mounts:
            readable.append(mount.host_path)
            if not mount.read_only:
                writable.append(mount.host_path)
        if self.config.output_dir is not None:
            writable.append(self.config.output_dir)
        readable.extend(path for path in writable if path not in readable)
        return _outermost(readable), _outermost(writable)

    def check_writable(self) -> None:
        """Refuse a read-write mount or output folder inside a cache every server shares.

        Python could otherwise rewrite what other sessions load (compiled modules, wheels, the
        snapshot, the runtime's scripts). Only the bytecode builder writes there: its own staging
        folder. A read-write folder that *holds* the cache root is the user's explicit grant of
        everything below it, and is left to them (SECURITY.md).
        """
        shared = [folder.expanduser().resolve() for folder in (cache_root(), *self.shared())]
        staging = (_bytecode.cache_dir() / "staging").resolve()
        for path in self.grants()[1]:
            host = path.resolve()
            if self.helper and host.parent == staging:
                continue
            for folder in shared:
                if host.is_relative_to(folder):
                    raise MountError(
                        f"{path} is inside {folder}, a cache shared by every server on this machine: "
                        "it cannot be a read-write mount or the output folder (mount it read-only)"
                    )

    def command(self) -> list[str]:
        """The exact command line, with the permission flags that fence Node in."""
        readable, writable = self.grants()
        return [
            self.node.path,
            self.node.permission_flag,
            *(f"--allow-fs-read={path}" for path in readable),
            *(f"--allow-fs-write={path}" for path in writable),
            "--allow-worker",
            "--disallow-code-generation-from-strings",
            # Python lives in wasm memory; a small JS young generation saves 10-20 MiB per process.
            "--max-semi-space-size=1",
            "--no-warnings",
            str(self.files.host_script),
        ]

    def _child_setup(self) -> Callable[[], None] | None:
        if not sys.platform.startswith("linux"):
            return None
        readable, writable = self.grants()
        return child_setup(self.isolation, self.node, readable, writable)

    async def spawn(self) -> asyncio.subprocess.Process:
        self.package_cache_dir.mkdir(parents=True, exist_ok=True)
        _caches.mpl_config_dir().mkdir(parents=True, exist_ok=True)
        if self.config.use_bytecode_cache:
            _bytecode.tree_dir().mkdir(parents=True, exist_ok=True)
        if self.config.use_package_trees:
            trees_dir().mkdir(parents=True, exist_ok=True)
        self.snapshot_file.parent.mkdir(parents=True, exist_ok=True)
        return await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(NODE_ENV),
            cwd=str(self.files.host_dir),
            start_new_session=True,
            preexec_fn=self._child_setup(),
            limit=2**20,
        )

    def init_request(self, *, make_snapshot: bool = False) -> InitRequest:
        """What the Node process is told at start; only `_snapshot_maker` asks for a snapshot."""
        config = self.config
        use_snapshot = config.use_snapshot
        mounts = [MountSpec(m.guest_path, str(m.host_path), m.read_only) for m in config.mounts]
        if config.output_dir is not None:
            mounts.append(MountSpec(OUTPUT_GUEST_PATH, str(config.output_dir), False))
        pyodide_dir = self.files.pyodide_dir
        return InitRequest(
            protocol_version=PROTOCOL_VERSION,
            pyodide_dir=str(pyodide_dir) + os.sep,
            pyodide_module=(pyodide_dir / "pyodide.mjs").as_uri(),
            package_cache_dir=str(self.package_cache_dir),
            guest_modules=_caches.guest_modules(),
            guest_options=GuestOptions(output_dir=OUTPUT_GUEST_PATH if config.output_dir else None),
            mounts=mounts,
            mpl_config_dir=str(_caches.mpl_config_dir()),
            memory_limit_bytes=config.memory_limit_mb * 1024 * 1024,
            max_output_chars=config.max_output_chars,
            grace_ms=config.grace_ms,
            snapshot_path=str(self.snapshot_file) if use_snapshot else None,
            make_snapshot=use_snapshot and make_snapshot,
            spare_interpreter=config.spare_interpreter,
            bytecode_dir=str(_bytecode.tree_dir()) if config.use_bytecode_cache else None,
            bytecode_stdlib=_bytecode.stdlib_name(pyodide_dir) if config.use_bytecode_cache else None,
            package_trees_dir=str(trees_dir()) if config.use_package_trees else None,
        )


# Node runs with nothing of ours in its environment but this. glibc's malloc raises its trim
# threshold as big blocks are freed (V8's compilation zones at boot are), so about 20 MiB the
# boot freed stayed in every Node process; a fixed 1 MiB threshold hands it back. Other C
# libraries ignore the variable.
NODE_ENV = {"MALLOC_TRIM_THRESHOLD_": str(1 << 20)}


async def prepare(config: RuntimeConfig, *, helper: bool = False) -> Launch:
    """Find Node, choose the isolation level and make sure the runtime files are installed."""
    probe = _prewarm.done_for(config)
    if probe is not None:  # the CLI found these while the server imported
        node, isolation, files = probe.node, probe.isolation, probe.files
    else:
        node = await asyncio.to_thread(find_node, config.node)
        isolation = await asyncio.to_thread(choose_isolation, node, config.isolation)
        files = await asyncio.to_thread(ensure_runtime, node, cache_dir=config.runtime_cache_dir)
    snapshot = await asyncio.to_thread(_caches.snapshot_file, files.host_dir, node.major)
    launch = Launch(config, node, isolation, files, snapshot, helper)
    launch.check_writable()
    return launch
