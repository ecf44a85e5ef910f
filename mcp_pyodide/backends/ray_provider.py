"""`--backend ray`: each session's interpreter is a named, detached Ray actor, so any front-end serves any handle.

The actor is named by a digest of the handle (never the handle itself) in one
namespace; a front-end finds it with `ray.get_actor` or creates it, declaring
its CPU and memory so Ray places it. Ray decides placement and restarts; this
module only proxies the calls the tools make and re-checks every answer with
the same bounds the local broker uses (the actor's node is trusted to run the
sandbox, not to say anything the front-end would act on unchecked).

Every wait on Ray is bounded. An actor that died (its node went away, its
process crashed) or stopped answering is recorded in Ray's KV store as having
existed, so the session's next call, through any front-end, starts a fresh
actor and says so (`state_reset`). Figures and files come back as bytes
(capped on both sides) and are written to the session's output sub-folder
here, so results link and inline them as with the local backend; the file
tools see that copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any, cast

from .._outputs import MAX_RETURNED, PNG_SIGNATURE
from .._protocol import ErrorInfo, cut
from ..config import RuntimeConfig
from ..errors import MCPPyodideError, RuntimeUnavailable
from ..mounts import Mount, with_output
from ..notebook import DEFAULT_NAME, NotebookError, check_name, write_notebook
from ..result import InterpreterInfo, PackageOutcome, Result
from ..sandbox import Sandbox
from ..server.handles import Handle, HandleRegistry, InMemoryHandles
from ..server.sessions import SandboxProvider
from .ray_actor import (
    KV_NAMESPACE,
    MAX_FILE_BYTES,
    MAX_NOTEBOOK_CHARS,
    MAX_RESULT_BYTES,
    SandboxActor,
    kv_key,
    marker_fresh,
    marker_value,
)

log = logging.getLogger("mcp_pyodide.server")

MAX_SWEEP = 1000
"""Markers looked at in one sweep (the rest at the next)."""
LOOKUP_TIMEOUT_S = 20.0
"""Finding or creating an actor (Ray's control plane answers in milliseconds when healthy)."""
CALL_MARGIN_S = 120.0
"""Added to a run's own timeout: the actor may first boot Node and Pyodide, or load packages."""
GONE = (
    "this session's interpreter (a Ray actor) is gone: its node or process ended; this call started a fresh "
    "one, variables and imports are gone"
)


def actor_name(handle_id: str) -> str:
    """The actor's Ray name: a one-way digest, so Ray's dashboard and logs never show the handle."""
    return "mcp-pyodide-" + hashlib.sha256(b"mcp-pyodide ray actor:" + handle_id.encode()).hexdigest()[:32]


class RaySandboxes(SandboxProvider):
    """Session interpreters as Ray actors; this process keeps nothing a replica would need."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        idle_timeout_s: float = 900.0,
        handles: HandleRegistry | None = None,
        address: str | None = None,
        namespace: str = "mcp-pyodide",
        num_cpus: float = 1.0,
        memory_bytes: int = 512 * 1024 * 1024,
        resources: dict[str, float] | None = None,
    ) -> None:
        import ray

        self.config = config
        self.idle_timeout_s = idle_timeout_s
        self.handles = handles if handles is not None else InMemoryHandles(idle_timeout_s)
        self.namespace = namespace
        self._options: dict[str, Any] = {"num_cpus": num_cpus, "memory": memory_bytes, "resources": resources or {}}
        self._lost: dict[str, str] = {}  # handle id -> why its actor was lost, seen by this front-end
        self._notes: dict[str, str] = {}
        self._swept = 0.0  # when this front-end last swept stale markers (wall clock)
        if not ray.is_initialized():
            ray.init(address=address, namespace=namespace, log_to_driver=False)

    def output_dir_for(self, handle: Handle) -> Path | None:
        if self.config.output_dir is None:
            return None
        return self.config.output_dir / f".session-{handle.folder}"

    def mounts_for(self, handle: Handle) -> tuple[Mount, ...] | None:
        output_dir = self.output_dir_for(handle)
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            output_dir = output_dir.resolve()
        return with_output((), output_dir)

    async def get(self, handle: Handle) -> Sandbox:
        # The tools use a small part of Sandbox's API; RemoteSandbox provides exactly that part.
        return cast(Sandbox, RemoteSandbox(self, handle))

    def _sweep_markers(self, now: float) -> None:
        """Drop the markers of actors that died and whose handle expired (at most once per idle timeout)."""
        from ray.experimental import internal_kv

        if now - self._swept < self.idle_timeout_s:
            return
        self._swept = now
        for key in internal_kv._internal_kv_list(b"started:", namespace=KV_NAMESPACE)[:MAX_SWEEP]:
            value = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
            if not marker_fresh(value, now, self.idle_timeout_s):
                internal_kv._internal_kv_del(key, namespace=KV_NAMESPACE)

    def take_reset_note(self, session_id: str) -> str | None:
        return self._notes.pop(session_id, None)

    async def actor(self, handle: Handle) -> Any:
        """The session's actor, created (and placed by Ray) when it has none."""
        import ray
        from ray.experimental import internal_kv

        name = actor_name(handle.id)
        idle = self.idle_timeout_s

        def find_or_create() -> tuple[Any, bool]:
            try:
                return ray.get_actor(name, namespace=self.namespace), False
            except ValueError:
                pass
            now = time.time()
            self._sweep_markers(now)
            had_one = marker_fresh(internal_kv._internal_kv_get(kv_key(name), namespace=KV_NAMESPACE), now, idle)
            remote = ray.remote(SandboxActor).options(
                name=name,
                namespace=self.namespace,
                lifetime="detached",
                max_restarts=0,
                get_if_exists=True,
                **self._options,
            )
            created = remote.remote(self.config, self.idle_timeout_s, name)
            internal_kv._internal_kv_put(kv_key(name), marker_value(now), namespace=KV_NAMESPACE)
            return created, had_one

        try:
            found, lost = await asyncio.wait_for(asyncio.to_thread(find_or_create), LOOKUP_TIMEOUT_S)
        except TimeoutError as exc:
            raise RuntimeUnavailable(f"the Ray cluster did not answer within {LOOKUP_TIMEOUT_S:.0f} s") from exc
        reason = self._lost.pop(handle.id, None)
        if reason is not None or lost:
            self._notes[handle.id] = reason or GONE
        return found

    async def call(self, handle: Handle, method: str, args: tuple[Any, ...], timeout_s: float) -> Any:
        """One actor method, bounded in time; a dead or silent actor is recorded and reported."""
        import ray
        from ray.exceptions import RayActorError

        actor = await self.actor(handle)
        try:
            return await asyncio.wait_for(getattr(actor, method).remote(*args), timeout_s)
        except RayActorError as exc:
            why = f"this session's interpreter (a Ray actor) died ({type(exc).__name__})"
        except TimeoutError:
            why = f"this session's interpreter (a Ray actor) did not answer within {timeout_s:.0f} s and was ended"
            await asyncio.to_thread(_kill, ray, actor)
        log.warning("session %s: %s", handle.label, why)
        self._lost[handle.id] = f"{why}; variables and imports are gone"
        raise RuntimeUnavailable(f"{why}; nothing more is known of this call. The next call starts a fresh one.")

    async def release(self, session_id: str) -> None:
        import ray

        try:
            await self.handles.end(session_id)
        except MCPPyodideError:
            pass
        self._lost.pop(session_id, None)
        self._notes.pop(session_id, None)

        def end() -> None:
            from ray.experimental import internal_kv

            name = actor_name(session_id)
            with contextlib.suppress(Exception):  # the session ended: its actor is not "lost" on a later call
                internal_kv._internal_kv_del(kv_key(name), namespace=KV_NAMESPACE)
            try:
                actor = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                return
            _kill(ray, actor)

        try:
            await asyncio.wait_for(asyncio.to_thread(end), LOOKUP_TIMEOUT_S)
        except TimeoutError:
            log.warning("could not end a session's Ray actor in time; it ends itself when idle")

    async def close(self) -> None:
        """Nothing to end: the actors are shared with the other front-ends and end themselves when idle."""


def _kill(ray: Any, actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception as exc:  # noqa: BLE001 - already gone, or Ray is down: it ends itself when idle
        log.debug("ray.kill: %s", exc)


class RemoteSandbox:
    """The part of `Sandbox` the tools use, served by the session's actor and checked here."""

    def __init__(self, provider: RaySandboxes, handle: Handle) -> None:
        self._provider = provider
        self._handle = handle
        self.config = provider.config
        self.output_dir = provider.output_dir_for(handle)
        self._counts = (0, 0)  # (kept, dropped) of the last exported history

    async def execute(self, code: str, *, timeout_ms: int | None = None, **_: Any) -> Result:
        """Run code in the actor (output is returned at the end: it is not streamed under --backend ray)."""
        timeout_ms = timeout_ms or self.config.timeout_ms
        payload = await self._provider.call(
            self._handle, "execute", (code, timeout_ms), timeout_ms / 1000 + CALL_MARGIN_S
        )
        result = result_from_wire(payload, self.config.max_output_chars)
        outputs = payload.get("outputs") if isinstance(payload, dict) else None
        result.figures, result.files, dropped = self._store_outputs(outputs)
        result.files_not_returned += dropped
        return result

    async def reset(self) -> InterpreterInfo:
        payload = await self._provider.call(self._handle, "reset", (), CALL_MARGIN_S)
        data = payload if isinstance(payload, dict) else {}
        generation = data.get("generation")
        return InterpreterInfo(
            pyodide_version=cut(_text(data.get("pyodide_version")), 200),
            generation=generation if isinstance(generation, int) and 0 <= generation < 2**53 else 0,
        )

    async def install(self, names: Any, *, progress: Any = None) -> list[PackageOutcome]:
        payload = await self._provider.call(self._handle, "install", (list(names),), CALL_MARGIN_S * 5)
        return outcomes_from_wire(payload)

    async def export_notebook(self, name: str = DEFAULT_NAME, *, overwrite: bool = True) -> Path:
        """The actor renders the notebook (it holds the history and the figures); it is checked and written here."""
        if self.output_dir is None:
            raise NotebookError("there is no output folder to write the notebook to")
        check_name(name)  # a bad name fails before the actor is asked
        payload = await self._provider.call(self._handle, "notebook", (), CALL_MARGIN_S)
        data = payload if isinstance(payload, dict) else {}
        text = data.get("text")
        if not isinstance(text, str) or len(text) > MAX_NOTEBOOK_CHARS:
            raise NotebookError(f"the session's notebook is larger than {MAX_NOTEBOOK_CHARS // 2**20} MiB")
        notebook = await asyncio.to_thread(_read_notebook, text)
        self._counts = (_count(data.get("cells")), _count(data.get("dropped")))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        return await asyncio.to_thread(write_notebook, self.output_dir, name, notebook, overwrite=overwrite)

    def history_counts(self) -> tuple[int, int]:
        return self._counts

    def _store_outputs(self, outputs: object) -> tuple[list[Path], list[Path], int]:
        """Write what the actor sent into this session's output folder: (figures, files, how many were refused).

        Only safe relative names, regular files (never through a link), each and all within the caps; a
        figure is a `.png` the actor called one whose bytes are a PNG, anything else it sent is a file.
        """
        if self.output_dir is None or not isinstance(outputs, list):
            return [], [], 0
        figures: list[Path] = []
        files: list[Path] = []
        dropped = max(0, len(outputs) - MAX_RETURNED)
        left = MAX_RESULT_BYTES
        for item in outputs[:MAX_RETURNED]:
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[1], bytes)):
                dropped += 1
                continue
            name, data, kind = item
            if not _safe_name(name) or len(data) > min(MAX_FILE_BYTES, left):
                dropped += 1
                continue
            target = self.output_dir / name
            try:
                _write_new(self.output_dir, target, data)
            except OSError as exc:
                log.warning("session %s: output %r not written: %s", self._handle.label, name, exc)
                dropped += 1
                continue
            left -= len(data)
            is_figure = kind == "figure" and name.endswith(".png") and data.startswith(PNG_SIGNATURE)
            (figures if is_figure else files).append(target)
        return figures, files, dropped


