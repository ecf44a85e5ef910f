"""`python -m mcp_pyodide` behaves exactly like the `mcp-pyodide` command."""

from .cli import main

raise SystemExit(main())
