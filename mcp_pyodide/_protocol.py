"""The wire contract with the Node process: every message, typed, and the one decoder for what arrives.

Everything the Node process sends is hostile input (a patched guest can forge any of it), so each
message is decoded exactly once, on arrival, by `decode()`: types are checked and every string,
list and number is bounded here, by the broker, whatever the guest claims to have cut already.
The same catalogue is written in JSDoc in `node_runtime/protocol.mjs`; docs/protocol.md lists it.

Names: a field is spelled once. Python uses it in snake_case; on the wire it is the mechanical
camelCase of the same words (`stdout_truncated_chars` <-> `stdoutTruncatedChars`), see `wire_name`.
Unknown keys from Node are ignored (never kept); a missing key takes the field's default.

Longer than our usual module on purpose: the whole contract and its one decoder are read together.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import RuntimeCrashed

PROTOCOL_VERSION = 3

# Bounds that do not depend on the configuration (characters unless named otherwise).
MAX_NAME = 200  # exception type names, package names, versions, reasons
MAX_NOTE = 2_000  # notices, log lines
MAX_PATH = 4_096  # a guest path
MAX_PATHS = 1_000  # entries in a path list (the rest are dropped and counted)
MAX_LOGS = 200
MAX_PACKAGES = 1_000
MAX_HEADERS = 100
MAX_URL = 8_192
MAX_HEADER = 8_192
MAX_FETCH_BODY = 16 * 1024 * 1024  # base64 characters of a request body the guest sends
MAX_SNAPSHOT_BYTES = 128 * 1024 * 1024
MAX_COUNT = 2**53  # any whole number
MAX_MS = 10**10  # any duration, in milliseconds


class ProtocolError(RuntimeCrashed):
    """The Node process sent a message that breaks the contract; it is no longer trusted."""


@dataclass(frozen=True)
class Limits:
    """The bounds that come from the configuration; `output` bounds result, output and error text."""

    output: int = 100_000


def bound(limit: int | str, *, items: int | None = None, note: str = "") -> dict[str, Any]:
    """Field metadata: `limit` characters (or a Limits attribute name) per string; `items` per list."""
    return {"limit": limit, "items": items, "note": note}


def wire_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# -- values shared by several messages ---------------------------------------------------------


@dataclass(frozen=True)
class ErrorInfo:
    """An exception raised by the user's code (or by the runtime on its behalf): data, not an exception."""

    type: str = field(default="Error", metadata=bound(MAX_NAME))
    message: str = field(default="", metadata=bound("output"))
    traceback: str = field(default="", metadata=bound("output"))


@dataclass(frozen=True)
class MountSpec:
    guest_path: str
    host_path: str
    read_only: bool


@dataclass(frozen=True)
class PackageTreeSpec:
    """A wheel the broker unpacked (packages/trees.py): linked into site-packages, not unzipped."""

    name: str
    file_name: str
    folder: str  # its folder under InitRequest.package_trees_dir; it mirrors site-packages
    dirs: list[str]  # made in site-packages, parents first
    files: list[str]  # linked from site-packages
    dynlibs: list[str]  # .so files among them, loaded as loadPackage does
    datafiles: list[str]  # `<dist>.data/data/X`, also linked at sys.prefix/X


@dataclass(frozen=True)
class GuestOptions:
    output_dir: str | None = None


# -- broker -> Node requests (encoded by us; `kind` names the request) ------------------------


@dataclass(frozen=True)
class InitRequest:
    kind: ClassVar[str] = "init"
    protocol_version: int
    pyodide_dir: str
    pyodide_module: str
    package_cache_dir: str
    guest_modules: dict[str, str]
    guest_options: GuestOptions
    mounts: list[MountSpec]
    mpl_config_dir: str
    memory_limit_bytes: int
    max_output_chars: int
    grace_ms: int
    snapshot_path: str | None
    make_snapshot: bool
    spare_interpreter: bool = False  # keep a second worker restored ahead, swapped in on reset
    bytecode_dir: str | None = None  # read-only: the broker's checked pycs, used as sys.pycache_prefix
    bytecode_stdlib: str | None = None  # a file in bytecode_dir: the standard library with its pycs
    package_trees_dir: str | None = None  # read-only: verified wheels unpacked, one folder each