def _write_new(root: Path, target: Path, data: bytes) -> None:
    """Write ``target`` under ``root``; no part of the way may be a link (the actor named it)."""
    root.mkdir(parents=True, exist_ok=True)
    folder = root
    for part in target.relative_to(root).parts[:-1]:
        folder = folder / part
        if folder.is_symlink():
            raise OSError(f"{folder} is a link")
        folder.mkdir(exist_ok=True)
    # O_NONBLOCK: opening a FIFO planted at that name fails at once instead of waiting for a reader.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{target} is not a regular file")
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _read_notebook(text: str) -> Any:
    """What the actor sent, as a valid nbformat-4 notebook, or NotebookError."""
    nbformat: Any = __import__("nbformat")
    try:
        notebook = nbformat.reads(text, as_version=4)
        nbformat.validate(notebook)
    except Exception as exc:  # noqa: BLE001 - malformed JSON or not a notebook: refused either way
        raise NotebookError(f"the session's interpreter sent no valid notebook ({type(exc).__name__})") from None
    return notebook


def _safe_name(name: object) -> bool:
    if not isinstance(name, str) or not 0 < len(name) <= 255:
        return False
    parts = name.split("/")
    return len(parts) <= 8 and all(p and not p.startswith(".") and "\\" not in p and "\0" not in p for p in parts)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53 else 0


