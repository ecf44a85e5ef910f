"""MCP resources for the files in the mounts, at ``file:///mnt/NAME/PATH``.

The URI is the path Python sees, so a model can pass a path printed by its
code straight to ``resources/read`` (the original TypeScript server used the
same form). Listing is bounded, never follows symlinks and skips hidden
files; reading goes through `mounts.open_inside`, like the file tools.

The policy governs resources as if they were one tool named ``resources``
(`tool_names.RESOURCES`): a policy that hides or denies it means the server
offers no resources at all; otherwise each ``resources/list`` and
``resources/read`` is one call to it (conditions, rate limits), with the
arguments ``{"operation": "list"}`` or ``{"operation": "read", "uri": URI,
"path": PATH}``. The URI a policy sees is the one that is read: decoded,
``..`` and symlinks resolved, then written in the form resources/list uses.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import mimetypes
import os
import stat
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError

from ..escaping import json_safe, shown
from ..mounts import GUEST_ROOT, Mount, MountError, find_mount, open_inside, read_bounded, resolve_inside
from ..policy import Decision, Policy, PolicyEngine
from ..policy.conditions import violation
from ..tool_names import RESOURCES
from .files import SNIFF_BYTES, human_size, sniff

log = logging.getLogger("mcp_pyodide.server")

URI_PREFIX = f"file://{GUEST_ROOT}/"
PAGE_SIZE = 500
"""Resources per resources/list page."""
MAX_SCAN_ENTRIES = 5000
"""Folder entries visited per listing, so a huge mounted tree costs bounded time."""
MAX_RESOURCE_BYTES = 10 * 1024 * 1024
"""Largest file resources/read returns."""
RESOURCE_NOT_FOUND = -32002  # the MCP specification's code for an unknown resource


@dataclass(frozen=True)
class FileEntry:
    mount: Mount
    rel: str  # POSIX path relative to the mount
    size: int


def resource_uri(mount: Mount, rel: str) -> str:
    """Percent-encoded, so no character of a name reaches the model raw (undecodable bytes stay bytes)."""
    return f"{URI_PREFIX}{quote(mount.name)}/{quote(rel, errors='surrogateescape')}"


def walk_files(mounts: Sequence[Mount], budget: int = MAX_SCAN_ENTRIES) -> Iterator[FileEntry]:
    """Regular files in the mounts, breadth first, sorted by name; no symlinks, no hidden names.

    Stops after `budget` folder entries in all, so the cost does not grow with the tree.
    """
    seen = 0
    for mount in mounts:
        queue: deque[str] = deque([""])
        while queue:
            rel_dir = queue.popleft()
            try:
                with os.scandir(mount.host_path / rel_dir if rel_dir else mount.host_path) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                seen += 1
                if seen > budget:
                    return
                if entry.name.startswith("."):
                    continue
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    queue.append(rel)
                elif stat.S_ISREG(info.st_mode):
                    yield FileEntry(mount, rel, info.st_size)


# -- the policy's say ------------------------------------------------------------------------


def offered_by(policy: Policy) -> bool:
    """False when the policy hides or denies ``resources`` outright: then none are offered."""
    if policy.is_hidden(RESOURCES):
        return False
    rule = policy.rule_for(RESOURCES)
    if rule is None:
        return policy.default == "allow"
    return rule.action != "deny"


def read_arguments(mount: Mount, rel: str) -> dict[str, Any]:
    """The policy's view of a read of a canonical mount path."""
    path = json_safe(f"{mount.guest_path}/{rel}".rstrip("/"))
    return {"operation": "read", "uri": resource_uri(mount, rel), "path": path}


def readable(policy: Policy, arguments: dict[str, Any]) -> bool:
    """Whether the policy's conditions would let this be read (no quota used): for filtering lists."""
    rule = policy.rule_for(RESOURCES)
    if rule is None:
        return True
    return all(violation(c, arguments) is None for c in (*rule.deny_if, *rule.require))


