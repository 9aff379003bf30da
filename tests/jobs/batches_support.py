"""Fixtures and helpers shared by the batch machinery tests (imported by test_batches_*)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Development keys are made once per session and copied into each test's data folder.
_KEYS: dict[str, Path] = {}


@pytest.fixture(scope="session", name="dev_keys")
def dev_keys_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from signing.keys import init_dev_keys

    folder = tmp_path_factory.mktemp("keys")
    init_dev_keys(folder)
    return folder


@pytest.fixture(
    name="ledger_url",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def ledger_url_fixture(request: pytest.FixtureRequest, bevis_env: Path, monkeypatch) -> str:
    """The ledger on SQLite (default) and on the real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{bevis_env / 'ledger.db'}"
    url = request.getfixturevalue("pg_url")
    monkeypatch.setenv("BEVIS_LEDGER_URL", url)
    return url


@pytest.fixture(name="batch_env")
def batch_env_fixture(bevis_env: Path, dev_keys: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings for signing in a fresh data folder: dev keys, two workers, small batches."""
    monkeypatch.setenv("BEVIS_KEY_DIR", str(dev_keys))
    monkeypatch.setenv("BEVIS_WORKERS", "2")
    monkeypatch.setenv("BEVIS_BATCH_SIZE", "100")
    return bevis_env


def make_run(n: int, prefix: str = "T", seed: int = 0) -> str:
    """A run with ``n`` synthetic payloads in its folder (the map step's output)."""
    from jobs.devtools.synthetic import synthetic_payloads
    from jobs.ids import new_run_id
    from jobs.ledger.runs import start_run
    from jobs.storage import RunPaths, write_parquet_atomic

    run_id = start_run(new_run_id())
    write_parquet_atomic(
        synthetic_payloads(n, seed=seed, prefix=prefix), RunPaths.of(run_id).payloads
    )
    return run_id


def ledger_certificates(run_id: str | None = None) -> list:
    from sqlalchemy import select

    from jobs.ledger.models import Certificate
    from jobs.ledger.runs import ledger

    q = select(Certificate)
    if run_id:
        q = q.where(Certificate.run_id == run_id)
    with ledger().connect() as conn:
        return list(conn.execute(q).all())


def assert_run_consistent(run_id: str, expected_orders: int) -> None:
    """Every order exactly one certificate; ledger rows match the signed files; every
    certificate verifies (decode, signature, schema) with the DSC."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.ledger.queries import batches_of
    from jobs.settings import get_settings
    from jobs.storage import RunPaths
    from signing.keys import load_signer
    from signing.verify import verify

    paths = RunPaths.of(run_id)
    batches = batches_of(run_id)
    assert batches and all(b.state.value == "SIGNED" for b in batches), [
        (b.id, b.state, b.error) for b in batches
    ]
    signed = pa.concat_tables([pq.read_table(paths.signed(b.id)) for b in batches])
    orders = signed["order_id"].to_pylist()
    assert len(orders) == len(set(orders)) == expected_orders
    certs = {c.order_id: c for c in ledger_certificates(run_id)}
    assert len(certs) == expected_orders
    payload_orders = set(pq.read_table(paths.payloads)["order_id"].to_pylist())
    assert set(certs) == payload_orders
    dsc = load_signer(get_settings().key_source()).dsc
    for row in signed.to_pylist():
        c = certs[row["order_id"]]
        assert c.uvci == row["uvci"]
        assert c.hc1_sha256 == hashlib.sha256(row["hc1"].encode()).hexdigest()
        assert c.batch_id in {b.id for b in batches}
        v = verify(row["hc1"], trust=[dsc])
        assert v.valid, (row["order_id"], v.reasons)
        assert v.payload["v"][0]["ci"] == row["uvci"]
    sizes = {b.id: b.size for b in batches}
    assert sum(sizes.values()) == expected_orders


def env_without_fault() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("BEVIS_FAULT", None)
    return env
