"""Quarantine keeps every held-back record with its reason, idempotently."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from jobs.db import engine
from jobs.ledger import quarantine
from jobs.ledger.models import QuarantineEntry
from jobs.settings import get_settings

ENTRIES = [
    {
        "suite": "nvr_extract",
        "expectation": "luhn",
        "reason_code": "invalid_check_digit",
        "pid": "p1",
        "order_id": "o1",
        "event_id": "e1",
        "detail": "check digit",
    },
    {
        "suite": "nvr_extract",
        "expectation": "dose",
        "reason_code": "dose_out_of_range",
        "pid": "p2",
        "order_id": "o2",
        "event_id": None,
    },
]


def _count(url: str) -> int:
    with engine(url).connect() as conn:
        return conn.execute(select(func.count()).select_from(QuarantineEntry)).scalar_one()


def test_record_writes_parquet_and_ledger_idempotently(bevis_env) -> None:
    assert quarantine.record("r1", "validate", ENTRIES) == 2
    assert quarantine.record("r1", "validate", ENTRIES) == 2  # rerun
    url = get_settings().resolved_ledger_url()
    assert _count(url) == 2
    table = quarantine.read("r1")
    assert sorted(table.column("reason_code").to_pylist()) == [
        "dose_out_of_range",
        "invalid_check_digit",
    ]


def test_entry_without_reason_is_refused(bevis_env) -> None:
    with pytest.raises(ValueError, match="order o9"):
        quarantine.record("r1", "map", [{"order_id": "o9"}])


@pytest.mark.postgres
def test_record_on_postgres(bevis_env, pg_url, monkeypatch) -> None:
    monkeypatch.setenv("BEVIS_LEDGER_URL", pg_url)
    quarantine.record("r1", "validate", ENTRIES)
    quarantine.record("r1", "validate", ENTRIES)
    assert _count(pg_url) == 2
