"""The run-file scrub (jobs/steps/scrub.py): a withdrawn order's personal data leaves every
file of the run, atomically, and nothing else changes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.ids import pdf_name
from jobs.settings import Settings
from jobs.steps.scrub import KEEP, scrub_orders
from jobs.storage import RunPaths, write_parquet_atomic
from transforms.schemas import EXTRACT, PAYLOADS, SIGNED

RUN = "run-scrub"
BATCH = f"{RUN}-b0000"
ORDERS = ["S-A", "S-B", "S-C"]


def _extract(orders: list[str]) -> pa.Table:
    rows = []
    for i, o in enumerate(orders):
        for ev in range(2):  # two NVR events per order
            rows.append(
                {
                    "order_id": o,
                    "pid": f"pid-{o}",
                    "person_id": f"19{i:02d}01010000",
                    "requested_at": dt.datetime(2026, 10, 1, tzinfo=dt.UTC),
                    "consent_at": dt.datetime(2026, 10, 1, 0, 5, tzinfo=dt.UTC),
                    "cert_type": "v",
                    "given_name": "ANNA",
                    "family_name": f"TESTSSON{i}",
                    "dob": "1990-01-01",
                    "protected_identity": False,
                    "address_street": "Gatan 1",
                    "address_postcode": "11122",
                    "address_city": "STOCKHOLM",
                    "event_id": f"SYS:{o}-{ev}",
                    "vaccination_date": dt.date(2021, 5, 1 + ev),
                    "vaccine": "Comirnaty",
                    "batch_number": "AB1",
                    "dose_number": ev + 1,
                    "care_provider_org": "2321000016",
                    "county_code": "01",
                    "municipality_code": "0180",
                    "reported_at": dt.datetime(2021, 5, 2, tzinfo=dt.UTC),
                }
            )
    return pa.Table.from_pylist(rows, schema=EXTRACT)


def _payloads(orders: list[str]) -> pa.Table:
    from jobs.devtools.synthetic import synthetic_payloads

    t = synthetic_payloads(len(orders), prefix="S").to_pylist()
    for row, o in zip(t, orders, strict=True):
        row.update(order_id=o, person_id="199001010000", address_street="Gatan 1")
    return pa.Table.from_pylist(t, schema=PAYLOADS)


@pytest.fixture
def run_files(bevis_env: Path) -> tuple[Settings, RunPaths, pa.Table]:
    s = Settings(data_dir=bevis_env)
    paths = RunPaths.of(RUN, s)
    write_parquet_atomic(_extract(ORDERS), paths.extract)
    write_parquet_atomic(_extract(ORDERS), paths.validated)
    payloads = _payloads(ORDERS)
    write_parquet_atomic(payloads, paths.payloads)
    write_parquet_atomic(payloads, paths.batch_payloads(BATCH))
    signed = pa.table(
        {
            "order_id": ORDERS,
            "uvci": payloads["uvci"],
            "kid": ["k"] * 3,
            "iat": [1] * 3,
            "exp": [2] * 3,
            "hc1": [f"HC1:{o}" for o in ORDERS],
        },
        schema=SIGNED,
    )
    write_parquet_atomic(signed, paths.signed(BATCH))
    paths.pdf_dir(BATCH).mkdir(parents=True)
    for u in payloads["uvci"].to_pylist():
        (paths.pdf_dir(BATCH) / pdf_name(u)).write_bytes(b"%PDF-1.7 ...")
    return s, paths, payloads


def _rows(path: Path, order_id: str) -> list[dict]:
    return [r for r in pq.read_table(path).to_pylist() if r["order_id"] == order_id]


def test_scrub_removes_the_orders_personal_data_and_nothing_else(run_files) -> None:
    s, paths, payloads = run_files
    before = {p: pq.read_table(p) for p in (paths.extract, paths.payloads)}
    modes = {p: p.stat().st_mode & 0o777 for p in paths.root.rglob("*.parquet")}
    uvci_a = payloads["uvci"][0].as_py()
    counts = scrub_orders(RUN, ["S-A"], s)
    assert counts == {
        "extract": 2,
        "validated": 2,
        "payloads": 1,
        "batch_payloads": 1,
        "signed": 1,
        "pdf": 1,
    }
    for path in (paths.extract, paths.validated, paths.payloads, paths.batch_payloads(BATCH)):
        t = pq.read_table(path)
        src = before[paths.extract if path in (paths.extract, paths.validated) else paths.payloads]
        assert t.schema == src.schema and t.num_rows == src.num_rows, path.name
        for row in _rows(path, "S-A"):
            personal = {k: v for k, v in row.items() if k not in KEEP}
            assert set(personal.values()) == {None}, (path.name, personal)
            assert row["order_id"] == "S-A" and row["pid"]
        text = json.dumps(_rows(path, "S-A"), default=str)
        assert "ANNA" not in text and "1990-01-01" not in text and "Gatan" not in text
        # the other orders' rows are exactly as they were
        for o in ("S-B", "S-C"):
            assert _rows(path, o) == [r for r in src.to_pylist() if r["order_id"] == o]
    signed = pq.read_table(paths.signed(BATCH))
    assert signed["order_id"].to_pylist() == ["S-B", "S-C"]
    assert not (paths.pdf_dir(BATCH) / pdf_name(uvci_a)).exists()
    assert len(list(paths.pdf_dir(BATCH).iterdir())) == 2
    # modes kept, no temporary file left behind
    assert {p: p.stat().st_mode & 0o777 for p in paths.root.rglob("*.parquet")} == modes
    assert not [p for p in paths.root.rglob("*.tmp")]
    # idempotent: a second call finds nothing to do and rewrites nothing
    mtimes = {p: p.stat().st_mtime_ns for p in paths.root.rglob("*.parquet")}
    assert set(scrub_orders(RUN, ["S-A"], s).values()) == {0}
    assert {p: p.stat().st_mtime_ns for p in paths.root.rglob("*.parquet")} == mtimes
    assert set(scrub_orders(RUN, [], s).values()) == {0}


def test_scrub_across_row_groups_and_batches(run_files, monkeypatch) -> None:
    """Files written in many row groups are streamed pass by pass; only the given batches'
    files are touched when batch ids are given."""
    import jobs.steps.scrub as scrub

    s, paths, _ = run_files
    many = [f"G-{i:04d}" for i in range(300)]
    with pq.ParquetWriter(paths.extract, EXTRACT) as w:  # 30 row groups
        for i in range(0, 300, 10):
            w.write_table(_extract(many[i : i + 10]))
    monkeypatch.setattr(scrub, "ROWS_PER_PASS", 7)
    other = f"{RUN}-b0001"
    write_parquet_atomic(_payloads(ORDERS), paths.batch_payloads(other))
    counts = scrub_orders(RUN, ["G-0005", "G-0150", "G-0299", "S-B"], s, batch_ids=[BATCH])
    assert counts["extract"] == 6 and counts["batch_payloads"] == 1
    t = pq.read_table(paths.extract)
    assert t.num_rows == 600
    gone = t.filter(pa.compute.is_in(t["order_id"], pa.array(["G-0005", "G-0150", "G-0299"])))
    assert gone["person_id"].null_count == 6 and gone["event_id"].null_count == 6
    assert t["person_id"].null_count == 6
    # the other batch was not asked for: untouched
    assert "S-B" in [
        r["order_id"]
        for r in pq.read_table(paths.batch_payloads(other)).to_pylist()
        if r["person_id"]
    ]
