"""Host-side file tools: see the mounts, list a mounted folder, read an image from one.

These run in the server process, not in Pyodide: they work while Python is
busy or restarting, and cost no interpreter time. Every path goes through
`mounts.resolve_inside`/`open_inside`, so none can leave its mount.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import anyio
import mcp_types as types
from pydantic import BaseModel, ConfigDict, Field

from ..config import DEFAULT_MAX_IMAGE_BYTES
from ..escaping import json_safe, shown
from ..mounts import Mount, MountError, find_mount, open_inside, read_bounded, resolve_inside
from ..tool_names import ToolName
from .registry import CallContext, ToolFailure, ToolSpec

MAX_IMAGE_BYTES = DEFAULT_MAX_IMAGE_BYTES
"""Largest image pyodide_read-image returns; the CLI's --max-image-bytes overrides it."""
MAX_LIST_ENTRIES = 1000
"""Entries shown by pyodide_list-mounted-directory; the rest are counted, not listed."""
SNIFF_BYTES = 4096

_READ_ONLY = types.ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)


# -- content sniffing --------------------------------------------------------------------------


def sniff(head: bytes) -> tuple[str | None, str]:
    """Return (image MIME type or None, what the bytes look like), from magic bytes, not the name.

    Names lie (a model may save text as .png); the bytes decide what a client is told.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png", "a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg", "a JPEG image"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif", "a GIF image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp", "a WebP image"
    if _looks_like_svg(head):
        return "image/svg+xml", "an SVG image"
    for magic, what in (
        (b"%PDF-", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive (or a docx/xlsx/wheel)"),
        (b"\x1f\x8b", "gzip-compressed data"),
        (b"BM", "a BMP image (not supported: use PNG)"),
        (b"II*\x00", "a TIFF image (not supported: use PNG)"),
        (b"MM\x00*", "a TIFF image (not supported: use PNG)"),
        (b"\x00\x00\x01\x00", "an ICO icon (not supported: use PNG)"),
        (b"\x7fELF", "an executable (ELF)"),
        (b"\x93NUMPY", "a NumPy .npy array"),
    ):
        if head.startswith(magic):
            return None, what
    if not head:
        return None, "an empty file"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 4:  # a multi-byte character cut at the end is still text
                return None, "binary data"
        return None, "text"
    return None, "binary data"


def _looks_like_svg(head: bytes) -> bool:
    text = head.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n").lower()
    return text.startswith("<") and "<svg" in text


def is_text(head: bytes) -> bool:
    return sniff(head)[1] == "text"


# -- argument models ---------------------------------------------------------------------------


MOUNT_NAME_HELP = f"Name of the mount, as shown by {ToolName.GET_MOUNT_POINTS} (e.g. 'output')."


class MountPointsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListDirectoryArgs(BaseModel):
    # Field names are the wire names, so policy rules see exactly what the client sent.
    model_config = ConfigDict(extra="forbid")

    mountName: str = Field(description=MOUNT_NAME_HELP)
    path: str = Field(
        default="",
        description="Folder inside the mount: relative ('plots/2024') or as Python sees it ('/mnt/output/plots'). "
        "Default: the mount's top folder.",
    )


class ReadImageArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mountName: str = Field(description=MOUNT_NAME_HELP)
    imagePath: str = Field(
        description="Image file inside the mount: relative ('plot.png') or as Python sees it ('/mnt/output/plot.png')."
    )


# -- output models (the tools' output schemas are derived from these) -------------------------


class MountInfo(BaseModel):
    name: str
    hostPath: str = Field(description="the folder on the server's machine")
    pythonPath: str = Field(description="where Python sees it, e.g. /mnt/output")
    readOnly: bool


class MountPointsOutput(BaseModel):
    mounts: list[MountInfo]


class DirectoryEntry(BaseModel):
    name: str
    type: Literal["file", "directory", "symlink", "other"]
    size: int | None = Field(description="bytes; null for folders and links")
    modified: str | None = Field(description="ISO 8601, UTC")


class Listing(BaseModel):
    mountName: str
    path: str = Field(description="the folder, relative to the mount ('' for its top)")
    pythonPath: str
    entries: list[DirectoryEntry]
    total: int = Field(description="entries in the folder")
    omitted: int = Field(description="entries left out of the listing")


# -- the work, done in a worker thread ---------------------------------------------------------


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry(entry: os.DirEntry[str]) -> DirectoryEntry:
    """Describe one entry without following symlinks: a link's target may be outside the mount."""
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return DirectoryEntry(name=json_safe(entry.name), type="other", size=None, modified=None)
    kind: Literal["file", "directory", "symlink", "other"]
    size: int | None = None
    if stat.S_ISLNK(info.st_mode):
        kind = "symlink"
    elif stat.S_ISDIR(info.st_mode):
        kind = "directory"
    elif stat.S_ISREG(info.st_mode):
        kind, size = "file", info.st_size
    else:
        kind = "other"
    return DirectoryEntry(name=json_safe(entry.name), type=kind, size=size, modified=_iso(info.st_mtime))


