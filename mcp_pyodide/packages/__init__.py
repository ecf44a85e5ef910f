"""Package broker: resolves Pyodide packages and fills a verified local cache.

The Node sandbox never touches the network; everything it loads comes from
the cache directory filled here, checked against ``pyodide-lock.json``.
"""

from .broker import AvailablePackage, EnsureResult, PackageBroker, ProgressCallback
from .cache import IntegrityError, PackageCache, default_cache_dir, sha256_file
from .lock import (
    LockEntry,
    LockError,
    LockInfo,
    PyodideLock,
    UnknownPackageError,
    find_lock_file,
    load_lock,
    normalize_name,
)
from .source import (
    DEFAULT_PACKAGE_SOURCE,
    FolderSource,
    HttpSource,
    PackageSource,
    PackageSourceError,
    open_source,
)

__all__ = [
    "DEFAULT_PACKAGE_SOURCE",
    "AvailablePackage",
    "EnsureResult",
    "FolderSource",
    "HttpSource",
    "IntegrityError",
    "LockEntry",
    "LockError",
    "LockInfo",
    "PackageBroker",
    "PackageCache",
    "PackageSource",
    "PackageSourceError",
    "ProgressCallback",
    "PyodideLock",
    "UnknownPackageError",
    "default_cache_dir",
    "find_lock_file",
    "load_lock",
    "normalize_name",
    "open_source",
    "sha256_file",
]
