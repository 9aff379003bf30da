"""Shared fixtures: isolated settings per test, real PostgreSQL and Redis servers.

PostgreSQL and Redis tests skip with a clear message when the servers cannot be reached,
except in CI (``BEVIS_REQUIRE_SERVICES=1``, set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Airflow reads its configuration on import: give the test session a private home first.
if "AIRFLOW_HOME" not in os.environ:
    import tempfile

    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="bevis-airflow-home-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# Tests run in development mode: the published development secrets are allowed (tests of
# the refusal unset it). Child processes (Airflow, the console script) inherit it.
os.environ["BEVIS_DEV_MODE"] = "1"

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DCC = SHARED / "dcc"
PG_ADMIN_URL = os.environ.get(
    "BEVIS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("BEVIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def services_required() -> bool:
    return os.environ.get("BEVIS_REQUIRE_SERVICES", "") not in ("", "0", "false")


def _unavailable(what: str, exc: BaseException) -> None:
    msg = f"{what} not reachable ({type(exc).__name__}: {exc})"
    if services_required():
        pytest.fail(f"{msg} — BEVIS_REQUIRE_SERVICES is set, so this is a failure", pytrace=False)
    pytest.skip(f"{msg}; start it or set BEVIS_TEST_PG_URL / BEVIS_TEST_REDIS_URL")


@pytest.fixture
def bevis_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data folder and settings for one test; returns the data folder."""
    data = tmp_path / "data"
    data.mkdir()
    for key in list(os.environ):
        if key.startswith("BEVIS_") and key not in ("BEVIS_REQUIRE_SERVICES",):
            monkeypatch.delenv(key)
    monkeypatch.setenv("BEVIS_DATA_DIR", str(data))
    monkeypatch.setenv("BEVIS_DEV_MODE", "1")
    return data


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """URL of the admin database on the real PostgreSQL server."""
    from sqlalchemy import create_engine, text

    try:
        eng = create_engine(PG_ADMIN_URL)
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
    except Exception as exc:
        _unavailable("PostgreSQL at 127.0.0.1:5432", exc)
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A brand-new PostgreSQL database for one test, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"bevis_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        from jobs.db import engine

        with contextlib.suppress(Exception):
            engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(16).startswith(b"+PONG"):
                raise ConnectionError("no PONG")
    except Exception as exc:
        _unavailable("Redis at 127.0.0.1:6379", exc)
    return REDIS_URL