def list_directory(mount: Mount, path: str, limit: int = MAX_LIST_ENTRIES) -> Listing:
    """Folders first, then files, each by name; at most `limit` entries, the rest counted."""
    folder = resolve_inside(mount, path, strict=True)
    if not folder.is_dir():
        raise MountError(f"'{shown(path)}' in mount {mount.name!r} is a file, not a folder")
    rel = folder.relative_to(mount.host_path).as_posix()
    rel = "" if rel == "." else rel
    try:
        with os.scandir(folder) as it:
            entries = [_entry(e) for e in it]
    except OSError as exc:
        raise MountError(f"cannot list '{shown(path or '/')}' in mount {mount.name!r}: {exc.strerror or exc}") from None
    entries.sort(key=lambda e: (e.type != "directory", e.name.lower(), e.name))
    kept = entries[:limit]
    return Listing(
        mountName=mount.name,
        path=rel,
        pythonPath=json_safe(f"{mount.guest_path}/{rel}".rstrip("/")),
        entries=kept,
        total=len(entries),
        omitted=len(entries) - len(kept),
    )


def format_listing(listing: Listing) -> str:
    """The listing as text; every name is escaped, so a file name cannot forge a line."""
    entries = listing.entries
    files = sum(1 for e in entries if e.type == "file")
    folders = sum(1 for e in entries if e.type == "directory")
    lines = [
        f"{shown(listing.pythonPath)}: {folders} folders, {files} files"
        + (f" (showing {len(entries)} of {listing.total} entries)" if listing.omitted else "")
    ]
    if not entries:
        lines.append("(empty)")
    for e in entries:
        modified = (e.modified or "").replace("T", " ").rstrip("Z")[:16]
        if e.type == "directory":
            lines.append(f"  {shown(e.name)}/  [folder, modified {modified}]")
        elif e.type == "file":
            lines.append(f"  {shown(e.name)}  [{human_size(e.size or 0)}, modified {modified}]")
        else:
            lines.append(f"  {shown(e.name)}  [{e.type}]")
    if listing.omitted:
        lines.append(f"[... {listing.omitted:,} more entries not shown]")
    return "\n".join(lines)


def read_image(mount: Mount, image_path: str, max_bytes: int) -> tuple[bytes, str, Path]:
    """Return (bytes, MIME type, resolved path), or raise ToolFailure saying what is wrong."""
    named = f"'{shown(image_path)}'"
    fd, info, path = open_inside(mount, image_path)
    try:
        if info.st_size > max_bytes:
            raise ToolFailure(
                f"{named} is {human_size(info.st_size)}, over the image limit of {human_size(max_bytes)}; "
                "save a smaller image (lower dpi or size) and read that."
            )
        data = read_bounded(fd, max_bytes)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ToolFailure(f"{named} grew past the image limit of {human_size(max_bytes)} while being read")
    mime, what = sniff(data[:SNIFF_BYTES])
    if mime is None:
        raise ToolFailure(
            f"{named} is not a supported image: it looks like {what}. Supported: PNG, JPEG, GIF, WebP, SVG."
        )
    return data, mime, path


# -- the tools ---------------------------------------------------------------------------------


def _mount(mounts: Sequence[Mount], name: str) -> Mount:
    try:
        return find_mount(mounts, name)
    except MountError as exc:
        raise ToolFailure(str(exc)) from None