@dataclass(frozen=True)
class ExecuteRequest:
    kind: ClassVar[str] = "execute"
    code: str
    timeout_ms: int


@dataclass(frozen=True)
class LoadPackagesRequest:
    kind: ClassVar[str] = "load-packages"
    names: list[str]
    timeout_ms: int
    trees: list[PackageTreeSpec] = field(default_factory=list)  # those of `names` served unpacked


@dataclass(frozen=True)
class ResetRequest:
    kind: ClassVar[str] = "reset"


@dataclass(frozen=True)
class PingRequest:
    kind: ClassVar[str] = "ping"


Request = InitRequest | ExecuteRequest | LoadPackagesRequest | ResetRequest | PingRequest


def encode(message: Any) -> dict[str, Any]:
    """A request (or any catalogue dataclass) as its wire payload: camelCase keys, nested values too."""
    if dataclasses.is_dataclass(message) and not isinstance(message, type):
        return {wire_name(f.name): encode(getattr(message, f.name)) for f in dataclasses.fields(message)}
    if isinstance(message, list):
        return [encode(item) for item in message]  # type: ignore[return-value]
    if isinstance(message, dict):
        return {key: encode(value) for key, value in message.items()}
    return message  # type: ignore[no-any-return]


# -- Node -> broker replies (decoded by `decode`) ----------------------------------------------


@dataclass(frozen=True)
class InitReply:
    protocol_version: int = field(default=0, metadata=bound(MAX_COUNT))
    pyodide_version: str = field(default="", metadata=bound(MAX_NAME))
    node_version: str = field(default="", metadata=bound(MAX_NAME))
    generation: int = field(default=0, metadata=bound(MAX_COUNT))
    booted_from: str = field(default="", metadata=bound(MAX_NAME))


@dataclass(frozen=True)
class ExecuteReply:
    """What one run produced. Figures and file lists are hints: the broker decides what to serve."""

    ok: bool = False
    result: str | None = field(default=None, metadata=bound("output", note="repr of the last expression"))
    error: ErrorInfo | None = None
    figures: list[str] = field(default_factory=list, metadata=bound(MAX_PATH, items=MAX_PATHS, note="hint only"))
    written: list[str] = field(default_factory=list, metadata=bound(MAX_PATH, items=MAX_PATHS, note="hint only"))
    removed: list[str] = field(default_factory=list, metadata=bound(MAX_PATH, items=MAX_PATHS, note="hint only"))
    stdout_truncated_chars: int = field(default=0, metadata=bound(MAX_COUNT))
    stderr_truncated_chars: int = field(default=0, metadata=bound(MAX_COUNT))
    fatal: bool = False
    duration_ms: float = field(default=0.0, metadata=bound(MAX_MS))
    generation: int = field(default=0, metadata=bound(MAX_COUNT))
    notice: str | None = field(default=None, metadata=bound(MAX_NOTE))
    state_reset: bool = False


@dataclass(frozen=True)
class LoadPackagesReply:
    error: str | None = field(default=None, metadata=bound(MAX_NOTE))
    logs: list[str] = field(default_factory=list, metadata=bound(MAX_NOTE, items=MAX_LOGS))
    loaded: dict[str, str] = field(default_factory=dict, metadata=bound(MAX_NAME, items=MAX_PACKAGES))
    generation: int = field(default=0, metadata=bound(MAX_COUNT))


@dataclass(frozen=True)
class ResetReply:
    pyodide_version: str = field(default="", metadata=bound(MAX_NAME))
    generation: int = field(default=0, metadata=bound(MAX_COUNT))


