"""CLI commands, one module per area (see jobs/cli.py)."""
