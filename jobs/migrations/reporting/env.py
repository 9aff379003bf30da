"""Alembic environment for the reporting database (shared logic in jobs/migrations/_env.py)."""

from jobs.migrations._env import run

run("reporting")