@dataclass(frozen=True)
class PingReply:
    generation: int = field(default=0, metadata=bound(MAX_COUNT))


@dataclass(frozen=True)
class ErrorReply:
    """A request failed on the Node side. For `execute`, `outcome` holds what the run produced."""

    code: Literal["timeout", "crashed", "runtime", "protocol"] = "runtime"
    message: str = field(default="unknown error", metadata=bound(MAX_NOTE))
    state_reset: bool = False
    duration_ms: float = field(default=0.0, metadata=bound(MAX_MS))


REPLIES: dict[str, type[Any]] = {
    InitRequest.kind: InitReply,
    ExecuteRequest.kind: ExecuteReply,
    LoadPackagesRequest.kind: LoadPackagesReply,
    ResetRequest.kind: ResetReply,
    PingRequest.kind: PingReply,
}


# -- Node -> broker, unsolicited ---------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """A piece of a run's stdout or stderr (streamed before its reply)."""

    stream: Literal["stdout", "stderr"] = "stdout"
    text: str = field(default="", metadata=bound("output", note="and per call in total"))


@dataclass(frozen=True)
class SnapshotEvent:
    """A memory image of a freshly booted interpreter, made before any user code ran."""

    event: ClassVar[str] = "snapshot"
    data: bytes = field(default=b"", metadata=bound(MAX_SNAPSHOT_BYTES, note="base64 on the wire, bytes"))


@dataclass(frozen=True)
class RestartingEvent:
    event: ClassVar[str] = "restarting"
    reason: str = field(default="", metadata=bound(MAX_NAME))
    generation: int = field(default=0, metadata=bound(MAX_COUNT))


@dataclass(frozen=True)
class ReadyEvent:
    event: ClassVar[str] = "ready"
    version: str = field(default="", metadata=bound(MAX_NAME))
    generation: int = field(default=0, metadata=bound(MAX_COUNT))


Event = SnapshotEvent | RestartingEvent | ReadyEvent
EVENTS: dict[str, type[Any]] = {cls.event: cls for cls in (SnapshotEvent, RestartingEvent, ReadyEvent)}


@dataclass(frozen=True)
class FetchRequest:
    """Node asks the broker to make one HTTP request for the guest (refused unless allowed)."""

    kind: ClassVar[str] = "fetch"
    url: str = field(default="", metadata=bound(MAX_URL))
    method: str = field(default="GET", metadata=bound(16))
    headers: list[list[str]] = field(
        default_factory=list, metadata=bound(MAX_HEADER, items=MAX_HEADERS, note="[name, value] pairs")
    )
    body: str | None = field(default=None, metadata=bound(MAX_FETCH_BODY, note="base64"))

    # Cutting these would change what is requested: an oversize value is an error instead.
    strict: ClassVar[frozenset[str]] = frozenset({"url", "method", "headers", "body"})

    def __post_init__(self) -> None:
        if any(len(pair) != 2 for pair in self.headers):
            raise ProtocolError("fetch request.headers: each header must be a [name, value] pair")

    def as_netbroker(self) -> dict[str, Any]:
        return {"url": self.url, "method": self.method, "headers": self.headers, "body": self.body}


REQUESTS_FROM_NODE: dict[str, type[Any]] = {FetchRequest.kind: FetchRequest}

# Every message that arrives from Node, for docs and the SECURITY.md check.
INCOMING: tuple[type[Any], ...] = (
    InitReply,
    ExecuteReply,
    ErrorInfo,
    LoadPackagesReply,
    ResetReply,
    PingReply,
    ErrorReply,
    Output,
    SnapshotEvent,
    RestartingEvent,
    ReadyEvent,
    FetchRequest,
)


# -- the decoder -------------------------------------------------------------------------------

T = TypeVar("T")