def result_from_wire(payload: object, max_chars: int) -> Result:
    """A `Result` from what an actor sent, every field type-checked and bounded as the local broker bounds it."""
    data = payload if isinstance(payload, dict) else {}
    stdout, stderr = _text(data.get("stdout")), _text(data.get("stderr"))
    error = data.get("error")
    duration = data.get("duration_ms")
    value = data.get("result")
    return Result(
        stdout=cut(stdout, max_chars),
        stderr=cut(stderr, max_chars),
        result=cut(value, max_chars) if isinstance(value, str) else None,
        error=ErrorInfo(
            type=cut(_text(error.get("type")) or "Error", 200),
            message=cut(_text(error.get("message")), max_chars),
            traceback=cut(_text(error.get("traceback")), max_chars),
        )
        if isinstance(error, dict)
        else None,
        timed_out=data.get("timed_out") is True,
        state_reset=data.get("state_reset") is True,
        duration_ms=float(duration) if isinstance(duration, (int, float)) and 0 <= duration < 1e10 else 0.0,
        stdout_truncated_chars=_count(data.get("stdout_truncated_chars")) + max(0, len(stdout) - max_chars),
        stderr_truncated_chars=_count(data.get("stderr_truncated_chars")) + max(0, len(stderr) - max_chars),
        files_not_returned=_count(data.get("files_not_returned")) + _count(data.get("outputs_not_sent")),
        mounts_changed=data.get("mounts_changed") is True,
        loaded_packages=outcomes_from_wire(data.get("loaded_packages")),
    )


def outcomes_from_wire(payload: object) -> list[PackageOutcome]:
    outcomes: list[PackageOutcome] = []
    for item in (payload if isinstance(payload, list) else [])[:1000]:
        if not isinstance(item, dict):
            continue
        deps = item.get("dependencies")
        outcomes.append(
            PackageOutcome(
                name=cut(_text(item.get("name")), 200),
                version=cut(item["version"], 200) if isinstance(item.get("version"), str) else None,
                installed=item.get("installed") is True,
                error=cut(item["error"], 2000) if isinstance(item.get("error"), str) else None,
                dependencies=[cut(d, 200) for d in deps[:1000] if isinstance(d, str)] if isinstance(deps, list) else [],
            )
        )
    return outcomes
