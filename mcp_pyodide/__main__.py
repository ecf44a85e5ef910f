"""`python -m mcp_pyodide` behaves exactly like the `mcp-pyodide` command."""

from ._entry import main

raise SystemExit(main())