def cut(text: str, limit: int) -> str:
    """The head of `text` and how much was cut, never more than `limit` + a short marker."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit:,} more characters cut]"


def decode(cls: type[T], payload: object, limits: Limits, what: str = "") -> T:
    """Check and bound `payload` (a decoded JSON value) as a `cls`; raises ProtocolError naming the field."""
    what = what or cls.__name__
    if not isinstance(payload, dict):
        raise ProtocolError(f"{what}: expected an object, got {type(payload).__name__}")
    values: dict[str, Any] = {}
    for name, key, hint, limit, items, strict in _plan(cls):
        if key not in payload:
            continue
        chars = getattr(limits, limit) if isinstance(limit, str) else limit
        values[name] = _value(hint, payload[key], chars, items, limits, f"{what}.{key}", strict)
    return cls(**values)


_Field = tuple[str, str, Any, "int | str | None", "int | None", bool]  # name, wire key, hint, limit, items, strict


def _plan(cls: type[Any]) -> tuple[_Field, ...]:
    """Each field of `cls` as `decode` reads it; worked out once per class (every reply is decoded)."""
    cached = _PLANS.get(cls)
    if cached is None:
        hints = _hints(cls)
        strict: frozenset[str] = getattr(cls, "strict", frozenset())
        cached = _PLANS[cls] = tuple(
            (
                f.name,
                wire_name(f.name),
                hints[f.name],
                f.metadata.get("limit"),
                f.metadata.get("items"),
                f.name in strict,
            )
            for f in dataclasses.fields(cls)
        )
    return cached


_PLANS: dict[type[Any], tuple[_Field, ...]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    cached = _HINTS.get(cls)
    if cached is None:
        cached = _HINTS[cls] = get_type_hints(cls)
    return cached


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _value(
    hint: Any, value: object, chars: int | None, items: int | None, limits: Limits, where: str, strict: bool
) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [arg for arg in get_args(hint) if arg is not type(None)]
        if value is None:
            return None
        return _value(options[0], value, chars, items, limits, where, strict)
    if origin is Literal:
        if value not in get_args(hint):
            allowed = ", ".join(repr(a) for a in get_args(hint))
            raise ProtocolError(f"{where}: expected one of {allowed}, got {_show(value)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ProtocolError(f"{where}: expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= (chars or MAX_COUNT):
            raise ProtocolError(f"{where}: expected a whole number from 0 to {chars or MAX_COUNT}, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ProtocolError(f"{where}: expected a number, got {_show(value)}")
        return min(max(float(value), 0.0), float(chars or MAX_MS))
    if hint is str:
        if not isinstance(value, str):
            raise ProtocolError(f"{where}: expected a string, got {_show(value)}")
        limit = chars or MAX_NOTE
        if strict and len(value) > limit:
            raise ProtocolError(f"{where}: {len(value):,} characters, over the limit of {limit:,}")
        return cut(value, limit)
    if hint is bytes:
        if not isinstance(value, str):
            raise ProtocolError(f"{where}: expected base64 text, got {_show(value)}")
        limit = chars or MAX_SNAPSHOT_BYTES
        if len(value) > (limit * 4) // 3 + 4:
            raise ProtocolError(f"{where}: {len(value):,} base64 characters, over the limit of {limit:,} bytes")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f"{where}: not valid base64 ({exc})") from None
    if origin is list:
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected a list, got {_show(value)}")
        (inner,) = get_args(hint)
        kept = value[: items or MAX_PATHS]
        return [_value(inner, item, chars, None, limits, f"{where}[{i}]", strict) for i, item in enumerate(kept)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object, got {_show(value)}")
        pairs = list(value.items())[: items or MAX_PACKAGES]
        return {
            cut(str(k), MAX_NAME): _value(str, v, chars, None, limits, f"{where}.{k!s:.40}", strict) for k, v in pairs
        }
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return decode(hint, value, limits, where)
    raise TypeError(f"the catalogue has a field type the decoder does not know: {hint!r}")  # pragma: no cover


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- frames ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """The envelope of every message: `id` is ours (int), Node's (str, its requests) or null (events)."""

    id: int | str | None
    kind: str
    payload: dict[str, Any]


