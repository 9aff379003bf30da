"""From extract rows to DCC payloads: schema-valid, right doses, quarantine, the map step."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signing.dcc import payload_errors
from transforms import sample
from transforms.payloads import MapConfig, map_frame
from transforms.schemas import EXTRACT, PAYLOADS
from transforms.uvci import derive_key, is_valid_uvci

CFG = MapConfig(uvci_key=derive_key(b"test"))


@pytest.fixture(autouse=True)
def _logging_outlives_cli_runner():
    """The CLI binds structlog to the stderr of the moment; under typer's CliRunner that
    stream is closed afterwards. Rebind to the real one after each test."""
    yield
    from jobs.log import configure_logging

    configure_logging()


def _frame(orders: int, seed: int = 7) -> pd.DataFrame:
    # through Parquet's schema, as the map step reads it
    return sample.extract_table(orders, seed).to_pandas()


def test_every_generated_payload_validates_and_matches_its_columns() -> None:
    frame = _frame(1500)
    mapped = map_frame(frame, CFG)
    assert mapped.payloads.schema.equals(PAYLOADS)
    assert len(mapped.quarantine) == 0
    out = mapped.payloads.to_pandas()
    assert len(out) == frame["order_id"].nunique() == 1500
    assert out["uvci"].is_unique
    for row in out.itertuples():
        payload = json.loads(row.payload_json)
        assert payload_errors(payload) == [], row.order_id
        v = payload["v"][0]
        assert (v["ci"], v["mp"], v["dn"], v["sd"]) == (row.uvci, row.product, row.dn, row.sd)
        assert v["dt"] == row.vaccination_date.isoformat()
        assert payload["ver"] == "1.3.3" and len(payload["v"]) == 1
        assert is_valid_uvci(row.uvci)


def test_doses_follow_the_generated_histories() -> None:
    frame = _frame(600, seed=11)
    out = map_frame(frame, CFG).payloads.to_pandas().set_index("order_id")
    expected_by_first = {"Jcovden": 1, "COVID-19 Vaccine Janssen": 1}
    for order_id, events in frame.sort_values("vaccination_date").groupby("order_id"):
        n = len(events)
        s = expected_by_first.get(events["vaccine"].iloc[0], 2)
        dn, sd = out.loc[order_id, ["dn", "sd"]]
        if n <= s:
            assert (dn, sd) == (n, s)
        elif s == 1:
            assert (dn, sd) == (n, 1)
        else:
            assert (dn, sd) == (n, n)
        assert out.loc[order_id, "vaccination_date"] == events["vaccination_date"].iloc[-1]
        assert out.loc[order_id, "county"] == events["county_code"].iloc[-1]


def test_names_and_dob_in_the_payload() -> None:
    frame = _frame(3)
    frame["family_name"] = "  Müller-Lüdenscheidt "
    frame["given_name"] = None
    frame["dob"] = "1964-00-00"
    p = json.loads(map_frame(frame, CFG).payloads["payload_json"][0].as_py())
    assert p["nam"] == {"fn": "Müller-Lüdenscheidt", "fnt": "MUELLER<LUEDENSCHEIDT"}
    assert p["dob"] == "1964"
    assert payload_errors(p) == []


def _order(order_id: str, vaccines: list[str | None], **person) -> list[dict]:
    base = sample.extract_frame(1).iloc[0].to_dict()
    rows = []
    for i, v in enumerate(vaccines):
        r = dict(base, order_id=order_id, pid=f"pid-{order_id}", vaccine=v, **person)
        r["event_id"] = f"{order_id}-e{i}" if v is not None else None
        r["vaccination_date"] = date(2021, 3 + 2 * i, 1) if v is not None else None
        rows.append(r)
    return rows


def test_unmappable_orders_are_quarantined_with_reasons() -> None:
    rows = (
        _order("good", ["Comirnaty", "Comirnaty"])
        + _order("unknown", ["Comirnaty", "Sputnik V", "Comirnaty"])
        + _order("inactive", ["Vidprevtyn"])
        + _order("novacc", [None])
        + _order("test", ["Comirnaty"], cert_type="t")
        + _order("booster-first", ["Bimervax"])
        + _order("noname", ["Comirnaty"], family_name="李", given_name="明")
        + _order("baddob", ["Comirnaty"], dob="1964-13-45")
    )
    frame = pa.Table.from_pylist(rows, schema=EXTRACT).to_pandas()
    mapped = map_frame(frame, CFG)
    assert mapped.payloads["order_id"].to_pylist() == ["good"]
    q = mapped.quarantine.set_index("order_id")
    assert set(q.index) == {
        "unknown", "inactive", "novacc", "test", "booster-first", "noname", "baddob",
    }  # fmt: skip
    assert q.loc["unknown", "reason_code"] == "unknown_product"
    assert q.loc["unknown", "event_id"] == "unknown-e1"  # names the failing row
    assert q.loc["inactive", "reason_code"] == "inactive_product"
    assert q.loc["novacc", "reason_code"] == "no_vaccination"
    assert q.loc["novacc", "event_id"] is None
    for order in ("test", "booster-first", "noname", "baddob"):
        assert q.loc[order, "reason_code"] == "mapping_failed", order
    assert "booster-only" in q.loc["booster-first", "detail"]
    assert "'Sputnik V' not in the product table" in q.loc["unknown", "detail"]
    assert q.loc["noname", "pid"] == "pid-noname"
    # no personal data in the entries
    text = mapped.quarantine.to_csv()
    for secret in ("李", "1964-13-45", frame["person_id"].iloc[0], "Storgatan"):
        assert secret not in text


def test_empty_input_maps_to_empty_output() -> None:
    mapped = map_frame(EXTRACT.empty_table().to_pandas(), CFG)
    assert mapped.payloads.num_rows == 0 and mapped.payloads.schema.equals(PAYLOADS)
    assert len(mapped.quarantine) == 0


# ------------------------------------------------------------------ the map step
def _write_validated(run_id: str, table: pa.Table) -> Path:
    from jobs.storage import RunPaths, write_parquet_atomic

    return write_parquet_atomic(table, RunPaths.of(run_id).validated)


def test_map_run_writes_payloads_and_quarantine_idempotently(bevis_env: Path) -> None:
    from jobs.ledger import quarantine
    from jobs.steps.mapping import map_run

    table = pa.concat_tables(
        [
            sample.extract_table(200, seed=3),
            pa.Table.from_pylist(_order("unknown", ["Sputnik V"]), schema=EXTRACT),
        ]
    )
    _write_validated("r1", table)
    first = map_run("r1")
    assert (first.payloads, first.quarantined_orders, first.orders) == (200, 1, 201)
    written = pq.read_table(first.path)
    assert written.schema.equals(PAYLOADS, check_metadata=False)
    q1 = quarantine.read("r1").to_pylist()
    assert [(e["step"], e["reason_code"], e["order_id"]) for e in q1] == [
        ("map", "unknown_product", "unknown")
    ]

    forced = map_run("r1", force=True)
    assert pq.read_table(forced.path).equals(written)  # deterministic, UVCIs included
    assert len(quarantine.read("r1")) == 1

    # a later step filters payloads.parquet (the dcc_payload suite does): a rerun of the
    # finished map must not undo that ...
    from jobs.storage import write_parquet_atomic

    write_parquet_atomic(written.slice(0, 150), Path(first.path))
    assert map_run("r1") == forced
    assert pq.read_table(first.path).num_rows == 150
    # ... but a changed input maps again
    _write_validated("r1", table.slice(0, table.num_rows - 1))
    changed = map_run("r1")
    assert changed.payloads == 200 and changed.quarantined_orders == 0

    from sqlalchemy import func, select

    from jobs.db import engine
    from jobs.ledger.models import QuarantineEntry
    from jobs.settings import get_settings

    with engine(get_settings().resolved_ledger_url()).connect() as conn:
        count = conn.execute(
            select(func.count()).select_from(QuarantineEntry).where(QuarantineEntry.run_id == "r1")
        ).scalar_one()
    assert count == 1


def test_uvci_depends_on_the_key_setting(bevis_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.steps.mapping import map_run

    _write_validated("k1", sample.extract_table(5))
    a = pq.read_table(map_run("k1").path)["uvci"].to_pylist()
    monkeypatch.setenv("BEVIS_UVCI_KEY", "a-dedicated-uvci-key")
    b = pq.read_table(map_run("k1").path)["uvci"].to_pylist()
    assert a != b and len(set(a) & set(b)) == 0


def test_cli_map(bevis_env: Path) -> None:
    from typer.testing import CliRunner

    from jobs.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["map", "--run", "nothing"])
    assert missing.exit_code == 2
    assert "no validated extract" in missing.output

    _write_validated("c1", sample.extract_table(20))
    ok = runner.invoke(app, ["map", "--run", "c1", "--json"])
    assert ok.exit_code == 0, ok.output
    result = json.loads(ok.output.strip().splitlines()[-1])
    assert result["payloads"] == 20 and result["run_id"] == "c1"

    products = runner.invoke(app, ["products", "--json"])
    assert products.exit_code == 0
    assert json.loads(products.output)["problems"] == []


def test_bench_map_reports_rows_per_second(bevis_env: Path) -> None:
    from typer.testing import CliRunner

    from jobs.cli import app

    out = CliRunner().invoke(app, ["bench", "map", "--rows", "3000"])
    assert out.exit_code == 0, out.output
    figures = json.loads(out.output.strip().splitlines()[-1])
    assert figures["rows"] == 3000 and figures["rows_per_s"] > 0 and figures["consistent"]


@pytest.mark.slow
def test_payloads_from_a_generated_register_all_validate(
    bevis_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acceptance path with the real neighbours: seeded register → extract → nvr_extract
    suite → map. Every payload passes the schema and the active value sets; every order the
    suite let through is mapped or quarantined by the map step with a reason."""
    from jobs.devtools.seed import seed
    from jobs.ledger import quarantine
    from jobs.steps.extract import extract
    from jobs.steps.mapping import map_run
    from jobs.steps.validate import validate

    monkeypatch.setenv("BEVIS_QUARANTINE_THRESHOLD", "0.5")  # defects are injected on purpose
    seed(300, seed=5, defect_rate=0.03)
    extract("reg")
    validated = validate("reg", "nvr_extract")
    result = map_run("reg")
    out = pq.read_table(result.path).to_pandas()
    assert len(out) > 150
    for text in out["payload_json"]:
        assert payload_errors(json.loads(text)) == []
    mapped_q = quarantine.read("reg").to_pandas().query("step == 'map'")
    assert result.orders == validated.orders - validated.quarantined_orders
    assert len(out) + mapped_q["order_id"].nunique() == result.orders
    assert out["uvci"].is_unique
    assert set(out["dn"]) <= set(range(1, 10)) and (out["sd"] >= 1).all()
    # and the gate after mapping (schema, active value sets, UVCI uniqueness) holds none back
    checked = validate("reg", "dcc_payload")
    assert checked.quarantined_orders == 0 and checked.rows == len(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.one_of(st.none(), st.text(max_size=90)), st.text(max_size=90)),
        min_size=1,
        max_size=6,
    )
)
def test_any_name_gives_a_valid_payload_or_a_reason(people: list[tuple[str | None, str]]) -> None:
    """Quotes, backslashes, control characters, any script: the JSON assembled column-wise
    must parse and validate, or the order is quarantined for having no usable name."""
    frame = _frame(len(people), seed=1)
    frame = frame.drop_duplicates("order_id").reset_index(drop=True)
    frame["given_name"] = [g for g, _ in people]
    frame["family_name"] = [f for _, f in people]
    mapped = map_frame(frame, CFG)
    assert mapped.payloads.num_rows + len(mapped.quarantine) == len(frame)
    for text in mapped.payloads["payload_json"].to_pylist():
        payload = json.loads(text)
        assert payload_errors(payload) == []
        assert payload["nam"].get("fnt") or payload["nam"].get("gnt")
    for detail in mapped.quarantine["detail"]:
        assert detail == "no name with a transliterable character"
