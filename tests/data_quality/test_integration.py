"""Acceptance with the real generator: seed → extract → validate, compared with the
generator's manifest (the truth): every injected defect is quarantined with its reason
code, and nothing else but the orders of people with no vaccination."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs.devtools.seed import seed
from jobs.ledger import quarantine
from jobs.steps.extract import extract
from jobs.steps.validate import validate
from jobs.storage import RunPaths


@pytest.fixture(autouse=True)
def _log_to_current_stderr() -> None:
    """structlog's default logger keeps the stream it was made with (a closed pytest or
    CliRunner capture, later); ours writes to the current sys.stderr."""
    from jobs.log import configure_logging

    configure_logging("INFO")


def _seed_extract_validate(run_id: str, persons: int, defect_rate: float):
    manifest = seed(persons, seed=11, defect_rate=defect_rate)
    extract(run_id)
    result = validate(run_id, "nvr_extract")
    return manifest, result


def _check_against_manifest(run_id: str, manifest, result) -> None:
    paths = RunPaths.of(run_id)
    table = pq.read_table(paths.extract)
    entries = quarantine.read(run_id).to_pylist()
    got = {(e["reason_code"], e["order_id"]) for e in entries}
    got_events = {(e["reason_code"], e["order_id"], e["event_id"]) for e in entries}

    defect_orders = set()
    for kind, hits in manifest.defects.items():
        assert hits, f"the generator injected no {kind}; seed more persons"
        for hit in hits:
            defect_orders.add(hit["order_id"])
            assert (kind, hit["order_id"]) in got, f"{kind} of order {hit['order_id']} missed"
            if hit.get("event_id"):
                assert (kind, hit["order_id"], hit["event_id"]) in got_events

    no_event = table.filter(pc.is_null(table.column("event_id")))
    no_vaccination = set(no_event.column("order_id").to_pylist())
    assert len(no_vaccination) == manifest.order_categories["no_vaccination"]
    assert {e["order_id"] for e in entries if e["reason_code"] == "no_vaccination"} == (
        no_vaccination
    )
    # clean orders pass untouched
    quarantined = {e["order_id"] for e in entries}
    assert defect_orders | no_vaccination <= quarantined
    unrecorded = _unrecorded_defects(table, entries, quarantined - defect_orders - no_vaccination)
    assert quarantined == defect_orders | no_vaccination | unrecorded
    validated = pq.read_table(paths.validated)
    keep = pc.invert(pc.is_in(table.column("order_id"), value_set=pa.array(sorted(quarantined))))
    assert validated.equals(table.filter(keep))
    assert result.quarantined_orders == len(quarantined)


def _unrecorded_defects(table, entries, extra: set[str]) -> set[str]:
    """Orders quarantined beyond the manifest are accepted only when the raw data shows the
    defect, re-checked here independently: jobs/devtools/seed.py (as of this writing) dates some
    primary doses a day or two before their product's EU authorisation without recording
    it (e.g. Spikevax on 2021-01-05, authorised 2021-01-06)."""
    from datetime import date

    from transforms.products import authorised_from, normalise_vaccine

    auth = authorised_from()
    rows = {(r["order_id"], r["event_id"]): r for r in table.to_pylist() if r["order_id"] in extra}
    explained = set()
    for e in entries:
        if e["order_id"] not in extra:
            continue
        assert e["reason_code"] == "before_authorisation", e
        r = rows[(e["order_id"], e["event_id"])]
        assert r["vaccination_date"] < date.fromisoformat(auth[normalise_vaccine(r["vaccine"])])
        explained.add(e["order_id"])
    return explained


def test_generator_defects_land_in_quarantine_sqlite(bevis_env) -> None:
    manifest, result = _seed_extract_validate("dq-it", 2000, 0.01)
    _check_against_manifest("dq-it", manifest, result)


@pytest.mark.postgres
@pytest.mark.slow
def test_generator_defects_land_in_quarantine_postgres(bevis_env, pg_url, monkeypatch) -> None:
    monkeypatch.setenv("BEVIS_SOURCE_URL", pg_url)
    monkeypatch.setenv("BEVIS_LEDGER_URL", pg_url)
    monkeypatch.setenv("BEVIS_QUARANTINE_THRESHOLD", "0.1")
    manifest, result = _seed_extract_validate("dq-it-pg", 1500, 0.03)
    _check_against_manifest("dq-it-pg", manifest, result)
