"""Class 2 of the second red-team round: nothing a sandbox made is persisted for other servers.

matplotlib's font list is shared by every server on the machine. It used to be taken from the
first user run that built it, so a run could forge it and break figures everywhere. Now the broker
builds it in a clean runtime of its own; whatever a user run hands over is never written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import mcp_types as types
import pytest
from sec_support import ALLOW_ALL, SECRET, SECRET_NAME, ServerHandle, text_of
from support import offline_packages_dir

FORGED = json.dumps({"_version": 330, "ttflist": [], "afmlist": [], "forged": True})
FORGE = f"""\
import gc, os
import matplotlib.font_manager
for o in gc.get_objects():
    if type(o).__name__ == 'FigureSaver':
        o.font_cache = {FORGED!r}
try:
    open(os.path.join(os.environ['MPLCONFIGDIR'], 'fontlist.json'), 'w').write({FORGED!r})
    print('wrote the shared cache')
except OSError as exc:
    print('refused:', exc)
import matplotlib.pyplot as plt
plt.plot([1, 2]); plt.show()
"""
DRAW = "import matplotlib.pyplot as plt\nplt.plot([3, 1, 2])\nplt.show()"


@pytest.fixture
def cache_root() -> Iterator[Path]:
    """A cache root of its own (no font list yet), with the installed runtime copied in."""
    root = Path(tempfile.mkdtemp(prefix="mcp-sec-cache-"))
    shared = Path(os.environ.get("MCP_PYODIDE_CACHE_ROOT", "")) / "node-runtime"
    if shared.is_dir():
        shutil.copytree(shared, root / "node-runtime", symlinks=True)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def start(root: Path) -> ServerHandle:
    env = {SECRET_NAME: SECRET, "MCP_PYODIDE_CACHE_ROOT": str(root)}
    return ServerHandle("--policy", ALLOW_ALL, "--package-source", str(offline_packages_dir()), env=env).start()


def has_png(result: types.CallToolResult) -> bool:
    return any(isinstance(b, types.ImageContent) and b.mime_type == "image/png" for b in result.content)


def test_a_forged_font_cache_never_reaches_the_next_server(cache_root: Path) -> None:
    font_list = cache_root / "matplotlib" / "fontlist.json"
    first = start(cache_root)
    try:
        result = first.execute(FORGE)
        assert "wrote the shared cache" not in text_of(result)
        deadline = time.monotonic() + 180  # the clean build runs in the background
        while not font_list.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert font_list.exists(), "the broker did not build the font cache"
        kept = json.loads(font_list.read_text())
        assert "forged" not in kept and kept["ttflist"], "the shared font cache is not a clean one"
    finally:
        first.close()
    second = start(cache_root)
    try:
        result = second.execute(DRAW)
        assert not result.is_error and has_png(result), text_of(result)
    finally:
        second.close()