async def resource_decision(
    engine: PolicyEngine, arguments: dict[str, Any], session_id: str, principal: str = ""
) -> Decision:
    """Decide one resources request like a tool call; approval cannot be asked for a resource."""
    decision = await engine.decide(RESOURCES, arguments, session_id, principal)
    if decision.needs_approval:
        why = "resources cannot be approved by the user; the policy asks for approval"
        decision = await engine.settle(decision, False, why)
    return decision


def guess_type(name: str) -> str | None:
    mime, _ = mimetypes.guess_type(name, strict=False)
    return mime


class MountResources:
    """Resources, resource templates and change notifications for a set of mounts."""

    def __init__(self, mounts: Sequence[Mount], *, max_bytes: int = MAX_RESOURCE_BYTES) -> None:
        self.mounts = tuple(mounts)
        self.max_bytes = max_bytes
        self._names = self.fingerprint()

    # -- listing ---------------------------------------------------------------------------------

    def templates(self) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(
            resource_templates=[
                types.ResourceTemplate(
                    name=f"mount-{m.name}",
                    title=f"Files in {m.guest_path}",
                    uri_template=f"{URI_PREFIX}{quote(m.name)}/{{+path}}",
                    description=f"A file in the mounted folder {m.host_path} "
                    f"({'read-only' if m.read_only else 'read-write'}); path is relative to {m.guest_path}.",
                )
                for m in self.mounts
            ]
        )

    def list(self, cursor: str | None = None, policy: Policy | None = None) -> types.ListResourcesResult:
        """One page of files (only those the policy would let be read); the cursor is the next page's offset."""
        try:
            start = int(cursor) if cursor else 0
        except ValueError:
            raise MCPError(code=types.INVALID_PARAMS, message=f"invalid cursor {cursor!r}") from None
        files = [
            f for f in walk_files(self.mounts) if policy is None or readable(policy, read_arguments(f.mount, f.rel))
        ]
        page = files[start : start + PAGE_SIZE]
        resources = [
            types.Resource(
                uri=resource_uri(f.mount, f.rel),
                name=shown(f"{f.mount.name}/{f.rel}"),
                title=shown(f.rel.rsplit("/", 1)[-1]),
                description=f"{shown(f'{f.mount.guest_path}/{f.rel}')} ({human_size(f.size)})",
                mime_type=guess_type(f.rel),
                size=f.size,
            )
            for f in page
        ]
        more = start + PAGE_SIZE < len(files)
        return types.ListResourcesResult(resources=resources, next_cursor=str(start + PAGE_SIZE) if more else None)

    def link_for(self, path: Path) -> types.ResourceLink | None:
        """A resource link for a host file inside a mount (a figure just saved, say); None if outside all."""
        try:
            resolved = Path(path).resolve()
            size: int | None = resolved.stat().st_size
        except (OSError, RuntimeError):
            return None
        # The deepest mount wins, for an output folder nested inside another mount.
        for mount in sorted(self.mounts, key=lambda m: len(m.host_path.parts), reverse=True):
            if resolved.is_relative_to(mount.host_path) and resolved != mount.host_path:
                rel = resolved.relative_to(mount.host_path).as_posix()
                return types.ResourceLink(
                    type="resource_link",
                    uri=resource_uri(mount, rel),
                    name=shown(f"{mount.name}/{rel}"),
                    title=shown(resolved.name),
                    mime_type=guess_type(rel),
                    size=size,
                )
        return None

    # -- reading ---------------------------------------------------------------------------------

    def locate(self, uri: str) -> tuple[Mount, str]:
        """Map ``file:///mnt/NAME/PATH`` to (mount, relative path); refuse any other URI."""
        parts = urlsplit(uri)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise MCPError(
                code=types.INVALID_PARAMS, message=f"not a mount file URI: {uri!r}; expected {URI_PREFIX}NAME/PATH"
            )
        path = unquote(parts.path, errors="surrogateescape")
        root = GUEST_ROOT + "/"
        if not path.startswith(root):
            raise MCPError(code=types.INVALID_PARAMS, message=f"{uri!r} is outside the mounts ({root}NAME/PATH)")
        name, _, rel = path[len(root) :].partition("/")
        try:
            mount = find_mount(self.mounts, name)
        except MountError as exc:
            raise MCPError(code=RESOURCE_NOT_FOUND, message=str(exc), data={"uri": uri}) from None
        return mount, rel

    def canonical(self, uri: str) -> tuple[Mount, str]:
        """(mount, path inside it) that a read of `uri` really opens: `..` and symlinks resolved."""
        mount, rel = self.locate(uri)
        try:
            resolved = resolve_inside(mount, rel, strict=False)
        except MountError as exc:
            raise MCPError(code=types.INVALID_PARAMS, message=str(exc), data={"uri": uri}) from None
        canonical = resolved.relative_to(mount.host_path).as_posix()
        return mount, "" if canonical == "." else canonical

    def read_arguments(self, uri: str) -> dict[str, Any]:
        """What the policy sees for ``resources/read``; pass its ``uri`` to :meth:`read`."""
        return read_arguments(*self.canonical(uri))

    def read(self, uri: str) -> types.ReadResourceResult:
        """Read a canonical URI (from :meth:`read_arguments`); refuse one that now leads elsewhere."""
        mount, rel = self.locate(uri)
        try:
            fd, info, opened = open_inside(mount, rel)
        except MountError as exc:
            code = RESOURCE_NOT_FOUND if "does not exist" in str(exc) else types.INVALID_PARAMS
            raise MCPError(code=code, message=str(exc), data={"uri": uri}) from None
        if opened != mount.host_path / rel:
            os.close(fd)
            raise MCPError(
                code=types.INVALID_PARAMS, message=f"{uri} changed while it was being read", data={"uri": uri}
            )
        try:
            if info.st_size > self.max_bytes:
                raise MCPError(
                    code=types.INVALID_PARAMS,
                    message=f"{uri} is {human_size(info.st_size)}, over the limit of {human_size(self.max_bytes)}",
                )
            data = read_bounded(fd, self.max_bytes)
        finally:
            os.close(fd)
        if len(data) > self.max_bytes:
            raise MCPError(code=types.INVALID_PARAMS, message=f"{uri} grew past {human_size(self.max_bytes)}")
        return types.ReadResourceResult(contents=[self._contents(uri, rel, data)])

    def _contents(self, uri: str, rel: str, data: bytes) -> types.TextResourceContents | types.BlobResourceContents:
        image, what = sniff(data[:SNIFF_BYTES])
        guessed = guess_type(rel)
        if image is None and what in ("text", "an empty file"):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                return types.TextResourceContents(uri=uri, mime_type=guessed or "text/plain", text=text)
        mime = image or guessed or "application/octet-stream"
        return types.BlobResourceContents(uri=uri, mime_type=mime, blob=base64.b64encode(data).decode("ascii"))

    # -- change notifications ------------------------------------------------------------------

    def fingerprint(self) -> str:
        """A digest of which files exist (not their contents): what resources/list would show."""
        digest = hashlib.sha256()
        for f in walk_files(self.mounts):
            digest.update(f"{f.mount.name}\x00{f.rel}\x00".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()

    async def notify_if_changed(self, session: Any) -> bool:
        """Send ``notifications/resources/list_changed`` if files appeared or vanished since the last check.

        Call after anything that may have written to a mount (a run, a reset);
        `session` is the request's `ServerSession`. Never raises: a missed
        notification must not fail the call that triggered it.
        """
        try:
            names = await anyio.to_thread.run_sync(self.fingerprint)
            if names == self._names:
                return False
            self._names = names
            await session.send_resource_list_changed()
            return True
        except Exception:
            log.warning("could not send resources/list_changed", exc_info=True)
            return False
