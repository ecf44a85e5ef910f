"""The MCP floor: a trivial Python MCP server over stdio with one tool that does nothing.

`benchmarks/run.py` times `echo` calls through the same MCP client as mcp-pyodide's
calls, so the difference between the two is what mcp-pyodide itself adds per call
(policy, the pipe to Node, the worker, output capture), not the MCP SDK.
"""

from mcp.server import MCPServer

server = MCPServer("trivial")


@server.tool()
def echo(code: str) -> str:
    """Return the argument unchanged."""
    return code


@server.tool()
def size(code: str) -> int:
    """Return the argument's length (the floor for sending a big cell: nothing big comes back)."""
    return len(code)


@server.tool()
def repeat(n: int) -> str:
    """Return n times "x" (the floor for a big result: the SDK sends it as text and as structured content)."""
    return "x" * n


if __name__ == "__main__":
    server.run()