def decode_frame(message: object) -> Frame:
    if not isinstance(message, dict):
        raise ProtocolError(f"a frame must be an object, got {type(message).__name__}")
    request_id = message.get("id")
    kind = message.get("kind")
    payload = message.get("payload", {})
    if isinstance(request_id, bool) or not isinstance(request_id, int | str | None):
        raise ProtocolError(f"frame id must be a number, a string or null, got {_show(request_id)}")
    if isinstance(request_id, str) and len(request_id) > 64:
        raise ProtocolError("frame id is longer than 64 characters")
    if not isinstance(kind, str) or len(kind) > 64:
        raise ProtocolError(f"frame kind must be a short string, got {_show(kind)}")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ProtocolError(f"frame payload must be an object, got {type(payload).__name__}")
    return Frame(request_id, kind, payload)


def decode_event(payload: dict[str, Any], limits: Limits) -> Event | None:
    """An event, or None for an event name this version does not know (ignored)."""
    cls = EVENTS.get(str(payload.get("event")))
    return None if cls is None else decode(cls, payload, limits, f"{cls.event} event")


class OutputBudget:
    """Bounds a call's stdout and stderr in total, whatever the chunks say; counts what it drops."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = {"stdout": 0, "stderr": 0}
        self.dropped = {"stdout": 0, "stderr": 0}

    def take(self, stream: str, text: str) -> str:
        room = max(0, self.limit - self.kept[stream])
        kept = text[:room]
        self.kept[stream] += len(kept)
        self.dropped[stream] += len(text) - len(kept)
        return kept


def decode_reply(request_kind: str, payload: dict[str, Any], limits: Limits) -> Any:
    return decode(REPLIES[request_kind], payload, limits, f"{request_kind} reply")


def bounds_table() -> str:
    """The Node -> broker fields and the bound the decoder applies: docs/protocol.md and SECURITY.md carry it."""
    rows = ["| message | field (wire name) | type | bound applied by the broker |", "| --- | --- | --- | --- |"]
    for cls in INCOMING:
        for spec in dataclasses.fields(cls):
            hint = _hints(cls)[spec.name]
            rows.append(
                f"| {cls.__name__} | `{wire_name(spec.name)}` | {_type_name(hint)} | {_bound_text(cls, spec)} |"
            )
    return "\n".join(rows)


def _type_name(hint: Any) -> str:
    text = str(hint).replace("typing.", "").replace("mcp_pyodide._protocol.", "")
    return text.replace("<class '", "").replace("'>", "").replace("|", "or")


def _bound_text(cls: type[Any], spec: dataclasses.Field[Any]) -> str:
    hint = _hints(cls)[spec.name]
    limit, items, note = spec.metadata.get("limit"), spec.metadata.get("items"), spec.metadata.get("note", "")
    if hint is bool:
        text = "must be true or false"
    elif get_origin(hint) is Literal:
        text = "one of " + ", ".join(f"`{a}`" for a in get_args(hint))
    elif dataclasses.is_dataclass(next((a for a in get_args(hint) if a is not type(None)), hint)):
        text = "an object, decoded as its own message"
    elif hint in (int, float):
        text = f"a number from 0 to {limit:,}" if isinstance(limit, int) else "a number"
    elif hint is bytes:
        text = f"at most {limit:,} bytes, checked before decoding"
    else:
        per = (
            "the configured output limit (`--max-output-chars`)"
            if limit == "output"
            else f"{limit:,} characters"
            if isinstance(limit, int)
            else "a default bound"
        )
        strict = spec.name in getattr(cls, "strict", frozenset())
        text = f"each string at most {per}" + (", longer is refused" if strict else ", longer is cut")
        if items:
            text += f"; at most {items:,} entries, the rest dropped"
    return text + (f" ({note})" if note else "")
