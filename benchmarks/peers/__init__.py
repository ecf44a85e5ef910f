"""Other MCP Python sandboxes that benchmarks/run.py measures in the same run (script-side only)."""
