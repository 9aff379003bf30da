"""Alembic environment for the ledger database (shared logic in jobs/migrations/_env.py)."""

from jobs.migrations._env import run

run("ledger")
