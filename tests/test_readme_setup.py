"""The README's set-up commands, run as written from a fresh copy of the repository in a clean home.

The commands are read out of README.md, so this fails when the README changes without it:
the install lines run in a shell, the last line (the server) is started and must answer the
real MCP client, with no runtime cached anywhere and HOME in a temporary folder. pip's and
npm's download caches are reused to keep it bounded; nothing else is carried over.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import mcp_types as types
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from support import REPO

INSTALL_TIMEOUT_S = 900


def readme_blocks(section: str) -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    body = text[text.index(f"## {section}\n") :]
    body = body[: body.find("\n## ", 1)]
    blocks = re.findall(r"```sh\n(.*?)```", body, re.S)
    return [[line.split("  #")[0].strip() for line in block.splitlines() if line.strip()] for block in blocks]


def fresh_copy(target: Path) -> None:
    """What a fresh clone of this working tree holds: tracked and new files, nothing ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def clean_env(home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "http_proxy", "https_proxy", "no_proxy", "SSL_CERT_FILE")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    # No interpreter of ours on PATH: `python3` is the machine's.
    ours = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != ours)
    env["HOME"] = str(home)
    real_home = Path(os.path.expanduser("~"))
    env["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR", str(real_home / ".cache" / "pip"))
    env["npm_config_cache"] = os.environ.get("npm_config_cache", str(real_home / ".npm"))
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def test_the_readme_set_up_commands_work_as_written(tmp_path: Path) -> None:
    install_and_run, tests = readme_blocks("Set-up")
    *install, serve = install_and_run
    assert install, "the README's set-up block has no install line"
    # The test command is what CI runs.
    ci = (REPO / ".ci" / "run").read_text()
    assert any(line.strip().startswith(tests[0]) for line in ci.splitlines()), tests

    clone, home = tmp_path / "mcp-pyodide", tmp_path / "home"
    clone.mkdir()
    home.mkdir()
    fresh_copy(clone)
    env = clean_env(home)
    for line in install:
        proc = subprocess.run(
            ["bash", "-c", line], cwd=clone, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
        )
        assert proc.returncode == 0, f"{line!r} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    command, *args = shlex.split(serve)
    if "/" in command:
        command = str(clone / command)
    log = tmp_path / "server.log"

    async def talk() -> types.CallToolResult:
        params = StdioServerParameters(command=command, args=args, env=env, cwd=str(clone))
        with log.open("w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                assert "pyodide_execute" in [tool.name for tool in tools.tools]
                return await session.call_tool("pyodide_execute", {"code": "print('hello'); 6 * 7"})

    result = asyncio.run(asyncio.wait_for(talk(), 300))
    stderr = log.read_text()
    assert not result.is_error, stderr
    assert result.structured_content is not None
    assert result.structured_content["result"] == "42" and result.structured_content["stdout"] == "hello\n"
    # The installed package carried the runtime: nothing was installed from npm at start.
    assert "installing the Pyodide" not in stderr
    assert not list(home.rglob("node-runtime"))
