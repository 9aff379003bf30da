"""Runs, planning, the batch state machine and signing into the ledger — on SQLite and on
the real PostgreSQL server."""

from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from jobs import batches
from jobs.ids import new_run_id
from jobs.ledger import queries
from jobs.ledger.models import Batch, BatchState, Certificate, Run, RunState
from jobs.ledger.runs import finish_run, ledger, record_step_time, start_run
from jobs.settings import get_settings
from jobs.steps import sign
from jobs.storage import RunPaths
from tests.jobs.batches_support import (  # noqa: F401  (fixtures)
    assert_run_consistent,
    batch_env_fixture,
    dev_keys_fixture,
    ledger_certificates,
    ledger_url_fixture,
    make_run,
)


def test_run_ids_are_safe_and_unique() -> None:
    ids = {new_run_id() for _ in range(200)}
    assert len(ids) == 200
    for rid in ids:
        assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{8}", rid)
        RunPaths.of(rid)  # accepted as a folder name
    with pytest.raises(ValueError, match="invalid run id"):
        start_run("../etc")


def test_run_lifecycle(ledger_url: str) -> None:
    rid = start_run(parameters={"limit": 10})
    assert start_run(rid, parameters={"batch_size": 5}) == rid  # idempotent, merges
    record_step_time(rid, "extract", 1.5)
    record_step_time(rid, "sign", 2.0)
    record_step_time(rid, "sign", 3.25)
    finish_run(rid, RunState.FAILED, error="batch b0001 failed for 199001011234")
    with ledger().connect() as conn:
        run = conn.execute(select(Run).where(Run.id == rid)).one()
    assert run.state is RunState.FAILED
    assert run.parameters == {"limit": 10, "batch_size": 5}
    assert run.step_seconds == {"extract": 1.5, "sign": 5.25}
    assert "199001011234" not in run.error and "[IDNR]" in run.error
    assert run.counts["certificates"] == 0 and run.finished_at is not None
    start_run(rid)  # a rerun of the run: RUNNING again
    with ledger().connect() as conn:
        assert conn.execute(select(Run.state).where(Run.id == rid)).scalar_one() is RunState.RUNNING


def test_plan_is_stable_and_idempotent(batch_env, ledger_url: str) -> None:
    rid = make_run(250)
    ids = batches.plan(rid)
    assert ids == [f"{rid}-b0000", f"{rid}-b0001", f"{rid}-b0002"]
    assert batches.plan(rid) == ids
    paths = RunPaths.of(rid)
    sizes = [pq.read_table(paths.batch_payloads(b)).num_rows for b in ids]
    assert sizes == [100, 100, 50]
    # a lost slice file is restored from the recorded sizes, same rows
    first = pq.read_table(paths.batch_payloads(ids[1]))["order_id"].to_pylist()
    paths.batch_payloads(ids[1]).unlink()
    assert batches.plan(rid) == ids
    assert pq.read_table(paths.batch_payloads(ids[1]))["order_id"].to_pylist() == first
    with ledger().connect() as conn:
        rows = conn.execute(select(Batch).where(Batch.run_id == rid).order_by(Batch.seq)).all()
    assert [(r.seq, r.size, r.state) for r in rows] == [
        (0, 100, BatchState.PLANNED),
        (1, 100, BatchState.PLANNED),
        (2, 50, BatchState.PLANNED),
    ]


def test_batch_size_grows_to_respect_max_batches(batch_env, monkeypatch) -> None:
    s = get_settings(batch_size=10, max_batches=4)
    assert batches.batch_size_for(35, s) == 10
    assert batches.batch_size_for(41, s) == 11
    monkeypatch.setenv("BEVIS_BATCH_SIZE", "10")
    monkeypatch.setenv("BEVIS_MAX_BATCHES", "4")
    rid = make_run(95)
    ids = batches.plan(rid)
    assert len(ids) == 4
    sizes = [b.size for b in queries.batches_of(rid)]
    assert sizes == [24, 24, 24, 23]


def test_plan_without_payloads_says_what_to_do(batch_env) -> None:
    rid = start_run()
    with pytest.raises(FileNotFoundError, match="run the map step first"):
        batches.plan(rid)


