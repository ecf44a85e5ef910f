"""mcp-pyodide: an MCP server that runs Python in a Pyodide sandbox hosted by Node.js."""

__version__ = "0.1.0"