def build_file_tools(mounts: Sequence[Mount], *, max_image_bytes: int = MAX_IMAGE_BYTES) -> list[ToolSpec]:
    """The three file tools for these mounts (the output folder included)."""
    mounts = tuple(mounts)

    async def get_mount_points(args: MountPointsArgs, ctx: CallContext) -> types.CallToolResult:
        described = MountPointsOutput(
            mounts=[
                MountInfo(name=m.name, hostPath=str(m.host_path), pythonPath=m.guest_path, readOnly=m.read_only)
                for m in (ctx.mounts if ctx.mounts is not None else mounts)
            ]
        )
        if described.mounts:
            text = "\n".join(
                f"{d.name}: {d.pythonPath} in Python <- {d.hostPath} on the host "
                f"({'read-only' if d.readOnly else 'read-write'})"
                for d in described.mounts
            )
        else:
            text = "No folders are mounted (start the server with --mount NAME=PATH or --output-dir PATH)."
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)], structured_content=described.model_dump(mode="json")
        )

    async def list_mounted_directory(args: ListDirectoryArgs, ctx: CallContext) -> types.CallToolResult:
        mount = _mount(ctx.mounts if ctx.mounts is not None else mounts, args.mountName)
        try:
            listing = await anyio.to_thread.run_sync(list_directory, mount, args.path)
        except MountError as exc:
            raise ToolFailure(str(exc)) from None
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=format_listing(listing))],
            structured_content=listing.model_dump(mode="json"),
        )

    async def read_image_tool(args: ReadImageArgs, ctx: CallContext) -> types.CallToolResult:
        mount = _mount(ctx.mounts if ctx.mounts is not None else mounts, args.mountName)
        try:
            data, mime, path = await anyio.to_thread.run_sync(read_image, mount, args.imagePath, max_image_bytes)
        except MountError as exc:
            raise ToolFailure(str(exc)) from None
        where = f"{mount.guest_path}/{path.relative_to(mount.host_path).as_posix()}"
        return types.CallToolResult(
            content=[
                types.ImageContent(type="image", data=base64.b64encode(data).decode("ascii"), mime_type=mime),
                types.TextContent(type="text", text=f"{shown(where)}: {mime}, {human_size(len(data))}"),
            ]
        )

    where = ", ".join(f"{m.name} ({m.guest_path})" for m in mounts) or "none configured"
    return [
        ToolSpec(
            name=ToolName.GET_MOUNT_POINTS,
            title="List mounted folders",
            description="List the host folders mounted into Python: each mount's name, its host path, where Python "
            "sees it (/mnt/NAME) and whether it is read-only. Files Python writes under /mnt/output (or another "
            f"read-write mount) appear on the host. Mounts: {where}.",
            arguments=MountPointsArgs,
            handler=get_mount_points,
            annotations=_READ_ONLY.model_copy(update={"title": "List mounted folders"}),
            output=MountPointsOutput,
        ),
        ToolSpec(
            name=ToolName.LIST_MOUNTED_DIRECTORY,
            title="List a mounted folder",
            description="List the files and folders in a mounted folder (or a sub-folder via `path`), with sizes, "
            f"types and modification times; folders first, then by name. At most {MAX_LIST_ENTRIES:,} entries "
            "are shown, and the result says how many were left out. Paths cannot leave the mount.",
            arguments=ListDirectoryArgs,
            handler=list_mounted_directory,
            annotations=_READ_ONLY.model_copy(update={"title": "List a mounted folder"}),
            output=Listing,
        ),
        ToolSpec(
            name=ToolName.READ_IMAGE,
            title="Read an image from a mounted folder",
            description="Return an image file from a mounted folder as an image the model can see, e.g. a plot "
            "saved with plt.savefig('/mnt/output/plot.png'). PNG, JPEG, GIF, WebP and SVG, detected from the "
            f"file's contents; at most {human_size(max_image_bytes)}. Paths cannot leave the mount.",
            arguments=ReadImageArgs,
            handler=read_image_tool,
            annotations=_READ_ONLY.model_copy(update={"title": "Read an image from a mounted folder"}),
        ),
    ]
