"""The `mcp-pyodide` helper subcommands, one module each; `cli.py` dispatches to them."""
