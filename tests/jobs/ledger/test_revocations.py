"""Revocations and revocation batches in the ledger (jobs/ledger/revocations.py), on real
SQLite and PostgreSQL: who, when and why are recorded once and never deleted; an unknown
UVCI revokes nothing; batches hold at most 1000 entries of one kid and hash type, expire
with their latest certificate, and a rerun (or a second planner at the same time) plans
nothing twice."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jobs.errors import Refusal, UnknownCertificate
from jobs.ledger import revocations as rv
from jobs.ledger.models import (
    Batch,
    BatchState,
    Certificate,
    Revocation,
    RevocationBatch,
    RevocationBatchEntry,
    Run,
    RunState,
)
from jobs.ledger.runs import ledger
from jobs.settings import Settings
from signing.revocation import HASH_TYPES, h128

NOW = datetime.now(UTC).replace(microsecond=0)
KID_A, KID_B = "AAAAAAAAAAA=", "BBBBBBBBBBB="


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, bevis_env: Path) -> Settings:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    return Settings(data_dir=bevis_env, ledger_url=url)


def uvci(i: int) -> str:
    return f"URN:UVCI:01:SE:EHM/R{i:010d}#X"


def _certificates(
    settings: Settings, n: int, *, kid: str = KID_A, start: int = 0, exp_days: float = 30,
    hashes: bool = True,
) -> list[str]:  # fmt: skip
    now = datetime.now(UTC)
    run = f"run-r{start}"
    with ledger(settings).begin() as conn:
        conn.execute(
            Run.__table__.insert(),
            {"id": run, "started_at": now, "state": RunState.SUCCEEDED, "parameters": {},
             "counts": {}, "step_seconds": {}},
        )  # fmt: skip
        conn.execute(
            Batch.__table__.insert(),
            {"id": f"{run}-b0000", "run_id": run, "seq": 0, "size": n,
             "state": BatchState.DELIVERED, "attempts": 1, "step_seconds": {}, "planned_at": now},
        )  # fmt: skip
        rows = []
        for i in range(start, start + n):
            u = uvci(i)
            rows.append(
                {"uvci": u, "order_id": f"O{i}", "pid": f"p{i}", "run_id": run,
                 "batch_id": f"{run}-b0000", "cert_type": "v", "kid": kid,
                 "iat": int(now.timestamp()), "exp": int(now.timestamp() + exp_days * 86400) + i,
                 "hc1_sha256": "0" * 64, "issued_at": now,
                 "issuer_country": "SE" if hashes else None,
                 "hash_uci": h128(u.encode()) if hashes else None,
                 "hash_countrycodeuci": h128(("SE" + u).encode()) if hashes else None,
                 "hash_signature": h128(b"sig" + u.encode()) if hashes else None}
            )  # fmt: skip
        conn.execute(Certificate.__table__.insert(), rows)
    return [uvci(i) for i in range(start, start + n)]


def _count(settings: Settings, table) -> int:
    with ledger(settings).connect() as conn:
        return conn.scalar(select(func.count()).select_from(table))


def test_revoke_records_who_when_why_once(settings: Settings) -> None:
    uvcis = _certificates(settings, 3)
    first = rv.revoke(
        uvcis[:2], "wrong_person", who="anna", note="incident 4711", settings=settings
    )
    assert [r.uvci for r in first] == uvcis[:2]
    assert {(r.reason, r.who, r.note) for r in first} == {("wrong_person", "anna", "incident 4711")}
    # twice: a no-op with the same answer (the first reason, operator and time stand)
    again = rv.revoke(uvcis[:2], "wrong_data", who="bertil", settings=settings)
    assert [r.as_dict() for r in again] == [r.as_dict() for r in first]
    assert _count(settings, Revocation) == 2
    with ledger(settings).connect() as conn:
        revoked = dict(conn.execute(select(Certificate.uvci, Certificate.revoked_at)).all())
    assert revoked[uvcis[0]] and revoked[uvcis[1]] and revoked[uvcis[2]] is None
    assert rv.revocation_of(uvcis[0], settings).who == "anna"
    assert rv.revocation_of(uvcis[2], settings) is None
    assert rv.revocation_counts(settings) == {"wrong_person": 2}


def test_unknown_uvci_revokes_nothing(settings: Settings) -> None:
    uvcis = _certificates(settings, 2)
    with pytest.raises(UnknownCertificate, match=r"URN:UVCI:01:SE:EHM/NOPE.*nothing was revoked"):
        rv.revoke(
            [uvcis[0], "URN:UVCI:01:SE:EHM/NOPE"], "wrong_result", who="anna", settings=settings
        )
    assert _count(settings, Revocation) == 0


def test_refusals_name_no_personal_data(settings: Settings) -> None:
    uvcis = _certificates(settings, 1)
    with pytest.raises(Refusal, match="identity number") as err:
        rv.revoke(uvcis, "wrong_person", who="anna", note="it was 19121212-1212", settings=settings)
    assert "19121212" not in str(err.value)
    with pytest.raises(Refusal, match="not one of"):
        rv.revoke(uvcis, "because", who="anna", settings=settings)
    with pytest.raises(Refusal, match="who"):
        rv.revoke(uvcis, "wrong_person", who=" ", settings=settings)
    assert _count(settings, Revocation) == 0


def test_batches_per_kid_and_type_at_most_1000(settings: Settings) -> None:
    a = _certificates(settings, 2503, kid=KID_A)
    b = _certificates(settings, 4, kid=KID_B, start=10_000)
    rv.revoke(a + b, "key_compromise", who="ops", settings=settings)
    plan = rv.plan_batches(HASH_TYPES, settings, NOW)
    assert len(plan.new_batches) == 3 * (3 + 1) and plan.missing_hashes == [] and plan.expired == 0
    live = rv.live_batches(settings, NOW)
    sizes = sorted((r.hash_type, r.kid, r.entries) for r, _doc in live)
    for t in HASH_TYPES:
        assert [(k, n) for ht, k, n in sizes if ht == t] == [
            (KID_A, 503), (KID_A, 1000), (KID_A, 1000), (KID_B, 4)
        ]  # fmt: skip
    with ledger(settings).connect() as conn:
        exp_a = conn.scalar(select(func.max(Certificate.exp)).where(Certificate.kid == KID_A))
    for row, doc in live:
        dto = json.loads(doc)
        assert dto["country"] == "SE" and dto["kid"] == row.kid and dto["hashType"] == row.hash_type
        assert len(dto["entries"]) == row.entries
        hashes = [e["hash"] for e in dto["entries"]]
        assert hashes == sorted(hashes) and len(set(hashes)) == len(hashes)
    # expires = the latest exp of its certificates
    last_a = max((r for r, _ in live if r.kid == KID_A), key=lambda r: r.expires)
    assert int(rv._aware(last_a.expires).timestamp()) == exp_a
    # every revoked certificate is in exactly one batch per type; a rerun plans nothing
    assert _count(settings, RevocationBatchEntry) == 3 * 2507
    assert rv.plan_batches(HASH_TYPES, settings, NOW).new_batches == []
    # a new revocation gets a new batch (the old ones never change)
    c = _certificates(settings, 1, kid=KID_B, start=20_000)
    rv.revoke(c, "superseded", who="ops", settings=settings)
    new = rv.plan_batches(["UCI"], settings, NOW).new_batches
    assert new == [f"SE-UCI-{rv._kid_hex(KID_B)}-0002"]


def test_expired_and_hashless_certificates_are_in_no_batch(settings: Settings) -> None:
    old = _certificates(settings, 2, exp_days=-1)
    bare = _certificates(settings, 1, start=100, hashes=False)
    ok = _certificates(settings, 1, start=200)
    rv.revoke(old + bare + ok, "wrong_data", who="ops", settings=settings)
    plan = rv.plan_batches(["UCI"], settings, NOW)
    assert len(plan.new_batches) == 1 and plan.missing_hashes == bare and plan.expired == 2
    # a batch whose expires has passed, or that the gateway deleted, is not live
    assert len(rv.live_batches(settings, NOW)) == 1
    assert rv.live_batches(settings, NOW + timedelta(days=40)) == []
    rv.mark_deleted(plan.new_batches[0], settings)
    assert rv.live_batches(settings, NOW) == []


def test_two_planners_at_once_plan_each_certificate_once(settings: Settings) -> None:
    uvcis = _certificates(settings, 1500)
    rv.revoke(uvcis, "key_compromise", who="ops", settings=settings)
    results, errors = [], []

    def plan() -> None:
        try:
            results.append(rv.plan_batches(HASH_TYPES, settings, NOW))
        except Exception as exc:  # pragma: no cover - the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=plan) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _count(settings, RevocationBatchEntry) == 3 * 1500
    assert sum(len(r.new_batches) for r in results) == 3 * 2 == _count(settings, RevocationBatch)
