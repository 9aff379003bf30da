"""nvr_extract: every injected defect is quarantined with its reason code, clean rows pass
untouched, run gates stop the run naming suite and expectation, no personal data in GX."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from data_quality import RunGateFailed
from data_quality.identity import identity_facts, luhn_ok_single
from data_quality.synthetic import luhn_digit, synthetic_extract, to_table
from jobs.ledger import quarantine
from jobs.settings import get_settings
from jobs.steps.validate import validate
from jobs.storage import RunPaths, write_parquet_atomic


@pytest.fixture(autouse=True)
def _log_to_current_stderr() -> None:
    """structlog's default logger keeps the stream it was made with (a closed pytest or
    CliRunner capture, later); ours writes to the current sys.stderr."""
    from jobs.log import configure_logging

    configure_logging("INFO")


def _write_run(run_id: str, frame, orders: int, extracted_at: datetime, **meta) -> RunPaths:
    paths = RunPaths.of(run_id)
    write_parquet_atomic(to_table(frame), paths.extract)
    body = {
        "orders_claimed": orders,
        "extracted_at": extracted_at.isoformat(),
        "nvr_snapshot_at": (extracted_at - timedelta(hours=2)).isoformat(),
    }
    body.update(meta)
    paths.extract_meta.write_text(json.dumps(body))
    return paths


def _pnr(birth: str, serial: int = 123, coordination: bool = False) -> str:
    y, m, d = birth.split("-")
    dd = int(d) + (60 if coordination else 0)
    body = f"{y[2:]}{m}{dd:02d}{serial:03d}"
    return f"{y}{m}{dd:02d}{serial:03d}{luhn_digit(body)}"


# --- identity numbers ------------------------------------------------------------------


def test_identity_facts_format_luhn_coordination_and_birth() -> None:
    good = _pnr("1985-03-12")
    coord = _pnr("1990-07-04", coordination=True)
    bad_check = good[:-1] + str((int(good[-1]) + 1) % 10)
    cases = [good, coord, bad_check, "198513120000", "198502300000", "19850312123", None, "abc"]
    f = identity_facts(pa.array(cases, pa.string()))
    assert f["format_ok"].tolist() == [True, True, True, False, False, False, False, False]
    assert f["check_digit_ok"].tolist()[:3] == [True, True, False]
    assert f["birth"].tolist()[:2] == [19850312, 19900704]


def test_vectorised_luhn_agrees_with_scalar_reference() -> None:
    rnd = random.Random(7)
    numbers = []
    for _ in range(3000):
        d = date(1920, 1, 1) + timedelta(days=rnd.randrange(0, 30000))
        numbers.append(f"{d:%Y%m%d}{rnd.randrange(0, 10000):04d}")
    f = identity_facts(pa.array(numbers))
    expected = [luhn_ok_single(n[2:]) for n in numbers]
    assert f["check_digit_ok"].tolist() == expected
    assert 0 < sum(expected) < len(expected)


# --- the acceptance test on a synthetic extract -------------------------------------------


@pytest.fixture
def synthetic_run(bevis_env, monkeypatch):
    monkeypatch.setenv("BEVIS_QUARANTINE_THRESHOLD", "0.2")
    synth = synthetic_extract(1500, seed=3, defect_rate=0.08)
    paths = _write_run("dq-synth", synth.frame, synth.orders, synth.extracted_at)
    return synth, paths


def test_every_defect_quarantined_with_its_reason_and_clean_rows_pass(synthetic_run) -> None:
    synth, paths = synthetic_run
    result = validate("dq-synth", "nvr_extract")

    entries = quarantine.read("dq-synth").to_pylist()
    got = {(e["reason_code"], e["order_id"]) for e in entries}
    got_events = {(e["reason_code"], e["order_id"], e["event_id"]) for e in entries}
    defect_orders = set()
    for kind, hits in synth.defects.items():
        assert hits, f"the synthetic extract injected no {kind}"
        for order_id, event_id in hits:
            defect_orders.add(order_id)
            assert (kind, order_id) in got, f"{kind} of order {order_id} not quarantined"
            if event_id is not None:
                assert (kind, order_id, event_id) in got_events
    # nothing else: no clean order is quarantined
    assert {e["order_id"] for e in entries} == defect_orders
    assert all(e["suite"] == "nvr_extract" and e["pid"] for e in entries)
    assert result.quarantined_orders == len(defect_orders)

    # validated.parquet = the extract minus the quarantined orders, rows untouched
    extract = pq.read_table(paths.extract).to_pylist()
    validated = pq.read_table(paths.validated).to_pylist()
    assert validated == [r for r in extract if r["order_id"] not in defect_orders]

    # Data Docs for the analyst, and no personal data in anything GX wrote
    index = Path(result.data_docs)
    assert index.exists()
    html = "".join(p.read_text("utf-8", "ignore") for p in paths.data_docs.rglob("*.html"))
    assert "nvr_extract" in html and "identity_number_check_digit" in html
    written = html + "".join(
        p.read_text("utf-8", "ignore") for p in (paths.root / "gx").rglob("*.json")
    )
    people = synth.frame.drop_duplicates("order_id").head(200)
    for pnr in people["person_id"]:
        assert pnr not in written
    for name in set(people["family_name"].dropna()) - {""}:
        assert name not in written


def test_rerun_is_idempotent(synthetic_run) -> None:
    first = validate("dq-synth", "nvr_extract")
    before = pq.read_table(RunPaths.of("dq-synth").validated)
    second = validate("dq-synth", "nvr_extract")
    assert second.quarantined_orders == first.quarantined_orders
    assert pq.read_table(RunPaths.of("dq-synth").validated).equals(before)
    from sqlalchemy import func, select

    from jobs.db import engine
    from jobs.ledger.models import QuarantineEntry

    with engine(get_settings().resolved_ledger_url()).connect() as conn:
        n = conn.execute(select(func.count()).select_from(QuarantineEntry)).scalar_one()
    assert n == first.quarantine_entries


# --- hand-made edge cases -----------------------------------------------------------------

EXTRACTED = datetime(2023, 6, 1, 6, 0, tzinfo=UTC)


def _row(order: str, event: str | None, **kw):
    base = {
        "order_id": order,
        "pid": f"pid-{order}",
        "person_id": _pnr("1985-03-12"),
        "requested_at": EXTRACTED - timedelta(days=1),
        "consent_at": EXTRACTED - timedelta(days=1),
        "cert_type": "v",
        "given_name": "Åsa",
        "family_name": "Öberg",
        "dob": "1985-03-12",
        "protected_identity": False,
        "address_street": None,
        "address_postcode": None,
        "address_city": None,
        "event_id": event,
        "vaccination_date": date(2021, 5, 1) if event else None,
        "vaccine": "Comirnaty" if event else None,
        "batch_number": None,
        "dose_number": 1 if event else None,
        "care_provider_org": None,
        "county_code": "01",
        "municipality_code": "0180",
        "reported_at": None,
    }
    base.update(kw)
    return base


def test_edge_cases_each_get_their_own_reason(bevis_env, monkeypatch) -> None:
    import pandas as pd

    monkeypatch.setenv("BEVIS_QUARANTINE_THRESHOLD", "1")
    rows = [
        # clean: partial dob from the register, samordningsnummer, bivalent booster
        _row("ok-partial", "e1", dob="1985-03"),
        _row("ok-coord", "e2", person_id=_pnr("1990-07-04", coordination=True), dob="1990-07-04"),
        _row("ok-history", "e3"),
        _row("ok-history", "e4", vaccination_date=date(2021, 6, 1), dose_number=2),
        _row(
            "ok-history",
            "e5",
            vaccination_date=date(2022, 10, 1),
            dose_number=3,
            vaccine="Comirnaty Original/Omicron BA.4-5",
        ),
        _row("ok-npl-id", "e6", vaccine="20210107100012"),  # Spikevax by NPL-id
        _row("ok-spaces", "e17", vaccine="  comirnaty "),
        # defects
        _row("bad-history", "e7", dose_number=2),
        _row("bad-history", "e8", vaccination_date=date(2021, 6, 1), dose_number=1),
        _row("bad-consent", "e9", consent_at=EXTRACTED + timedelta(hours=1)),
        _row("bad-consent2", "e10", consent_at=None),
        _row("bad-format", "e11", person_id="19851312" + "1234"),
        _row("bad-dob", "e12", dob="2030-01-01"),
        _row("bad-campaign", "e13", vaccination_date=date(2020, 12, 22)),
        _row(
            "bad-bivalent",
            "e14",
            vaccination_date=date(2022, 3, 1),
            vaccine="Spikevax bivalent Original/Omicron BA.4-5",
        ),
        _row("bad-product", "e18", vaccine="Comirnaty XBB.9"),
        _row("bad-dup-day", "e15"),
        _row("bad-dup-day", "e16"),
        _row("no-vacc", None),
    ]
    frame = pd.DataFrame(rows)
    frame["dose_number"] = frame["dose_number"].astype("Int16")
    _write_run("dq-edge", frame, frame["order_id"].nunique(), EXTRACTED)
    validate("dq-edge", "nvr_extract")
    got: dict[str, set[str]] = {}
    for e in quarantine.read("dq-edge").to_pylist():
        got.setdefault(e["order_id"], set()).add(e["reason_code"])
    assert not {k for k in got if k.startswith("ok-")}, got
    assert got["bad-history"] == {"dose_inconsistent"}
    assert got["bad-consent"] == {"consent_missing"}
    assert got["bad-consent2"] == {"consent_missing"}
    assert "invalid_identity_number" in got["bad-format"]
    assert got["bad-dob"] == {"dob_implausible", "dob_mismatch"}
    assert "before_campaign_start" in got["bad-campaign"]
    assert got["bad-bivalent"] == {"before_authorisation"}
    assert got["bad-dup-day"] == {"duplicate_event"}
    assert got["bad-product"] == {"unknown_product"}
    assert got["no-vacc"] == {"no_vaccination"}


# --- run gates ----------------------------------------------------------------------------


def test_quarantine_rate_over_threshold_stops_the_run(bevis_env) -> None:
    synth = synthetic_extract(600, seed=4, defect_rate=0.1)  # ~9 % of orders defective
    paths = _write_run("dq-gate", synth.frame, synth.orders, synth.extracted_at)
    with pytest.raises(RunGateFailed) as info:
        validate("dq-gate", "nvr_extract")  # default threshold 2 %
    msg = str(info.value)
    assert "nvr_extract" in msg and "expectation quarantine_rate" in msg
    assert info.value.suite == "nvr_extract"
    assert not paths.validated.exists()
    # the quarantine is still recorded, and the Data Docs show the failed gate
    assert quarantine.read("dq-gate").num_rows > 0
    assert Path(info.value.data_docs).exists()


def test_volume_and_freshness_gates_name_their_expectation(bevis_env) -> None:
    synth = synthetic_extract(300, seed=5, defect_rate=0.0)
    _write_run(
        "dq-stale",
        synth.frame,
        synth.orders + 7,
        synth.extracted_at,
        nvr_snapshot_at=(synth.extracted_at - timedelta(hours=100)).isoformat(),
    )
    with pytest.raises(RunGateFailed) as info:
        validate("dq-stale", "nvr_extract")
    msg = str(info.value)
    assert "volume_matches_orders" in msg and "nvr_snapshot_fresh" in msg
    assert "quarantine_rate" not in msg


def test_cli_validate_reports_data_docs_and_exit_code_on_gate(bevis_env) -> None:
    from jobs.cli import app

    synth = synthetic_extract(200, seed=6, defect_rate=0.0)
    _write_run("dq-cli", synth.frame, synth.orders, synth.extracted_at)
    res = CliRunner().invoke(app, ["validate", "--run", "dq-cli", "--suite", "nvr_extract"])
    assert res.exit_code == 0, res.output
    assert "Data Docs:" in res.output and "index.html" in res.output
    res = CliRunner().invoke(app, ["validate", "--run", "dq-cli", "--suite", "nope"])
    assert res.exit_code == 2


def test_run_ids_that_look_like_dates_validate(bevis_env, monkeypatch) -> None:
    """GX parses a run name as a date unless given a run time; ids from new_run_id() such as
    "20261122T144419-8314" read as a broken UTC offset. Every id shape must validate."""
    monkeypatch.setenv("BEVIS_QUARANTINE_THRESHOLD", "0.5")
    synth = synthetic_extract(60, seed=9, defect_rate=0.0)
    for run_id in ("20261122T144419-8314", "20261122T144419-0000"):
        _write_run(run_id, synth.frame, synth.orders, synth.extracted_at)
        assert validate(run_id, "nvr_extract").quarantined_orders == 0
