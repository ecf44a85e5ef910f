"""The output folder is walked only after a run that reported a change (see `_outputs.Tracker`).

These pin what that shortcut must keep: files that appear without a report (a guest that got past
the worker's write hooks, or anyone else writing into the folder) are never returned, neither by
that run nor by a later one, and changes made between calls are never a run's own.
"""

from __future__ import annotations

import os
import time

from sec_support import Sandbox, sc, text_of

WAIT_FOR_PLANT = """\
import os, time
for _ in range(400):
    if os.path.exists('/mnt/output/planted.txt'):
        break
    time.sleep(0.025)
print('seen' if os.path.exists('/mnt/output/planted.txt') else 'never seen')
"""


def names(result: object) -> list[str]:
    data = sc(result)  # type: ignore[arg-type]
    return sorted(os.path.basename(p) for p in data["figures"] + data["files"])


def test_a_file_written_during_a_run_without_a_report_is_not_returned(sandbox: Sandbox) -> None:
    out = sandbox.handle.output_dir
    pending = sandbox.handle.run_async_call("pyodide_execute", {"code": WAIT_FOR_PLANT})
    (out / "planted.txt").write_text("host secret 7f3a")
    result = pending.result(120)
    assert "seen" in text_of(result), text_of(result)
    assert names(result) == []
    assert "host secret" not in text_of(result) + repr(sc(result))
    # A later run that does write is answered with its own file only.
    later = sandbox.run("open('/mnt/output/mine.txt', 'w').write('mine')")
    assert names(later) == ["mine.txt"]
    (out / "planted.txt").unlink()
    sandbox.assert_healthy()


def test_changes_made_between_calls_are_not_the_next_runs(sandbox: Sandbox) -> None:
    out = sandbox.handle.output_dir
    sandbox.run("1+1")  # the folder as seen after a call
    (out / "between.txt").write_text("made by someone else")
    os.utime(out / "between.txt", ns=(1_000_000_000, 1_000_000_000))  # an old file copied in
    time.sleep(0.03)  # file times tick every few ms (the kernel's coarse clock): be a tick past it
    result = sandbox.run("open('/mnt/output/own.txt', 'w').write('own')")
    assert names(result) == ["own.txt"]
    (out / "between.txt").unlink()


def test_truncating_and_renaming_are_reported_and_returned(sandbox: Sandbox) -> None:
    sandbox.run("open('/mnt/output/t.txt', 'w').write('data'); open('/mnt/output/r.txt', 'w').write('r')")
    truncated = sandbox.run("open('/mnt/output/t.txt', 'w').close()")
    assert names(truncated) == ["t.txt"]
    renamed = sandbox.run("import os; os.rename('/mnt/output/r.txt', '/mnt/output/moved.txt')")
    assert names(renamed) == ["moved.txt"]
    assert sc(renamed)["files_not_returned"] == 0