def test_sign_state_machine_and_ledger(batch_env, ledger_url: str) -> None:
    rid = make_run(230)
    ids = batches.plan(rid)
    with pytest.raises(batches.StepOutOfOrder, match="sign must run before render"):
        batches.run_step(ids[0], "render")
    with pytest.raises(batches.UnknownBatch):
        batches.run_step(f"{rid}-b0099", "sign")
    results = [batches.run_step(b, "sign") for b in ids]
    assert [r["certificates"] for r in results] == [100, 100, 30]
    assert batches.run_step(ids[0], "sign")["skipped"] is True  # a rerun of a signed batch
    assert len(ledger_certificates(rid)) == 230
    with ledger().connect() as conn:
        b0 = conn.execute(select(Batch).where(Batch.id == ids[0])).one()
        c = conn.execute(select(Certificate).limit(1)).one()
    assert b0.state is BatchState.SIGNED and b0.attempts == 1 and b0.signed_at is not None
    assert b0.running_step is None and "sign" in b0.step_seconds
    assert c.kid and c.iat < c.exp and c.county and c.age_band and c.product and c.dn
    finish_run(rid, "SUCCEEDED")
    with ledger().connect() as conn:
        run = conn.execute(select(Run).where(Run.id == rid)).one()
    assert run.counts["certificates"] == 230 and run.counts["batches_signed"] == 3
    assert run.step_seconds["sign"] > 0
    assert_run_consistent(rid, 230)


def test_database_enforces_one_certificate_per_order(batch_env, ledger_url: str) -> None:
    """Not only code: a second certificate for an order is refused by the database, and the
    insert-or-ignore path leaves the first one in place on both dialects."""
    from sqlalchemy.exc import IntegrityError

    rid = make_run(100)
    [bid] = batches.plan(rid)
    batches.run_step(bid, "sign")
    [first] = [c for c in ledger_certificates(rid) if c.order_id.endswith("-00000000")]
    row = {c.name: getattr(first, c.name) for c in Certificate.__table__.columns}
    clone = {**row, "uvci": "URN:UVCI:01:SE:EHM/ANOTHER", "hc1_sha256": "0" * 64}
    with pytest.raises(IntegrityError), ledger().begin() as conn:
        conn.execute(Certificate.__table__.insert(), [clone])
    with ledger().begin() as conn:
        sign._insert_ignore(conn, [clone, row])
    certs = [c for c in ledger_certificates(rid) if c.order_id == first.order_id]
    assert [c.uvci for c in certs] == [first.uvci]


def test_half_done_batch_finishes_without_second_certificate(batch_env, ledger_url: str) -> None:
    """Crash after signed.parquet was written and part of the certificates recorded: the
    rerun signs nothing again and records the rest."""
    rid = make_run(150)
    ids = batches.plan(rid)
    batches.run_step(ids[0], "sign")
    signed_before = pq.read_table(RunPaths.of(rid).signed(ids[0]))
    with ledger().begin() as conn:  # simulate the crash: 60 rows lost, batch back in PLANNED
        victims = [c.order_id for c in ledger_certificates(rid)][:60]
        conn.execute(Certificate.__table__.delete().where(Certificate.order_id.in_(victims)))
        conn.execute(
            Batch.__table__.update().where(Batch.id == ids[0]).values(state=BatchState.PLANNED)
        )
    result = batches.run_step(ids[0], "sign")
    assert result["resumed"] is True and result["certificates"] == 100
    assert pq.read_table(RunPaths.of(rid).signed(ids[0])).equals(signed_before)
    batches.run_step(ids[1], "sign")
    assert_run_consistent(rid, 150)


def test_order_with_a_certificate_elsewhere_is_quarantined(batch_env, ledger_url: str) -> None:
    """The same order in a later run (a re-claimed order) never gets a second certificate."""
    from jobs.ledger.quarantine import read

    rid1 = make_run(100, prefix="DUP")
    [b1] = batches.plan(rid1)
    batches.run_step(b1, "sign")
    rid2 = make_run(100, prefix="DUP", seed=0)  # the very same order ids
    [b2] = batches.plan(rid2)
    result = batches.run_step(b2, "sign")
    assert result["certificates"] == 0 and result["quarantined"] == 100
    q = read(rid2).to_pylist()
    assert {r["reason_code"] for r in q} == {"already_issued"}
    assert all(r["pid"] and r["order_id"] for r in q)
    assert len(ledger_certificates(rid2)) == 0 and len(ledger_certificates(rid1)) == 100
