"""The synthetic register (jobs/devtools/seed.py): deterministic, realistic, defects as recorded."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import sqlite3
from pathlib import Path

import pytest

from jobs.devtools.seed import DEFECT_KINDS, ORDER_CATEGORIES, seed
from jobs.devtools.seed_names import COUNTIES, PRODUCTS, UNKNOWN_PRODUCTS
from jobs.settings import Settings
from transforms.identity import (
    dob_from_identity_number,
    is_coordination_number,
    is_valid_identity_number,
)

PERSONS = 4000


@pytest.fixture(scope="module")
def register(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("seed")
    s = Settings(data_dir=data)
    m = seed(PERSONS, seed=11, defect_rate=0.02, settings=s)
    con = sqlite3.connect(data / "nvr.db")
    yield m, con, data
    con.close()


def _dump(db: Path) -> list:
    con = sqlite3.connect(db)
    try:
        return [
            con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
            for t in ("population", "nvr_vaccinations", "orders")
        ]
    finally:
        con.close()


def test_same_seed_same_register_other_seed_other(tmp_path: Path) -> None:
    runs = {}
    for name, sd in (("a", 5), ("b", 5), ("c", 6)):
        s = Settings(data_dir=tmp_path / name)
        m = seed(1200, seed=sd, settings=s)
        d = m.to_dict()
        for k in ("url", "seconds", "nvr_snapshot_at"):
            d.pop(k)
        runs[name] = (d, _dump(tmp_path / name / "nvr.db"))
    assert runs["a"] == runs["b"]
    assert runs["a"][1] != runs["c"][1]
    # seeding again replaces the content instead of adding to it
    s = Settings(data_dir=tmp_path / "a")
    seed(1200, seed=5, settings=s)
    assert _dump(tmp_path / "a" / "nvr.db") == runs["a"][1]


def test_default_defect_rate_is_well_under_the_quarantine_threshold() -> None:
    default = inspect.signature(seed).parameters["defect_rate"].default
    assert default <= Settings().quarantine_threshold / 2


def test_manifest_file_and_categories(register) -> None:
    m, con, data = register
    on_disk = json.loads((data / "seed-manifest.json").read_text())
    assert on_disk["expected_extract"] == m.expected_extract
    assert sum(m.order_categories.values()) == m.orders
    assert set(m.order_categories) == set(ORDER_CATEGORIES)
    assert all(m.order_categories[c] > 0 for c in ORDER_CATEGORIES)
    assert con.execute("SELECT count(*) FROM orders").fetchone()[0] == m.orders
    assert con.execute("SELECT count(*) FROM nvr_vaccinations").fetchone()[0] == m.events
    assert con.execute("SELECT count(*) FROM population").fetchone()[0] == PERSONS
    assert con.execute("SELECT count(*) FROM nvr_snapshots").fetchone()[0] == 1
    # order ids and event ids only: no identity number, name or birth date in the manifest
    from jobs.log import IDENTITY_NUMBER

    text = (data / "seed-manifest.json").read_text()
    assert not IDENTITY_NUMBER.search(text)
    for rec in (r for v in m.defects.values() for r in v):
        assert set(rec) == {"order_id", "event_id"}


def test_names_and_identity_numbers_are_realistic(register) -> None:
    m, con, _ = register
    people = con.execute(
        "SELECT person_id, given_name, family_name, dob FROM population"
    ).fetchall()
    names = " ".join(f"{g} {f}" for _, g, f, _ in people if g and f)
    for ch in "åäöéü-'":
        assert ch in names, ch
    foreign = sum(tok in names for tok in ("Ł", "ễ", "Ø", "Müller", "ß", "ł"))
    assert foreign >= 4
    assert any(g and " " in g for _, g, _, _ in people)  # double given names
    assert max(len(f"{g} {f}") for _, g, f, _ in people if g and f) > 40
    bad_check = {r["order_id"] for r in m.defects["invalid_check_digit"]}
    bad_dob = {r["order_id"] for r in m.defects["dob_mismatch"]}
    owners = dict(con.execute("SELECT person_id, order_id FROM orders").fetchall())
    invalid = [pnr for pnr, *_ in people if not is_valid_identity_number(pnr)]
    assert {owners.get(p) for p in invalid} == bad_check
    mismatched = [
        p for p, _, _, dob in people if p not in invalid and dob_from_identity_number(p) != dob
    ]
    assert {owners.get(p) for p in mismatched} == bad_dob
    assert sum(is_coordination_number(p) for p, *_ in people) > PERSONS * 0.01
    assert any(len(dob) == 7 for *_, dob in people)  # samordningsnummer with unknown day
    cutoff = dt.date.today().replace(year=dt.date.today().year - 100).isoformat()
    assert any(dob < cutoff for *_, dob in people)  # people over 100
    assert len({p for p, *_ in people}) == PERSONS


def test_vaccination_histories_look_like_sweden(register) -> None:
    m, con, _ = register
    defect_events = {r["event_id"] for v in m.defects.values() for r in v if r["event_id"]}
    rows = con.execute(
        "SELECT reporting_system || ':' || reporting_ref, person_id, vaccination_date, vaccine,"
        " dose_number, county_code, municipality_code FROM nvr_vaccinations"
    ).fetchall()
    npl = {v[0]: k for k, v in PRODUCTS.items()}
    counties = {c[0] for c in COUNTIES}
    assert len(counties) == 21
    assert {r[5] for r in rows} == counties
    assert all(r[6][:2] == r[5] for r in rows)
    vaccines = {r[3] for r in rows}
    assert set(PRODUCTS) <= vaccines and set(npl) <= vaccines  # both forms are reported
    for eid, _, date, vaccine, dose, *_ in rows:
        if eid in defect_events:
            continue
        product = npl.get(vaccine, vaccine)
        assert product in PRODUCTS, eid
        assert PRODUCTS[product][1] <= date <= "2023-12-31", eid
        assert 1 <= dose <= 7, eid
    assert {r[2][:4] for r in rows if r[0] not in defect_events} == {"2021", "2022", "2023"}


def test_defects_are_where_the_manifest_says(register) -> None:
    m, con, _ = register
    eligible = m.expected_extract["orders"]
    assert m.defect_orders == round(0.02 * eligible)
    assert all(m.defects[k] for k in DEFECT_KINDS)
    orders = [r["order_id"] for v in m.defects.values() for r in v]
    assert len(orders) == len(set(orders))  # one defect per order

    def event(eid: str):
        system, ref = eid.split(":")
        return con.execute(
            "SELECT vaccination_date, vaccine, dose_number, person_id, batch_number FROM nvr_vaccinations"
            " WHERE reporting_system = ? AND reporting_ref = ?",
            (system, ref),
        ).fetchone()

    today = dt.date.today().isoformat()
    npl = {v[0]: k for k, v in PRODUCTS.items()}
    for r in m.defects["future_vaccination_date"]:
        assert event(r["event_id"])[0] > today
    for r in m.defects["before_authorisation"]:
        date, vaccine, *_ = event(r["event_id"])
        assert date < PRODUCTS[npl.get(vaccine, vaccine)][1]
    for r in m.defects["unknown_product"]:
        assert event(r["event_id"])[1] in UNKNOWN_PRODUCTS
    for r in m.defects["dose_out_of_range"]:
        assert not 1 <= event(r["event_id"])[2] <= 10
    for r in m.defects["duplicate_event"]:
        date, vaccine, dose, pnr, batch = event(r["event_id"])
        twins = con.execute(
            "SELECT count(*) FROM nvr_vaccinations WHERE person_id = ? AND vaccination_date = ?"
            " AND vaccine = ? AND dose_number = ? AND batch_number = ?",
            (pnr, date, vaccine, dose, batch),
        ).fetchone()[0]
        assert twins == 2
    for r in m.defects["missing_name"]:
        g, f = con.execute(
            "SELECT given_name, family_name FROM population p JOIN orders o"
            " ON o.person_id = p.person_id WHERE o.order_id = ?",
            (r["order_id"],),
        ).fetchone()
        assert g is None or f is None
    for r in m.defects["name_too_long"]:
        (f,) = con.execute(
            "SELECT family_name FROM population p JOIN orders o ON o.person_id = p.person_id"
            " WHERE o.order_id = ?",
            (r["order_id"],),
        ).fetchone()
        assert len(f) > 80
    # no legitimate name is that long
    long_names = con.execute(
        "SELECT count(*) FROM population WHERE length(family_name) > 80 OR length(given_name) > 80"
    ).fetchone()[0]
    assert long_names == len(m.defects["name_too_long"])
