"""A second front-end, in its own process: runs one call of a session through `RaySandboxes` and prints it.

Used by tests/ray_cases.py: `python tests/ray_frontend.py ADDRESS NAMESPACE HANDLE_ID OUTPUT CODE`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from mcp_pyodide.backends.ray_provider import RaySandboxes
from mcp_pyodide.config import RuntimeConfig
from mcp_pyodide.server.handles import ANONYMOUS, Handle, folder_of


async def main(address: str, namespace: str, handle_id: str, output: str, code: str) -> None:
    provider = RaySandboxes(
        RuntimeConfig(output_dir=Path(output)),
        address=address,
        namespace=namespace,
        num_cpus=0.5,
        memory_bytes=200 * 1024 * 1024,
    )
    handle = Handle(
        id=handle_id,
        label="b",
        principal=ANONYMOUS,
        created=0.0,
        last_used=0.0,
        folder=folder_of(handle_id),
        here=False,
    )
    result = await (await provider.get(handle)).execute(code, timeout_ms=30_000)
    print(
        json.dumps(
            {
                "result": result.result,
                "error": result.error and result.error.type,
                "note": provider.take_reset_note(handle_id),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
