"""Alembic environment for the sources database (shared logic in jobs/migrations/_env.py)."""

from jobs.migrations._env import run

run("sources")
