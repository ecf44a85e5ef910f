"""Class 1 of the second red-team round: the broker decides what a run produced, not the guest.

Each snippet forges the figure list the guest reports (reaching the figure saver through `gc`)
and plants something in the output folder. The broker must return no host data, stay small in
memory, serve as image/png only real PNGs of a bounded size, and keep answering.
"""

from __future__ import annotations

import base64
import os

import mcp_types as types
import psutil
from sec_support import Sandbox, sc, text_of
from support import offline_packages_dir

SERVER_ARGS = ("--package-source", str(offline_packages_dir()))

FORGE = """\
import gc
saver = next(o for o in gc.get_objects() if type(o).__name__ == 'FigureSaver')
"""
MAX_GROWTH = 64 * 2**20


def rss(sb: Sandbox) -> int:
    return int(psutil.Process(sb.handle.server_process().pid).memory_info().rss)


def images(result: types.CallToolResult) -> list[bytes]:
    return [base64.b64decode(b.data) for b in result.content if isinstance(b, types.ImageContent)]


def test_a_sparse_700_mb_file_in_the_figure_list_is_not_read(sandbox: Sandbox) -> None:
    before = rss(sandbox)
    code = FORGE + (
        "with open('/mnt/output/huge.png', 'wb') as f:\n"
        "    f.write(b'\\x89PNG\\r\\n\\x1a\\n')\n"
        "    f.truncate(700 * 2**20)\n"
        "for _ in range(5): saver.saved.append('/mnt/output/huge.png')\n"
    )
    result = sandbox.run(code)
    assert all(len(data) <= 2 * 2**20 for data in images(result))
    assert not images(result)
    assert rss(sandbox) - before < MAX_GROWTH, "the server grew while handling one call"
    (sandbox.handle.output_dir / "huge.png").unlink()
    sandbox.assert_healthy()


def test_a_symlink_to_host_files_is_neither_listed_nor_read(sandbox: Sandbox) -> None:
    code = FORGE + (
        "import os\n"
        "for name, target in (('pw.png', '/etc/passwd'), ('dir', '/etc')):\n"
        "    try:\n"
        "        os.symlink(target, '/mnt/output/' + name)\n"
        "    except OSError as exc:\n"
        "        print('symlink refused', exc)\n"
        "saver.saved += ['/mnt/output/pw.png', '/mnt/output/dir/passwd', '/etc/passwd']\n"
    )
    # Also plant them from the host side, as a guest that escaped the NODEFS checks could.
    out = sandbox.handle.output_dir
    for name, target in (("pw2.png", "/etc/passwd"), ("dir2", "/etc")):
        if not (out / name).is_symlink():
            os.symlink(target, out / name)
    result = sandbox.run(code + "saver.saved += ['/mnt/output/pw2.png', '/mnt/output/dir2/passwd']\n")
    data = sc(result)
    blob = text_of(result) + repr(data) + repr(images(result))
    assert "root:x:0:0" not in blob
    assert not images(result)
    assert all("passwd" not in path and "pw" not in os.path.basename(path) for path in data["figures"] + data["files"])
    sandbox.assert_healthy()


def test_30000_fake_entries_give_a_bounded_answer(sandbox: Sandbox) -> None:
    before = rss(sandbox)
    code = FORGE + (
        "for i in range(100):\n"
        "    open(f'/mnt/output/real-{i}.txt', 'w').write('x')\n"
        "saver.saved.extend(f'/mnt/output/fake-{i}.png' for i in range(30_000))\n"
    )
    result = sandbox.run(code)
    data = sc(result)
    assert len(result.content) < 50, f"{len(result.content)} content blocks from one call"
    assert len(data["figures"]) + len(data["files"]) <= 32
    assert data["files_not_returned"] == 100 - len(data["figures"]) - len(data["files"])
    assert not data["figures"]
    assert rss(sandbox) - before < MAX_GROWTH
    sandbox.assert_healthy()


def test_a_text_file_named_png_is_never_served_as_an_image(sandbox: Sandbox) -> None:
    code = FORGE + (
        "open('/mnt/output/fake.png', 'w').write('just text, not an image')\n"
        "saver.saved.append('/mnt/output/fake.png')\n"
    )
    result = sandbox.run(code)
    data = sc(result)
    assert not images(result)
    assert not data["figures"]
    assert [os.path.basename(p) for p in data["files"]] == ["fake.png"]
    sandbox.assert_healthy()


def test_a_fifo_in_the_output_folder_does_not_hang_the_broker(sandbox: Sandbox) -> None:
    fifo = sandbox.handle.output_dir / "pipe.png"
    os.mkfifo(fifo)
    result = sandbox.run(FORGE + "saver.saved.append('/mnt/output/pipe.png')\n", wait_s=60)
    assert not images(result) and not sc(result)["figures"]
    fifo.unlink()
    sandbox.assert_healthy()


def test_a_real_figure_is_still_served_inline(sandbox: Sandbox) -> None:
    result = sandbox.run("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()", wait_s=300)
    assert not result.is_error, text_of(result)
    [png] = images(result)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(sc(result)["figures"]) == 1
