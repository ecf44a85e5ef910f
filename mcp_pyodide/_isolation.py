"""Kernel-level fences around the Node process, and the isolation level they add up to.

Node's permission model is the first fence, but Node documents that it "does
not protect against malicious code". On Linux we add what the kernel offers,
applied in the child between fork and exec so Node starts already inside them:

- a new network namespace (with a user namespace when not root): no network at
  all, loopback included;
- Landlock (when the kernel has it): file access limited to the granted paths,
  TCP bind/connect denied, and signals to processes outside the sandbox denied.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache, partial
from pathlib import Path

from ._node import NodeBinary
from .errors import SetupError

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
SIGKILL = 9

# Landlock (include/uapi/linux/landlock.h); the syscall numbers are the same on x86_64 and aarch64.
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

READ = FS_READ_FILE | FS_READ_DIR
WRITE_V1 = FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_DIR | FS_MAKE_REG

# What the Node binary itself needs to start: its libraries (the ELF loader is "executed"
# by the kernel, so those folders need execute rights), and a few system files.
SYSTEM_LIBRARY_PATHS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64")
SYSTEM_READ_PATHS = (
    "/etc/ld.so.cache",
    "/etc/ssl/openssl.cnf",
    "/etc/localtime",
    "/dev/null",
    "/dev/urandom",
    "/dev/random",
    "/proc/self",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
)


class Level(StrEnum):
    """How strongly the sandbox is fenced in; `mcp-pyodide doctor` and the start-up log say which."""

    STRICT = "strict"  # Node permission model + no network (kernel or Node 25+) + Landlock where present
    STANDARD = "standard"  # Node permission model and no code generation from strings only


@dataclass(frozen=True)
class Isolation:
    """The fences that will be applied, decided once per server."""

    level: Level
    network_namespace: bool
    landlock_abi: int
    node_blocks_network: bool

    def describe(self) -> str:
        parts = ["Node permission model", "no code generation from strings", "none of the server's environment"]
        if self.node_blocks_network:
            parts.append("no network (Node permission model)")
        if self.network_namespace:
            parts.append("no network (kernel network namespace)")
        if self.landlock_abi:
            parts.append(f"Landlock ABI {self.landlock_abi} (files, TCP, signals)")
        return f"{self.level.value}: " + ", ".join(parts)


class IsolationUnavailable(SetupError, RuntimeError):
    """--isolation strict was asked for and this machine cannot provide it."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _child_libc() -> ctypes.CDLL:
    """libc with the functions a child calls between fork and exec already looked up.

    Looked up in the parent: in the child, a dlopen or dlsym could wait forever on a loader lock
    another thread held at the fork (the server imports the MCP SDK in a thread while Node starts).
    """
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    for name in ("prctl", "unshare", "syscall"):
        getattr(libc, name)  # ctypes keeps each function once looked up
    return libc


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when absent or disabled."""
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "aarch64"):
        return 0
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), LANDLOCK_CREATE_RULESET_VERSION)
    return max(int(version), 0)


def _enter_network_namespace(libc: ctypes.CDLL) -> None:
    flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")


@cache
def network_namespace_works() -> bool:
    """Try it once in a throwaway child: containers and some kernels forbid it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        subprocess.run(
            ["/bin/sh", "-c", "exit 0"],
            preexec_fn=partial(_enter_network_namespace, _child_libc()),
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def choose(node: NodeBinary, requested: str = "auto") -> Isolation:
    """Pick the strongest isolation this machine offers; refuse when `strict` is demanded and missing."""
    netns = network_namespace_works()
    abi = landlock_abi()
    node_net = node.has_net_permission
    no_network = netns or node_net
    level = Level.STRICT if no_network else Level.STANDARD
    if requested == "strict" and level is not Level.STRICT:
        raise IsolationUnavailable(
            "--isolation strict needs a way to cut the sandbox off the network: Linux network namespaces "
            "(unprivileged user namespaces enabled) or Node.js 25 or newer (its permission model denies network). "
            f"This machine has neither (Node {node.version_text}). Use --isolation standard to run anyway, or "
            "install a newer Node.js."
        )
    if requested == "standard":
        return Isolation(Level.STANDARD, False, 0, node_net)
    return Isolation(level, netns, abi, node_net)


# -- Landlock, applied in the child -------------------------------------------------------------


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _fs_rights(abi: int) -> tuple[int, int]:
    """(all handled rights, write rights) for this ABI."""
    handled = FS_EXECUTE | WRITE_V1 | READ | FS_MAKE_CHAR | FS_MAKE_SOCK | FS_MAKE_FIFO | FS_MAKE_BLOCK | FS_MAKE_SYM
    write = WRITE_V1
    if abi >= 2:
        handled |= FS_REFER
    if abi >= 3:
        handled |= FS_TRUNCATE
        write |= FS_TRUNCATE
    if abi >= 5:
        handled |= FS_IOCTL_DEV
    return handled, write


def _landlock(abi: int, read: Sequence[str], write: Sequence[str], execute: Sequence[str], libc: ctypes.CDLL) -> None:
    handled_fs, write_rights = _fs_rights(abi)
    attr = _RulesetAttr(handled_fs, 0, 0)
    size = 8
    if abi >= 4:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        size = 24
    ruleset = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        rules: list[tuple[str, int]] = [(p, READ | FS_EXECUTE) for p in execute]
        rules += [(p, READ) for p in read]
        rules += [(p, READ | write_rights) for p in write]
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a path this machine does not have
            try:
                is_dir = os.path.isdir(path)
                allowed = access if is_dir else access & (FS_EXECUTE | FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE)
                rule = _PathBeneathAttr(allowed & handled_fs, fd)
                if libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
            finally:
                os.close(fd)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(NO_NEW_PRIVS)")
        if libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def child_setup(
    isolation: Isolation, node: NodeBinary, read: Sequence[Path], write: Sequence[Path]
) -> Callable[[], None]:
    """The function run in the child before exec: die with the parent, then enter every fence."""
    node_path = str(Path(node.path).resolve())
    execute = [node_path, *SYSTEM_LIBRARY_PATHS]
    read_paths = [*SYSTEM_READ_PATHS, *(str(p) for p in read)]
    write_paths = [str(p) for p in write]

    libc = _child_libc()

    def setup() -> None:
        libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
        if isolation.network_namespace:
            _enter_network_namespace(libc)
        if isolation.landlock_abi:
            try:
                _landlock(isolation.landlock_abi, read_paths, write_paths, execute, libc)
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EOPNOTSUPP):
                    raise

    return setup
