"""Where interpreters run when not in this process: `--backend ray` (the `[ray]` extra)."""
